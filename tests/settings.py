"""The project's settings, as production reads them, with the few changes tests need."""

import os
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("DJANGO_ENV_FILE", "")  # a developer's .env (DEBUG on, say) must not change the tests
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")
# Nothing listens here: a test reaches Temporal only through a server fixture (tests/conftest.py), never a
# developer's `make run` server on the default address.
os.environ.setdefault("TEMPORAL_ADDRESS", "127.0.0.1:9")
# Tests start many sessions as one user; the throttling test sets its own rates.
os.environ.setdefault("CHAT_THROTTLE_SESSION_START", "100000/min")
os.environ.setdefault("CHAT_THROTTLE_MESSAGE_POST", "100000/min")
# The demo model answers every message the tests post; at a person's pace it would slow every test that posts one.
# The tests of streaming drive a model server at a pace of their own. (Worker processes inherit this.)
os.environ.setdefault("CHAT_DEMO_WORD_DELAY", "0.001")


def _event_log_of_this_process(url: str, worker: str) -> str:
    """The Redis event log's database for one pytest-xdist process: gw0 the one named, gw1 the one below, and so on.

    The tests reuse session ids and empty the log after each test (tests/conftest.py), so two processes sharing one
    Redis database would read, and delete, each other's events. Each process has its own test database
    (pytest-django's suffix) and its own Temporal servers (session fixtures) already.
    """
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0) - int(worker.removeprefix("gw"))
    if parts.scheme not in ("redis", "rediss") or "db=" in parts.query or db < 0:
        raise ValueError(
            f"CHAT_EVENT_LOG={url!r}: with pytest -n N the tests take the Redis database in the URL's path and the "
            "N-1 below it; name one as redis://host:port/15"
        )
    return urlunsplit(parts._replace(path=f"/{db}"))


# Worker and web processes the tests start inherit the environment, so they write where this process reads. Kept
# beside it, the URL as given makes this the same in a process that reads these settings again.
if os.environ.get("CHAT_EVENT_LOG", "database") != "database" and "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("TESTS_CHAT_EVENT_LOG", os.environ["CHAT_EVENT_LOG"])
    os.environ["CHAT_EVENT_LOG"] = _event_log_of_this_process(
        os.environ["TESTS_CHAT_EVENT_LOG"], os.environ["PYTEST_XDIST_WORKER"]
    )

from chatproject.settings import *  # noqa: E402, F403
from chatproject.settings import DATABASES, VAR_DIR  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not SQLite's in-memory default: the worker subprocesses in the tests must see the same rows.
    # One per pytest process, so two suites run at once don't recreate each other's database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins; tests only

# In this process a worker's activity closes its connection when done: the tests start a worker here per test, whose
# threads end with it, and a connection kept on an ended thread stays open until the garbage collector happens to
# find it (on PostgreSQL, dozens by the middle of a run: more than max_connections leaves two test processes). The
# worker and web processes the tests start keep theirs for DATABASE_CONN_MAX_AGE, as production does
# (tests/test_faults.py drops them under a running worker).
DATABASES["default"]["CONN_MAX_AGE"] = 0
