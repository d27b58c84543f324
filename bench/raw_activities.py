"""The baseline's activities: the project's database work in plain SQL, sync, on a thread pool like the project's."""

from dataclasses import dataclass
from datetime import datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from bench.rawdb import RawDB, now

DB: RawDB | None = None  # set by bench.raw_worker before the worker starts


@dataclass(frozen=True)
class RawMessage:
    seq: int
    role: str
    content: str
    created_at: datetime


@activity.defn
def raw_log_session_start(user_id: str, session_id: str) -> str:
    """As log_session_start: the user must exist; the session row is created, or updated on a retry."""
    info = activity.info()
    with DB.connection() as conn:
        if conn.one("SELECT 1 FROM auth_user WHERE id = %s LIMIT 1", (int(user_id),)) is None:
            raise ApplicationError(f"user {user_id} does not exist", type="UnknownUser", non_retryable=True)
        lock = "" if conn.engine == "sqlite" else " FOR UPDATE"
        with conn.atomic():
            row = conn.one(f"SELECT id FROM bench_raw_session WHERE session_id = %s{lock}", (session_id,))
            stamp = conn.ts(now())
            if row:
                conn.execute(
                    "UPDATE bench_raw_session SET user_id = %s, workflow_id = %s, run_id = %s, updated_at = %s"
                    " WHERE id = %s",
                    (int(user_id), info.workflow_id, info.workflow_run_id, stamp, row[0]),
                )
            else:
                conn.execute(
                    "INSERT INTO bench_raw_session (session_id, user_id, workflow_id, run_id, status, message_count,"
                    " started_at, updated_at) VALUES (%s, %s, %s, %s, 'active', 0, %s, %s)",
                    (session_id, int(user_id), info.workflow_id, info.workflow_run_id, stamp, stamp),
                )
    return f"session {session_id} started for user {user_id}"


@activity.defn
def raw_persist_message(session_id: str, message: RawMessage) -> None:
    """As persist_message: one row per (session, seq), and counters that only move forward."""
    with DB.connection() as conn, conn.atomic():
        session_pk = conn.one("SELECT id FROM bench_raw_session WHERE session_id = %s", (session_id,))[0]
        exists = conn.one(
            "SELECT id FROM bench_raw_message WHERE session_id = %s AND seq = %s", (session_pk, message.seq)
        )
        created_at = conn.ts(message.created_at)
        if not exists:
            conn.execute(
                "INSERT INTO bench_raw_message (session_id, seq, role, content, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (session_pk, message.seq, message.role, message.content, created_at),
            )
        conn.execute(
            "UPDATE bench_raw_session SET message_count = %s, last_activity_at = %s, updated_at = %s"
            " WHERE id = %s AND message_count < %s",
            (message.seq, created_at, conn.ts(now()), session_pk, message.seq),
        )
