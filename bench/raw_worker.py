"""The baseline's worker and its database work, without Django: `python -m bench.raw_worker OPTIONS_JSON` (bench.procs).

Its activities issue the statements the project's activities make the ORM issue (a user check, then an upsert of the
session row; a transaction that reads the session, inserts the message if absent and moves the counters forward),
with plain sqlite3 or psycopg on the project's own database, keeping one connection per thread as Django does with
the project's CONN_MAX_AGE.
"""

import asyncio
import json
import signal
import sqlite3
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from bench.project import ChatMessageData
from bench.raw_workflows import RawSessionWorkflow

sqlite3.register_adapter(datetime, datetime.isoformat)  # Python 3.12 deprecates sqlite3's own


class RawConnection:
    """A sqlite3 or psycopg connection in autocommit mode, spoken to in psycopg's placeholders."""

    def __init__(self, url: str, busy_timeout: float) -> None:
        self.sqlite = url.startswith("sqlite:")
        if self.sqlite:
            self.conn = sqlite3.connect(unquote(urlsplit(url).path), timeout=busy_timeout, isolation_level=None)
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: tuple = ()) -> Any:
        return self.conn.execute(sql.replace("%s", "?") if self.sqlite else sql, params)

    def one(self, sql: str, params: tuple = ()) -> Any:
        return self.execute(sql, params).fetchone()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        self.execute(
            "BEGIN IMMEDIATE" if self.sqlite else "BEGIN"
        )  # IMMEDIATE, as the project's settings make Django do
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class RawDB:
    """One database URL; `busy_timeout` is the project's SQLite timeout, read from its settings by bench.procs."""

    def __init__(self, url: str, busy_timeout: float) -> None:
        self.url, self.busy_timeout, self.local = url, busy_timeout, threading.local()

    def connect(self) -> RawConnection:
        """A new connection, as Django opens one per request and per activity with CONN_MAX_AGE=0."""
        return RawConnection(self.url, self.busy_timeout)

    def kept(self) -> RawConnection:
        """This thread's connection, kept as the project's DATABASE_CONN_MAX_AGE keeps Django's."""
        if not hasattr(self.local, "conn"):
            self.local.conn = self.connect()
        return self.local.conn

    def query(self, sql: str) -> Any:
        with closing(self.connect()) as conn:
            return conn.one(sql)

    def create_tables(self) -> None:
        """The baseline's own tables, shaped like chat_chatsession and chat_chatmessage."""
        with closing(self.connect()) as conn:
            pk = "INTEGER PRIMARY KEY AUTOINCREMENT" if conn.sqlite else "BIGSERIAL PRIMARY KEY"
            ts = "TEXT" if conn.sqlite else "TIMESTAMPTZ"
            conn.execute(f"""CREATE TABLE bench_raw_session (
                id {pk}, session_id VARCHAR(64) NOT NULL UNIQUE, user_id BIGINT NOT NULL,
                workflow_id VARCHAR(255) NOT NULL, run_id VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL,
                message_count INTEGER NOT NULL DEFAULT 0, started_at {ts} NOT NULL, last_activity_at {ts} NULL,
                updated_at {ts} NOT NULL)""")
            conn.execute(f"""CREATE TABLE bench_raw_message (
                id {pk}, session_id BIGINT NOT NULL REFERENCES bench_raw_session (id), seq INTEGER NOT NULL,
                role VARCHAR(16) NOT NULL, content TEXT NOT NULL, created_at {ts} NOT NULL,
                UNIQUE (session_id, seq))""")


class RawActivities:
    """Sync activities, run on the worker's thread pool as the project's are."""

    def __init__(self, db: RawDB) -> None:
        self.db = db

    @activity.defn
    def raw_log_session_start(self, user_id: str, session_id: str) -> str:
        """As log_session_start: the user must exist; the session row is created, or updated on a retry."""
        conn, info, now = self.db.kept(), activity.info(), datetime.now(UTC)
        if conn.one("SELECT 1 FROM auth_user WHERE id = %s LIMIT 1", (int(user_id),)) is None:
            raise ApplicationError(f"user {user_id} does not exist", type="UnknownUser", non_retryable=True)
        with conn.atomic():
            lock = "" if conn.sqlite else " FOR UPDATE"
            if row := conn.one(f"SELECT id FROM bench_raw_session WHERE session_id = %s{lock}", (session_id,)):
                conn.execute(
                    "UPDATE bench_raw_session SET user_id = %s, workflow_id = %s, run_id = %s, updated_at = %s"
                    " WHERE id = %s",
                    (int(user_id), info.workflow_id, info.workflow_run_id, now, row[0]),
                )
            else:
                conn.execute(
                    "INSERT INTO bench_raw_session (session_id, user_id, workflow_id, run_id, status, message_count,"
                    " started_at, updated_at) VALUES (%s, %s, %s, %s, 'active', 0, %s, %s)",
                    (session_id, int(user_id), info.workflow_id, info.workflow_run_id, now, now),
                )
        return f"session {session_id} started for user {user_id}"

    @activity.defn
    def raw_persist_message(self, session_id: str, message: ChatMessageData) -> None:
        """As persist_message: one row per (session, seq), and counters that only move forward."""
        conn = self.db.kept()
        with conn.atomic():
            pk = conn.one("SELECT id FROM bench_raw_session WHERE session_id = %s", (session_id,))[0]
            if not conn.one("SELECT id FROM bench_raw_message WHERE session_id = %s AND seq = %s", (pk, message.seq)):
                conn.execute(
                    "INSERT INTO bench_raw_message (session_id, seq, role, content, created_at)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (pk, message.seq, message.role, message.content, message.created_at),
                )
            conn.execute(
                "UPDATE bench_raw_session SET message_count = %s, last_activity_at = %s, updated_at = %s"
                " WHERE id = %s AND message_count < %s",
                (message.seq, message.created_at, datetime.now(UTC), pk, message.seq),
            )


async def main(address: str, database_url: str, busy_timeout: float, task_queue: str, slots: dict[str, int]) -> None:
    activities = RawActivities(RawDB(database_url, busy_timeout))
    # As many activity threads as the project's worker has (its extra slots are for its async turns).
    threads = slots.pop("activity_threads")
    warnings.filterwarnings("ignore", "Worker max_concurrent_activities is", UserWarning)
    with ThreadPoolExecutor(threads, thread_name_prefix="activity") as executor:
        async with Worker(
            await Client.connect(address),
            task_queue=task_queue,
            workflows=[RawSessionWorkflow],
            activities=[activities.raw_log_session_start, activities.raw_persist_message],
            activity_executor=executor,
            **slots,
        ):
            print(f"raw worker polling task queue {task_queue!r}", flush=True)
            await asyncio.Future()  # until SIGTERM


if __name__ == "__main__":
    # SIGTERM (bench.procs) and SIGINT end the process at once: a Python exit after the SDK's client can abort in
    # PyGILState_Release (temporalio/sdk-python#300), and the bench has no use for a graceful shutdown.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    asyncio.run(main(*json.loads(sys.argv[1])))
