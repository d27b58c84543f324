"""The session workflow's activities: thin shells over chat.projections, the worker's writes.

The database ones are sync (the ORM is): the worker runs them on threads, with Django's connection hygiene around
each attempt (temporal_integration.connections). The turn is async: it streams. The workflow calls them by name, so
this module may import Django freely.
"""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from pydantic_ai.exceptions import ModelRateLimitError, ModelRequestRejectedError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from chat import assistant, projections
from chat.conf import chat_settings
from chat.events.publisher import ReplyStream
from chat.exceptions import UnknownUser
from chat.types import (
    LOG_SESSION_END,
    LOG_SESSION_START,
    PERSIST_MESSAGE,
    RUN_TURN,
    STORE_MESSAGE,
    TRIM_EVENT_LOG,
    ChatMessageData,
    EventRetention,
    MessageRecord,
    MessageStatus,
    Role,
    SessionEnd,
    Turn,
    TurnResult,
)
from temporal_integration.connections import in_thread

logger = logging.getLogger(__name__)


@activity.defn(name=LOG_SESSION_START)
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
        projections.session_record_start(
            user_id=user_id,
            session_id=session_id,
            workflow_id=info.workflow_id or "",
            run_id=info.workflow_run_id or "",
            started_at=started_at or datetime.now(UTC),
        )
    except UnknownUser as exc:
        raise ApplicationError(str(exc), type="UnknownUser", non_retryable=True) from exc
    return f"session {session_id} started for user {user_id}"


@activity.defn(name=STORE_MESSAGE)
def store_message(record: MessageRecord) -> None:
    logger.info(
        "store_message session_id=%s seq=%d attempt=%d", record.session_id, record.message.seq, activity.info().attempt
    )
    projections.message_record(session_id=record.session_id, message=record.message)


@activity.defn(name=PERSIST_MESSAGE)
def persist_message(session_id: str, message: ChatMessageData) -> None:
    """store_message in its earlier shape, for workflows that scheduled it before the store-message patch."""
    store_message(MessageRecord(session_id, message))


@activity.defn(name=LOG_SESSION_END)
def log_session_end(end: SessionEnd) -> None:
    logger.info("log_session_end session_id=%s status=%s ended_by=%s", end.session_id, end.status, end.ended_by)
    projections.session_record_end(end=end)


@activity.defn(name=TRIM_EVENT_LOG)
def trim_event_log(retention: EventRetention) -> int:
    removed = projections.events_trim(retention_seconds=retention.retention_seconds)
    logger.info("trim_event_log retention=%gs removed=%d", retention.retention_seconds, removed)
    return removed


@activity.defn(name=RUN_TURN)
async def run_turn(turn: Turn) -> TurnResult:
    """The assistant's reply to one user message, streamed to the event log as it is written, then stored.

    A retried attempt starts the reply again after a `reset` event. Cancelled by the workflow (the user pressed
    Stop), it stores what was written, marked stopped.
    """
    info = activity.info()
    logger.info("run_turn session_id=%s reply_seq=%d attempt=%d", turn.session_id, turn.reply_seq, info.attempt)
    stored = await in_thread(projections.message_get, session_id=turn.session_id, seq=turn.reply_seq)
    if stored is not None:  # an earlier attempt stored the reply, then died before reporting it
        return _result(stored)
    conversation = await in_thread(projections.turn_conversation, session_id=turn.session_id, upto_seq=turn.user_seq)
    stream = ReplyStream(turn, info.attempt)
    await stream.start()
    try:
        reply = await assistant.stream_reply(conversation, stream.write, chat_settings.CHAT_ASSISTANT_CONTEXT_CHARS)
    except asyncio.CancelledError:
        details = activity.cancellation_details()
        if details and details.cancel_requested and not details.worker_shutdown:
            await stream.close()
            await _store(turn, stream.text, MessageStatus.STOPPED)
        raise
    except ModelRateLimitError as exc:
        raise ApplicationError(
            f"the model is rate-limited: {exc}", type="ModelRateLimited", next_retry_delay=_retry_after(exc)
        ) from exc
    except ModelRequestRejectedError as exc:  # bad credentials, unknown model, too long a context: retrying won't help
        raise ApplicationError(f"the model refused the request: {exc}", type="ModelRejected", non_retryable=True) from (
            exc
        )
    finally:
        await stream.close()
    message = await _store(turn, reply.text, MessageStatus.COMPLETE, reply)
    return _result(message)


def _retry_after(exc: ModelRateLimitError) -> timedelta | None:
    headers = getattr(exc, "headers", None) or {}
    try:
        return timedelta(seconds=float(headers["retry-after"]))
    except (KeyError, ValueError):
        return None


async def _store(turn: Turn, text: str, status: MessageStatus, reply: assistant.Reply | None = None) -> ChatMessageData:
    message = ChatMessageData(
        seq=turn.reply_seq,
        role=Role.ASSISTANT,
        content=text,
        created_at=datetime.now(UTC),
        status=status,
        model=reply.model if reply else chat_settings.CHAT_ASSISTANT_MODEL,
        tokens_in=reply.tokens_in if reply else 0,
        tokens_out=reply.tokens_out if reply else 0,
    )
    await in_thread(projections.message_record, session_id=turn.session_id, message=message)
    return message


def _result(message: ChatMessageData) -> TurnResult:
    return TurnResult(
        reply_seq=message.seq,
        status=message.status,
        model=message.model,
        tokens_in=message.tokens_in,
        tokens_out=message.tokens_out,
        completed_at=message.created_at,
    )


# Built as the worker loads its activities, not in the first turn: a model setting that can't be built stops the
# worker at start, naming the setting, and the first reply doesn't wait for the provider's SDK to import.
assistant.get_agent()
