"""The session workflow's activities: thin shells over chat.projections, the worker's writes.

The database ones are sync (the ORM is): the worker runs them on threads, with Django's connection hygiene around
each attempt (temporal_integration.connections). The turn is async: it streams. The workflow calls them by name, so
this module may import Django freely.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from pydantic_ai.exceptions import ModelRateLimitError, ModelRequestRejectedError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from chat import assistant, projections
from chat.conf import chat_settings
from chat.events.publisher import BEAT_SECONDS, ReplyStream
from chat.exceptions import UnknownUser
from chat.tools import ToolContext, get_tools, tool_definitions
from chat.types import (
    FINISH_TURN,
    LOG_SESSION_END,
    LOG_SESSION_START,
    MARK_REPLACED,
    PERSIST_MESSAGE,
    RUN_TOOL,
    RUN_TURN,
    STORE_MESSAGE,
    TAKE_MODEL_STEP,
    TRIM_EVENT_LOG,
    ChatMessageData,
    Decision,
    EventRetention,
    MessageRecord,
    MessageStatus,
    ModelStep,
    Role,
    SessionEnd,
    StepResult,
    ToolCallStatus,
    ToolOutcome,
    ToolRun,
    Turn,
    TurnEnd,
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


@activity.defn(name=MARK_REPLACED)
def mark_replaced(record: MessageRecord) -> None:
    """Marks the reply a regenerate replaces (`record.message.seq`)."""
    logger.info("mark_replaced session_id=%s seq=%d", record.session_id, record.message.seq)
    projections.message_replace(session_id=record.session_id, seq=record.message.seq)


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
    """A whole reply in one activity, with no tools: what workflows recorded before the assistant-tools patch
    schedule. A retried attempt starts the reply again after a `reset` event; cancelled (the user pressed Stop), it
    stores what was written, marked stopped."""
    step = ModelStep(turn.session_id, turn.user_seq, turn.reply_seq, step=0, calls_left=0)
    result = await _model_step(step, tools=False)
    assert result.reply is not None
    return result.reply


@activity.defn(name=TAKE_MODEL_STEP)
async def take_model_step(step: ModelStep) -> StepResult:
    """One model request of a reply's turn, streamed to the event log as it is written. It returns the tool calls
    the model asked for (stored in the database; the workflow gets their ids and names), or, when it asked for
    none, stores the reply (every step's text) and returns it. A retried attempt writes its step again after a
    `reset` event and the earlier steps' text; cancelled (Stop), it stores what was written, marked stopped."""
    return await _model_step(step, tools=True)


async def _model_step(step: ModelStep, *, tools: bool) -> StepResult:
    info = activity.info()
    logger.info(
        "model step session_id=%s reply_seq=%d step=%d attempt=%d",
        *(step.session_id, step.reply_seq, step.step, info.attempt),
    )
    async with _heartbeats():  # from the start: a busy database must not make a live attempt look dead
        context = await in_thread(
            projections.step_context,
            session_id=step.session_id,
            user_seq=step.user_seq,
            reply_seq=step.reply_seq,
            step=step.step,
        )
    if context.reply is not None:  # an earlier attempt stored the reply, then died before reporting it
        return StepResult(reply=_result(context.reply))
    if context.calls:  # an earlier attempt stored its calls, then died before reporting them
        return StepResult(calls=context.calls)
    conversation, written = context.conversation, context.written
    definitions = tool_definitions() if tools and step.calls_left > 0 else []
    note = LIMIT_NOTE.format(limit=chat_settings.CHAT_ASSISTANT_MAX_TOOL_CALLS) if tools and not step.calls_left else ""
    stream = ReplyStream(step, info.attempt, written)
    # A step's text starts a paragraph of its own after the earlier steps' (on the stream and in the stored reply).
    lead = STEP_SEPARATOR if written.strip() else ""

    def write(piece: str) -> None:
        stream.write(piece if stream.text or not lead else lead + piece)

    await stream.start()
    try:
        reply = await assistant.stream_step(
            conversation,
            write,
            budget_chars=chat_settings.CHAT_ASSISTANT_CONTEXT_CHARS,
            tools=definitions,
            note=note,
        )
    except asyncio.CancelledError:
        details = activity.cancellation_details()
        if details and details.cancel_requested and not details.worker_shutdown:
            await stream.close()
            await _store(step, written + stream.text, MessageStatus.STOPPED)
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
    tokens_in, tokens_out = step.tokens_in + reply.tokens_in, step.tokens_out + reply.tokens_out
    if reply.calls and definitions:
        calls = await in_thread(
            projections.tool_calls_record,
            session_id=step.session_id,
            reply_seq=step.reply_seq,
            step=step.step,
            text=stream.text,
            calls=reply.calls,
        )
        return StepResult(calls=calls, tokens_in=reply.tokens_in, tokens_out=reply.tokens_out)
    message = await _store(step, written + stream.text, MessageStatus.COMPLETE, reply.model, tokens_in, tokens_out)
    return StepResult(reply=_result(message))


STEP_SEPARATOR = "\n\n"
# What the model is told when its reply has made as many tool calls as it may.
LIMIT_NOTE = "This reply has made its limit of {limit} tool calls: answer now, with what you have, and call no tool."


@activity.defn(name=RUN_TOOL)
async def run_tool(run: ToolRun) -> ToolOutcome:
    """Runs one tool call, or settles one that won't run (denied, expired, stopped, over the limit), recording its
    result for the model. The call id is the idempotency key: a call already finished is not run again, and a tool
    that isn't safe to retry runs at most once (chat.projections.tool_call_start)."""
    logger.info(
        "run_tool session_id=%s call_id=%s name=%s decision=%s attempt=%d",
        *(run.session_id, run.call_id, run.name, run.decision, activity.info().attempt),
    )
    if run.decision not in (None, Decision.APPROVED):
        status, result = _settled(run)
        row = await in_thread(
            projections.tool_call_finish,
            session_id=run.session_id,
            call_id=run.call_id,
            status=status,
            result=result,
            decided_by=run.decided_by,
            reason=run.reason,
        )
        return ToolOutcome(run.call_id, ToolCallStatus(row.status))
    tool = get_tools().get(run.name)
    row, proceed = await in_thread(
        projections.tool_call_start,
        session_id=run.session_id,
        call_id=run.call_id,
        retry_safe=tool.retry_safe if tool else True,
        approved_by=run.decided_by,
    )
    if not proceed:
        return ToolOutcome(run.call_id, ToolCallStatus(row.status))
    ctx = ToolContext(row.session.user, run.session_id, row.reply_seq, run.call_id)
    async with _heartbeats():
        try:
            if tool is None:  # it was in the settings when the model asked for it
                raise LookupError(f"the tool {run.name!r} is no longer installed")
            result, status = await in_thread(tool.run, ctx, row.arguments), ToolCallStatus.DONE
        except Exception as exc:  # the model is told, and the reply goes on
            logger.warning("tool %s failed session_id=%s call_id=%s: %r", run.name, run.session_id, run.call_id, exc)
            result, status = f"The tool failed: {type(exc).__name__}: {exc}", ToolCallStatus.FAILED
    row = await in_thread(
        projections.tool_call_finish, session_id=run.session_id, call_id=run.call_id, status=status, result=result
    )
    return ToolOutcome(run.call_id, ToolCallStatus(row.status))


def _settled(run: ToolRun) -> tuple[ToolCallStatus, str]:
    if run.decision == Decision.DENIED:
        return ToolCallStatus.DENIED, f"The user declined: {run.reason}" if run.reason else "The user declined."
    if run.decision == Decision.EXPIRED:
        waited = _duration(chat_settings.CHAT_TOOL_APPROVAL_TIMEOUT)
        return ToolCallStatus.EXPIRED, f"Not run: nobody approved or denied it within {waited}."
    if run.decision == Decision.OVER_LIMIT:
        limit = chat_settings.CHAT_ASSISTANT_MAX_TOOL_CALLS
        return ToolCallStatus.FAILED, f"Not run: this reply reached its limit of {limit} tool calls."
    return ToolCallStatus.FAILED, "Not run: the reply was stopped first."


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


@contextlib.asynccontextmanager
async def _heartbeats() -> AsyncIterator[None]:
    """Heartbeats while a tool runs, so a worker that dies mid-call is noticed within the heartbeat timeout."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(BEAT_SECONDS)

    beating = asyncio.create_task(beat())
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


@activity.defn(name=FINISH_TURN)
def finish_turn(end: TurnEnd) -> TurnResult:
    """Stores a reply whose turn ended before the model finished it (stopped, failed, or the session ended), with
    the text its steps wrote; a reply already stored (a model step stopped mid-stream stores its own) stays."""
    text = projections.turn_text(session_id=end.session_id, reply_seq=end.reply_seq)
    message = ChatMessageData(
        seq=end.reply_seq,
        role=Role.ASSISTANT,
        content=text,
        created_at=datetime.now(UTC),
        status=end.status,
        model=chat_settings.CHAT_ASSISTANT_MODEL,
        tokens_in=end.tokens_in,
        tokens_out=end.tokens_out,
    )
    stored = projections.message_record(session_id=end.session_id, message=message)
    return _result(projections.message_data(stored))


def _retry_after(exc: ModelRateLimitError) -> timedelta | None:
    headers = getattr(exc, "headers", None) or {}
    try:
        return timedelta(seconds=float(headers["retry-after"]))
    except (KeyError, ValueError):
        return None


async def _store(
    step: ModelStep, text: str, status: MessageStatus, model: str = "", tokens_in: int = 0, tokens_out: int = 0
) -> ChatMessageData:
    message = ChatMessageData(
        seq=step.reply_seq,
        role=Role.ASSISTANT,
        content=text,
        created_at=datetime.now(UTC),
        status=status,
        model=model or chat_settings.CHAT_ASSISTANT_MODEL,
        tokens_in=tokens_in or step.tokens_in,
        tokens_out=tokens_out or step.tokens_out,
    )
    stored = await in_thread(projections.message_record, session_id=step.session_id, message=message)
    return projections.message_data(stored)


def _result(message: ChatMessageData) -> TurnResult:
    return TurnResult(
        reply_seq=message.seq,
        status=message.status,
        model=message.model,
        tokens_in=message.tokens_in,
        tokens_out=message.tokens_out,
        completed_at=message.created_at,
    )


# Built as the worker loads its activities, not in the first turn: a model or tool setting that can't be built stops
# the worker at start, naming the setting, and the first reply doesn't wait for the provider's SDK to import.
assistant.get_model()
tool_definitions()
