"""The session workflow's activities: thin shells over the worker-side services in chat.services.

The database ones are sync (the ORM is): the worker runs them on threads, with Django's connection hygiene around
each attempt (temporal_integration.worker). The turn is async: it streams. The workflow calls them by name, so this
module may import Django freely.
"""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from pydantic_ai.exceptions import ModelRateLimitError, ModelRequestRejectedError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from chat import assistant, services
from chat.events import Event, get_event_log
from chat.exceptions import UnknownUser
from chat.types import ChatMessageData, MessageStatus, SessionEnd, Turn, TurnResult
from temporal_integration.worker import in_thread

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


# Appends to the event log are batched: a client sees the reply in steps of about this long.
FLUSH_SECONDS = 0.05
# How often the turn heartbeats (the SDK sends at most one per max_heartbeat_throttle_interval). A stop reaches the
# activity with a heartbeat's answer.
BEAT_SECONDS = 0.1


class ReplyStream:
    """Carries a reply's text to the session's event log as it is written, and keeps the activity's heartbeat.

    One task appends, so deltas land in the order they were written; `close()` lets its last append finish and
    appends what is left before anything else (the stored reply's event) goes to the log.
    """

    def __init__(self, turn: Turn, attempt: int) -> None:
        self.turn = turn
        self.attempt = attempt
        self.text = ""
        self._pending = ""
        self._log = get_event_log()
        self._closing = asyncio.Event()
        # Set by the reply's first words (they go out at once: the time to the first token is what a reader feels)
        # and by close(); later words wait for the next flush.
        self._nudge = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._beat: asyncio.Task | None = None

    async def start(self) -> None:
        # Its own task: a heartbeat must not wait for an append. With 100 turns at once the appends queued for
        # seconds, heartbeats waited behind them, and the server timed out turns that were alive (`make bench`).
        self._beat = asyncio.create_task(self._keep_beating())
        if self.attempt > 1:  # clients drop this turn's text so far: the reply is written again
            try:
                await self._append("reset")
            except BaseException:
                await self.close()
                raise
        self._task = asyncio.create_task(self._keep_flushing())

    def write(self, piece: str) -> None:
        if not self.text:
            self._nudge.set()
        self.text += piece
        self._pending += piece

    async def close(self) -> None:
        self._closing.set()
        self._nudge.set()
        if self._task is not None:
            await self._task
        if self._beat is not None:
            await self._beat

    async def _keep_beating(self) -> None:
        while not self._closing.is_set():  # also while the model is still thinking
            activity.heartbeat(len(self.text))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), BEAT_SECONDS)

    async def _keep_flushing(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), FLUSH_SECONDS)
            self._nudge.clear()
            await self._flush()
        await self._flush()  # what was written while the last append was on its way

    async def _flush(self) -> None:
        if self._pending:
            text, self._pending = self._pending, ""
            await self._append("delta", text=text)

    async def _append(self, type_: str, **data: str) -> None:
        event = Event(self.turn.session_id, type_, {"turn": self.turn.reply_seq, "attempt": self.attempt, **data})
        await in_thread(self._log.append, self.turn.session_id, [event])


@activity.defn
async def run_turn(turn: Turn) -> TurnResult:
    """The assistant's reply to one user message, streamed to the event log as it is written, then stored.

    A retried attempt starts the reply again after a `reset` event. Cancelled by the workflow (the user pressed
    Stop), it stores what was written, marked stopped.
    """
    info = activity.info()
    logger.info("run_turn session_id=%s reply_seq=%d attempt=%d", turn.session_id, turn.reply_seq, info.attempt)
    stored = await in_thread(services.message_get, session_id=turn.session_id, seq=turn.reply_seq)
    if stored is not None:  # an earlier attempt stored the reply, then died before reporting it
        return _result(stored)
    conversation = await in_thread(services.turn_conversation, session_id=turn.session_id, upto_seq=turn.user_seq)
    stream = ReplyStream(turn, info.attempt)
    await stream.start()
    try:
        reply = await assistant.stream_reply(conversation, stream.write, settings.CHAT_ASSISTANT_CONTEXT_CHARS)
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
        role="assistant",
        content=text,
        created_at=datetime.now(UTC),
        status=status,
        model=reply.model if reply else settings.CHAT_ASSISTANT_MODEL,
        tokens_in=reply.tokens_in if reply else 0,
        tokens_out=reply.tokens_out if reply else 0,
    )
    await in_thread(services.message_record, session_id=turn.session_id, message=message)
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


# Built while the worker loads its activities, not in the first turn: importing a provider's SDK (openai's) took
# about 1.5 s of the first reply's time to the first token (make bench), and a model setting that can't be built
# stops the worker at start, naming the setting, instead of failing every turn.
assistant.get_agent()
