"""The project's settings, as production reads them, with the few changes tests need."""

import os

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

from chatproject.settings import *  # noqa: F403
from chatproject.settings import DATABASES, VAR_DIR

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not SQLite's in-memory default: the worker subprocesses in the tests must see the same rows.
    # One per pytest process, so two suites run at once don't recreate each other's database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins; tests only
