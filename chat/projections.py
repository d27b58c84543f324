"""The worker's side of the chat app: the records that project each session's workflow into the database, and the
reads its activities need. Only chat.activities calls these.

Each write is idempotent: Temporal runs an activity at least once, and a retried attempt must leave the database as
one attempt would.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from chat.assistant import RequestedCall, StoredCall, StoredStep, StoredTurn
from chat.conf import chat_settings
from chat.events import Event, EventLog, get_event_log
from chat.exceptions import UnknownUser
from chat.models import ChatEvent, ChatMessage, ChatSession, ChatToolCall, title_from
from chat.serializers import MessageSerializer, SessionEndedSerializer, represent
from chat.tools import InvalidArguments, get_tools
from chat.types import ChatMessageData, MessageStatus, SessionEnd, ToolCallRef, ToolCallStatus, tool_call_id

# A tool_result event carries this much of the result; the whole is in the database (GET .../tool-calls/).
EVENT_RESULT_CHARS = 500


def session_record_start(
    *, user_id: str, session_id: str, workflow_id: str, run_id: str, started_at: datetime
) -> ChatSession:
    """Writes the session's record; a retried attempt finds the row and never adds a second one."""
    if not get_user_model().objects.filter(pk=user_id).exists():
        raise UnknownUser(user_id)
    session, _ = ChatSession.objects.update_or_create(
        session_id=session_id,
        defaults={"user_id": user_id, "workflow_id": workflow_id, "run_id": run_id},
        create_defaults={"user_id": user_id, "workflow_id": workflow_id, "run_id": run_id, "started_at": started_at},
    )
    return session


def message_record(*, session_id: str, message: ChatMessageData) -> ChatMessage:
    """Stores one message under its sequence number, moves the session's counters forward, and tells the session's
    stream. The first write of a seq wins: a retry, or a stopped reply recorded twice, changes nothing. With the
    database's event log it is all one commit (one wait for the disk, on the path between a post and its turn)."""
    log = get_event_log()
    with transaction.atomic():
        session = ChatSession.objects.get(session_id=session_id)
        stored, _ = ChatMessage.objects.get_or_create(
            session=session,
            seq=message.seq,
            defaults={
                **{"role": message.role, "content": message.content, "created_at": message.created_at},
                **{"status": message.status, "model": message.model},
                **{"tokens_in": message.tokens_in, "tokens_out": message.tokens_out},
            },
        )
        # Messages may be stored out of order; the counters only ever move forward.
        ChatSession.objects.filter(pk=session.pk, message_count__lt=message.seq).update(
            message_count=message.seq, last_activity_at=message.created_at
        )
        if message.seq == 1 and message.role == ChatMessage.Role.USER:  # the chat's title, unless renamed first
            ChatSession.objects.filter(pk=session.pk, title="").update(title=title_from(message.content))
        if log.commits_with_the_database:
            _tell_stored(log, session_id, stored)
    if not log.commits_with_the_database:
        _tell_stored(log, session_id, stored)
    return stored


def _tell_stored(log: EventLog, session_id: str, stored: ChatMessage) -> None:
    if stored.role == ChatMessage.Role.USER and stored.seq > 1:
        # The replies stored before this message no longer need their text as written: live readers have had it
        # since, and anyone resuming gets their messages. The reply just before goes once it is stored.
        previous_reply = log.id_of(session_id, ChatEvent.message_key(stored.seq - 1))
        if previous_reply is not None:
            log.compact(session_id, after=None, upto=previous_reply)
    data = represent(MessageSerializer, stored)
    events = [Event(session_id, ChatEvent.Type.MESSAGE, data, key=ChatEvent.message_key(stored.seq))]
    if stored.status == ChatMessage.Status.FAILED:
        detail = {"turn": stored.seq, "detail": ChatMessage.FAILED_REPLY}
        events.append(Event(session_id, ChatEvent.Type.TURN_FAILED, detail, key=f"turn_failed:{stored.seq}"))
    log.append(session_id, events)  # last: on PostgreSQL it takes the appends' lock, held until the commit


def message_replace(*, session_id: str, seq: int) -> None:
    """Marks a reply replaced (the user asked for another answer) and tells the session's stream; the model is not
    shown it again. Idempotent."""
    with transaction.atomic():
        stored = ChatMessage.objects.select_for_update().get(session__session_id=session_id, seq=seq)
        if stored.status != ChatMessage.Status.REPLACED:
            stored.status = ChatMessage.Status.REPLACED
            stored.save(update_fields=["status"])
    data = represent(MessageSerializer, stored)
    get_event_log().append(session_id, [Event(session_id, ChatEvent.Type.MESSAGE, data, key=f"replaced:{seq}")])


def message_get(*, session_id: str, seq: int) -> ChatMessageData | None:
    stored = ChatMessage.objects.filter(session__session_id=session_id, seq=seq).first()
    return None if stored is None else message_data(stored)


