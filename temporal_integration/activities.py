"""Activities: the only code here that touches the database.

Importing this module must not import Django: the workflow module imports it (passed
through the sandbox), and workflow code stays free of Django. The ORM is imported inside
each activity, which only ever runs in a worker where Django is set up.

Every activity is idempotent: Temporal runs an activity at least once, and a retried attempt
must leave the database as one attempt would.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_integration.types import ChatMessageData, SessionEnd

logger = logging.getLogger(__name__)


@contextmanager
def _orm() -> Iterator[None]:
    from django.db import close_old_connections

    # Worker threads live outside Django's request cycle: nothing else recycles their connections,
    # and a connection broken by a database restart would otherwise fail every later attempt.
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


@activity.defn
def log_session_start(user_id: str, session_id: str, started_at: datetime | None = None) -> str:
    """Writes the session's record; a retried attempt finds the row and never adds a second one.

    started_at is the workflow's start, so records sort as the sessions began, whichever activity ran first.
    """
    from django.contrib.auth import get_user_model

    from chat.models import ChatSession

    info = activity.info()
    logger.info(
        "log_session_start user_id=%s session_id=%s workflow_id=%s attempt=%d",
        user_id, session_id, info.workflow_id, info.attempt,
    )  # fmt: skip
    with _orm():
        if not get_user_model().objects.filter(pk=user_id).exists():
            raise ApplicationError(f"user {user_id} does not exist", type="UnknownUser", non_retryable=True)
        ChatSession.objects.update_or_create(
            session_id=session_id,
            defaults={"user_id": user_id, "workflow_id": info.workflow_id, "run_id": info.workflow_run_id},
            create_defaults={
                "user_id": user_id, "workflow_id": info.workflow_id, "run_id": info.workflow_run_id,
                "started_at": started_at or datetime.now(UTC),
            },
        )  # fmt: skip
    return f"session {session_id} started for user {user_id}"


@activity.defn
def persist_message(session_id: str, message: ChatMessageData) -> None:
    """Stores one message under its sequence number, and moves the session's counters forward."""
    from django.db import transaction

    from chat.models import ChatMessage, ChatSession

    logger.info("persist_message session_id=%s seq=%d attempt=%d", session_id, message.seq, activity.info().attempt)
    with _orm(), transaction.atomic():
        session = ChatSession.objects.get(session_id=session_id)
        ChatMessage.objects.get_or_create(
            session=session,
            seq=message.seq,
            defaults={"role": message.role, "content": message.content, "created_at": message.created_at},
        )
        # Messages may be stored out of order; the counters only ever move forward.
        ChatSession.objects.filter(pk=session.pk, message_count__lt=message.seq).update(
            message_count=message.seq, last_activity_at=message.created_at
        )


@activity.defn
def log_session_end(end: SessionEnd) -> None:
    """Records how and when the session ended."""
    from chat.models import ChatSession

    logger.info("log_session_end session_id=%s status=%s", end.session_id, end.status)
    with _orm():
        ChatSession.objects.filter(session_id=end.session_id).update(status=end.status, ended_at=end.ended_at)
