"""The baseline's database work, without Django: plain sqlite3 or psycopg on the project's own database.

The raw activities issue the same statements the project's activities make the ORM issue (a user check, then an
upsert of the session row; a transaction that reads the session, inserts the message if absent and moves the
counters forward), and, like Django with the project's CONN_MAX_AGE, keep one connection per thread.
"""

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

SQLITE_BUSY_TIMEOUT = 20.0  # the project's SQLITE_BUSY_TIMEOUT default


def sqlite_path(url: str) -> str | None:
    """The file of a sqlite:/// URL, None for any other database."""
    if not url.startswith("sqlite:"):
        return None
    return unquote(urlsplit(url).path)


class RawDB:
    """One database URL. With keep, each thread keeps its connection (as the project's DATABASE_CONN_MAX_AGE
    does) and drops it after an error; without, each `connection()` opens a new one (as CONN_MAX_AGE=0)."""

    def __init__(self, url: str, keep: bool = False) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.engine = "sqlite" if self.path else "postgresql"
        self.kept = threading.local() if keep else None

    def _connect(self) -> Any:
        if self.path:
            return sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    @contextmanager
    def connection(self) -> Iterator["RawConnection"]:
        conn = getattr(self.kept, "conn", None) or self._connect()
        try:
            yield RawConnection(conn, self.engine)
        except BaseException:
            conn.close()
            conn = None
            raise
        finally:
            if self.kept is None and conn is not None:
                conn.close()
            elif self.kept is not None:
                self.kept.conn = conn


class RawConnection:
    def __init__(self, conn: Any, engine: str) -> None:
        self.conn = conn
        self.engine = engine

    def execute(self, sql: str, params: tuple = ()) -> Any:
        if self.engine == "sqlite":
            sql = sql.replace("%s", "?")
        return self.conn.execute(sql, params)

    def one(self, sql: str, params: tuple = ()) -> tuple | None:
        return self.execute(sql, params).fetchone()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        # SQLite: IMMEDIATE takes the write lock up front, as the project's settings make Django do.
        self.execute("BEGIN IMMEDIATE" if self.engine == "sqlite" else "BEGIN")
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def ts(self, value: datetime) -> Any:
        return value.isoformat() if self.engine == "sqlite" else value


def now() -> datetime:
    return datetime.now(UTC)


def create_tables(db: RawDB) -> None:
    """The baseline's own tables, shaped like chat_chatsession and chat_chatmessage."""
    pk = "INTEGER PRIMARY KEY AUTOINCREMENT" if db.engine == "sqlite" else "BIGSERIAL PRIMARY KEY"
    ts = "TEXT" if db.engine == "sqlite" else "TIMESTAMPTZ"
    with db.connection() as conn:
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS bench_raw_session (
                id {pk}, session_id VARCHAR(64) NOT NULL UNIQUE, user_id BIGINT NOT NULL,
                workflow_id VARCHAR(255) NOT NULL, run_id VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL,
                message_count INTEGER NOT NULL DEFAULT 0, started_at {ts} NOT NULL, last_activity_at {ts} NULL,
                updated_at {ts} NOT NULL)"""
        )
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS bench_raw_message (
                id {pk}, session_id BIGINT NOT NULL REFERENCES bench_raw_session (id), seq INTEGER NOT NULL,
                role VARCHAR(16) NOT NULL, content TEXT NOT NULL, created_at {ts} NOT NULL,
                UNIQUE (session_id, seq))"""
        )


def count_rows(db: RawDB, table: str) -> int:
    with db.connection() as conn:
        return conn.one(f"SELECT COUNT(*) FROM {table}")[0]