def message_data(stored: ChatMessage) -> ChatMessageData:
    return ChatMessageData(
        seq=stored.seq,
        role=stored.role,
        content=stored.content,
        created_at=stored.created_at,
        status=MessageStatus(stored.status),
        model=stored.model,
        tokens_in=stored.tokens_in,
        tokens_out=stored.tokens_out,
    )


@dataclass(frozen=True)
class StepContext:
    """What a model step reads before it asks the model: the reply, when an earlier attempt stored it; the step's
    calls, when an earlier attempt stored those; else the conversation, and the text of the turn's earlier steps."""

    reply: ChatMessageData | None = None
    calls: list[ToolCallRef] = field(default_factory=list)
    conversation: list[StoredTurn] = field(default_factory=list)
    written: str = ""


def step_context(*, session_id: str, user_seq: int, reply_seq: int, step: int) -> StepContext:
    reply = message_get(session_id=session_id, seq=reply_seq)
    if reply is not None:
        return StepContext(reply=reply)
    calls = tool_calls_of_step(session_id=session_id, reply_seq=reply_seq, step=step)
    if calls:
        return StepContext(calls=calls)
    conversation = turn_conversation(session_id=session_id, upto_seq=user_seq, reply_seq=reply_seq)
    current = conversation[-1] if conversation[-1].role == ChatMessage.Role.ASSISTANT else None
    written = "".join(step.text for step in current.steps) if current else ""
    return StepContext(conversation=conversation, written=written)


def turn_conversation(*, session_id: str, upto_seq: int, reply_seq: int | None = None) -> list[StoredTurn]:
    """The conversation up to a user message, as the model is shown it, with each reply's tool calls and their
    results; then, when `reply_seq` is given, the steps its turn has taken so far. Replies that failed, or said and
    did nothing, are left out."""
    last = upto_seq if reply_seq is None else reply_seq
    steps = _steps_by_reply(session_id, upto=last)
    rows = (
        ChatMessage.objects.filter(session__session_id=session_id, seq__lte=upto_seq)
        .exclude(role=ChatMessage.Role.ASSISTANT, status__in=[ChatMessage.Status.FAILED, ChatMessage.Status.REPLACED])
        .order_by("seq")
        .values_list("seq", "role", "content")
    )
    conversation = [
        StoredTurn(role, content, steps.get(seq, ())) for seq, role, content in rows if content or steps.get(seq)
    ]
    if reply_seq is not None and steps.get(reply_seq):
        conversation.append(StoredTurn(ChatMessage.Role.ASSISTANT, "", steps[reply_seq]))
    return conversation


def _steps_by_reply(session_id: str, *, upto: int) -> dict[int, tuple[StoredStep, ...]]:
    calls = (
        ChatToolCall.objects.filter(session__session_id=session_id, reply_seq__lte=upto)
        .order_by("reply_seq", "step", "index")
        .values_list("reply_seq", "step", "step_text", "call_id", "name", "arguments", "status", "result")
    )
    grouped: dict[int, dict[int, tuple[str, list[StoredCall]]]] = defaultdict(dict)
    for reply_seq, step, text, call_id, name, args, status, result in calls:
        _, step_calls = grouped[reply_seq].setdefault(step, (text, []))
        step_calls.append(StoredCall(call_id, name, args, result or f"({status})"))
    return {
        reply_seq: tuple(StoredStep(text, tuple(step_calls)) for text, step_calls in by_step.values())
        for reply_seq, by_step in grouped.items()
    }


def turn_text(*, session_id: str, reply_seq: int) -> str:
    """What a reply's model steps wrote before their tool calls, in order."""
    return "".join(
        ChatToolCall.objects.filter(session__session_id=session_id, reply_seq=reply_seq, index=0)
        .order_by("step")
        .values_list("step_text", flat=True)
    )


def tool_calls_record(
    *, session_id: str, reply_seq: int, step: int, text: str, calls: Sequence[RequestedCall]
) -> list[ToolCallRef]:
    """Stores the calls a model step asked for, with the text it wrote first. A call to no such tool, or with
    arguments that don't fit, is settled at once as failed, the reason being what the model is told. Idempotent:
    a step whose calls are stored already returns them."""
    tools = get_tools()
    with transaction.atomic():
        session = ChatSession.objects.get(session_id=session_id)
        stored = list(ChatToolCall.objects.filter(session=session, reply_seq=reply_seq, step=step).order_by("index"))
        if stored:
            return [_ref(row) for row in stored]
        rows = []
        for index, call in enumerate(calls):
            row = ChatToolCall(
                session=session,
                call_id=tool_call_id(reply_seq, step, index),
                reply_seq=reply_seq,
                step=step,
                index=index,
                name=call.name,
                arguments=call.args,
                step_text=text if index == 0 else "",
            )
            tool = tools.get(call.name)
            try:
                if tool is None:
                    raise InvalidArguments(f"There is no tool named {call.name!r}; the tools are: {', '.join(tools)}.")
                tool.validate(call.args)
            except InvalidArguments as exc:
                row.status, row.result, row.finished_at = ChatToolCall.Status.FAILED, str(exc), timezone.now()
            else:
                row.needs_approval = tool.needs_approval
                if tool.needs_approval:
                    row.status = ChatToolCall.Status.AWAITING_APPROVAL
            rows.append(row)
        ChatToolCall.objects.bulk_create(rows)
    events = [_call_event(session_id, row) for row in rows if row.status == ChatToolCall.Status.AWAITING_APPROVAL]
    events += [_result_event(session_id, row) for row in rows if row.status == ChatToolCall.Status.FAILED]
    if events:
        get_event_log().append(session_id, events)
    return [_ref(row) for row in rows]


