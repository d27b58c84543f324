"""The session workflow's activities: thin shells over the worker-side services in chat.services.

They are sync (the ORM is): the worker runs them on threads, with Django's connection hygiene around each attempt
(temporal_integration.worker). The workflow calls them by name, so this module may import Django freely.
"""

import logging
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from chat import services
from chat.exceptions import UnknownUser
from chat.types import ChatMessageData, SessionEnd

logger = logging.getLogger(__name__)


@activity.defn
def log_session_start(user_id: str, session_id: str, started_at: datetime | None = None) -> str:
    """Writes the session's record and confirms it.

    started_at is the workflow's start, so records sort as the sessions began, whichever activity ran first.
    """
    info = activity.info()
    logger.info(
        "log_session_start user_id=%s session_id=%s workflow_id=%s attempt=%d",
        *(user_id, session_id, info.workflow_id, info.attempt),
    )
    try:
        services.session_record_start(
            user_id=user_id,
            session_id=session_id,
            workflow_id=info.workflow_id or "",
            run_id=info.workflow_run_id or "",
            started_at=started_at or datetime.now(UTC),
        )
    except UnknownUser as exc:
        raise ApplicationError(str(exc), type="UnknownUser", non_retryable=True) from exc
    return f"session {session_id} started for user {user_id}"


@activity.defn
def persist_message(session_id: str, message: ChatMessageData) -> None:
    logger.info("persist_message session_id=%s seq=%d attempt=%d", session_id, message.seq, activity.info().attempt)
    services.message_record(session_id=session_id, message=message)


@activity.defn
def log_session_end(end: SessionEnd) -> None:
    logger.info("log_session_end session_id=%s status=%s ended_by=%s", end.session_id, end.status, end.ended_by)
    services.session_record_end(end=end)
