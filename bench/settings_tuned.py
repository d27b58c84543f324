"""The project's settings plus the database changes docs/benchmarks.md suggests, to measure them before adopting
them: `BENCH_DJANGO_SETTINGS=bench.settings_tuned make bench`. Not used by the project itself."""

from chatproject.settings import *  # noqa: F403
from chatproject.settings import DATABASES

# Keep each thread's connection for a minute instead of opening one per request and per activity; the health
# check replaces a connection broken by a database restart before it is used.
DATABASES["default"]["CONN_MAX_AGE"] = 60
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL: readers (every request's token and session lookups) no longer wait for the worker's commits, and a
    # commit is one append to the log instead of a rollback journal written, synced and deleted.
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