def _ref(row: ChatToolCall) -> ToolCallRef:
    return ToolCallRef(row.call_id, row.name, row.needs_approval, ToolCallStatus(row.status).finished)


def tool_calls_of_step(*, session_id: str, reply_seq: int, step: int) -> list[ToolCallRef]:
    calls = ChatToolCall.objects.filter(session__session_id=session_id, reply_seq=reply_seq, step=step)
    return [_ref(row) for row in calls.order_by("index")]


def tool_call_start(
    *, session_id: str, call_id: str, retry_safe: bool, approved_by: str | None = None
) -> tuple[ChatToolCall, bool]:
    """Marks a call running before its tool runs; returns the call and whether to run it. A finished call is not run
    again. A call found running was started by an attempt that died: a tool that is safe to retry runs again; any
    other is settled as an unknown outcome, since its effect may have happened."""
    with transaction.atomic():
        row = (
            ChatToolCall.objects.select_for_update()
            .select_related("session__user")
            .get(session__session_id=session_id, call_id=call_id)
        )
        if ToolCallStatus(row.status).finished:
            return row, False
        if approved_by is not None and row.decided_at is None:
            row.decided_by_id, row.decided_at = approved_by, timezone.now()
        if row.status == ChatToolCall.Status.RUNNING and not retry_safe:
            row.status, row.finished_at = ChatToolCall.Status.UNKNOWN, timezone.now()
            row.result = (
                "Unknown outcome: the attempt that ran it was interrupted before its result was recorded, and it is "
                "not run twice. It may or may not have taken effect."
            )
            row.save()
            unknown = True
        else:
            row.status = ChatToolCall.Status.RUNNING
            row.save()
            unknown = False
    get_event_log().append(session_id, [_result_event(session_id, row) if unknown else _call_event(session_id, row)])
    return row, not unknown


def tool_call_finish(
    *,
    session_id: str,
    call_id: str,
    status: ToolCallStatus,
    result: str,
    decided_by: str | None = None,
    reason: str = "",
) -> ChatToolCall:
    """Records how a call ended (its result, or why it never ran) and tells the session's stream; the first
    record wins."""
    now = timezone.now()
    with transaction.atomic():
        row = ChatToolCall.objects.select_for_update().get(session__session_id=session_id, call_id=call_id)
        if ToolCallStatus(row.status).finished:
            return row
        row.status, row.result, row.finished_at = status, result, now
        if decided_by is not None:
            row.decided_by_id, row.decided_at, row.reason = decided_by, now, reason
        row.save()
    get_event_log().append(session_id, [_result_event(session_id, row)])
    return row


def _call_event(session_id: str, row: ChatToolCall) -> Event:
    data = {"turn": row.reply_seq, "call_id": row.call_id, "name": row.name, "args": row.args, "status": row.status}
    return Event(session_id, ChatEvent.Type.TOOL_CALL, data, key=f"tool_call:{row.call_id}:{row.status}")


def _result_event(session_id: str, row: ChatToolCall) -> Event:
    data = {
        **{"turn": row.reply_seq, "call_id": row.call_id, "name": row.name, "args": row.args},
        **{"status": row.status, "result": row.result[:EVENT_RESULT_CHARS]},
    }
    return Event(session_id, ChatEvent.Type.TOOL_RESULT, data, key=f"tool_result:{row.call_id}")


def session_record_end(*, end: SessionEnd) -> None:
    """Records how, when and by whom the session ended, and tells the session's stream."""
    ChatSession.objects.filter(session_id=end.session_id).update(
        status=end.status, ended_at=end.ended_at, ended_by_id=end.ended_by
    )
    data = represent(SessionEndedSerializer, end)
    log = get_event_log()
    [ended] = log.append(end.session_id, [Event(end.session_id, ChatEvent.Type.SESSION_ENDED, data, key="ended")])
    log.compact(end.session_id, after=None, upto=ended)  # every reply is stored by now
    log.retire(end.session_id, chat_settings.CHAT_EVENT_RETENTION)


def events_trim(*, retention_seconds: float) -> int:
    """Removes the events of sessions that ended more than `retention_seconds` ago; returns how many."""
    return get_event_log().trim(ended_before=timezone.now() - timedelta(seconds=retention_seconds))
