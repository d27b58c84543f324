"""The chat app's use cases. The web side's go through the gateway to the session's workflow; the worker side's
(called by chat.activities) write the records that project the workflow into the database."""

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, OuterRef, QuerySet, Subquery, Sum
from django.utils import timezone

from chat import gateway
from chat.assistant import StoredTurn
from chat.events import Event, get_event_log
from chat.exceptions import (
    ReplyPending,
    SessionExists,
    SessionNotFound,
    TemporalUnavailable,
    TokenBudgetExceeded,
    UnknownUser,
    WorkflowUnreadable,
)
from chat.gateway import SessionGateway, WorkflowView
from chat.models import ChatMessage, ChatSession
from chat.types import ChatMessageData, MessageStatus, SessionEnd, SessionOptions, SessionState

logger = logging.getLogger(__name__)
REPLY_POLL_SECONDS = 0.1
# What a client shows for a reply that failed (the `turn_failed` event's detail, and the chat page's note).
FAILED_REPLY = "The assistant could not answer. Send another message to try again."


@dataclass(frozen=True)
class StartedSession:
    session_id: str
    user_id: str
    workflow_id: str
    run_id: str
    status: str
    temporal_ui_url: str
    message: ChatMessageData | None = None  # the first message, when it rode on the start


def session_options() -> SessionOptions:
    return SessionOptions(
        idle_timeout_seconds=settings.CHAT_SESSION_IDLE_TIMEOUT,
        max_message_length=settings.CHAT_MESSAGE_MAX_LENGTH,
        activity_timeout_seconds=settings.CHAT_ACTIVITY_TIMEOUT,
        turn_timeout_seconds=settings.CHAT_TURN_TIMEOUT,
        turn_heartbeat_seconds=settings.CHAT_TURN_HEARTBEAT_TIMEOUT,
        turn_attempts=settings.CHAT_TURN_ATTEMPTS,
        max_messages_per_run=settings.CHAT_MAX_MESSAGES_PER_RUN or None,
    )


def session_start(
    *, user: AbstractBaseUser, session_id: str | None = None, content: str | None = None
) -> StartedSession:
    """Starts the session's workflow, with its first message when `content` is given (one round trip); the
    workflow's activity writes the record."""
    # The record outlives the workflow's retention in Temporal, so it is the lasting guard against reusing a
    # client's id. An id generated here is a fresh uuid4: no record can hold it, so that read is skipped.
    if session_id is None:
        session_id = uuid.uuid4().hex
    elif ChatSession.objects.filter(session_id=session_id).exists():
        raise SessionExists(session_id)
    if content is not None:
        _require_token_budget(user)
    user_id = str(user.pk)
    started = gateway.call(
        SessionGateway.start, user_id=user_id, session_id=session_id, options=session_options(), first=content
    )
    logger.info(
        "session started session_id=%s user_id=%s workflow_id=%s run_id=%s",
        *(session_id, user_id, started.workflow_id, started.run_id),
    )
    return StartedSession(
        session_id=session_id,
        user_id=user_id,
        workflow_id=started.workflow_id,
        run_id=started.run_id,
        status=ChatSession.Status.ACTIVE,
        temporal_ui_url=ChatSession(workflow_id=started.workflow_id).temporal_ui_url,
        message=started.first_message,
    )


def sessions_of(*, user: AbstractBaseUser) -> QuerySet[ChatSession]:
    return ChatSession.objects.filter(user=user)


def session_get(*, user: AbstractBaseUser, session_id: str) -> ChatSession:
    """The caller's session record; SessionNotFound for an unknown id and for another user's session alike."""
    try:
        return sessions_of(user=user).get(session_id=session_id)
    except ChatSession.DoesNotExist:
        raise SessionNotFound(session_id) from None


def sessions_listed(*, user: AbstractBaseUser, limit: int = 50) -> list[ChatSession]:
    """The user's newest sessions, each with `title`: the start of its first message (empty before one)."""
    first_message = ChatMessage.objects.filter(session=OuterRef("pk"), role=ChatMessage.Role.USER).order_by("seq")
    sessions = sessions_of(user=user).annotate(title=Subquery(first_message.values("content")[:1]))
    return list(sessions[:limit])


@dataclass(frozen=True)
class Conversation:
    """What a page shows of a session: its stored messages, and the event after which its stream takes over.

    Every event after `after` may repeat a stored message (a client keeps one per seq) but none is missing,
    including the deltas of a reply still being written, whose text is not stored yet.
    """

    session: ChatSession | None  # None while its record is not written yet (a moment after the start)
    session_id: str
    messages: list[ChatMessage]
    after: str | None  # None: from the session's first event


def session_conversation(*, user: AbstractBaseUser, session_id: str) -> Conversation:
    """The caller's session as a page shows it; SessionNotFound for an unknown id and for another user's alike."""
    try:
        session = session_get(user=user, session_id=session_id)
    except SessionNotFound:
        session_require_owner(user=user, session_id=session_id)  # asks the workflow: the record may not be written yet
        return Conversation(session=None, session_id=session_id, messages=[], after=None)
    log = get_event_log()
    # Read before the messages: whatever is stored after this read also reaches the stream after it.
    after = log.last_id(session_id)
    messages = list(session.messages.order_by("seq"))
    stored = {message.seq for message in messages}
    unanswered = [m.seq for m in messages if m.role == ChatMessage.Role.USER and m.seq + 1 not in stored]
    if unanswered and session.status == ChatSession.Status.ACTIVE:
        # A reply may be on its way, its text so far only in the log. A turn starts after its message is stored
        # (and that message's event appended), so the stream from that event on carries all of the reply.
        anchor = log.id_of(session_id, f"message:{unanswered[0]}")
        if anchor is None or after is None or log.sort_key(anchor) < log.sort_key(after):
            after = anchor
    return Conversation(session=session, session_id=session_id, messages=messages, after=after)


def session_live_state(session: ChatSession) -> SessionState | None:
    """The workflow's own view of an open session; None once it has closed or while Temporal can't answer."""
    if session.status != ChatSession.Status.ACTIVE:
        return None
    try:
        return gateway.call(SessionGateway.state, session_id=session.session_id)
    except (TemporalUnavailable, WorkflowUnreadable, SessionNotFound):
        return None


def session_workflow_view(session: ChatSession) -> WorkflowView:
    """Asks Temporal about the session's workflow; TemporalUnavailable or WorkflowUnreadable if it can't say."""
    return gateway.call(SessionGateway.describe, session_id=session.session_id)


def messages_of(*, user: AbstractBaseUser, session_id: str) -> QuerySet[ChatMessage]:
    return session_get(user=user, session_id=session_id).messages.order_by("seq")


def message_post(
    *, user: AbstractBaseUser, session_id: str, content: str, client_message_id: str | None = None
) -> ChatMessageData:
    """Hands the message to the session's workflow, which numbers and stores it; idempotent with a
    client_message_id. Over the user's daily token budget, refused before any model call."""
    session_require_owner(user=user, session_id=session_id)
    _require_token_budget(user)
    return gateway.call(
        SessionGateway.post, session_id=session_id, content=content, client_message_id=client_message_id
    )


def session_end(*, user: AbstractBaseUser, session_id: str, by: AbstractBaseUser | None = None) -> SessionState:
    """Ends the user's session through its workflow and returns its final state. `by` is whoever ends it when
    that isn't the owner (a staff member in the admin)."""
    session_require_owner(user=user, session_id=session_id)
    by = by or user
    final = gateway.call(SessionGateway.end, session_id=session_id, ended_by=str(by.pk))
    logger.info(
        "session ended session_id=%s user_id=%s ended_by=%s messages=%d",
        *(session_id, user.pk, by.get_username(), final.message_count),
    )
    return final


def reply_wait(*, session_id: str, seq: int) -> ChatMessage:
    """The stored reply of that seq, once the assistant has finished it (or stopped, or failed)."""
    deadline = time.monotonic() + settings.CHAT_REPLY_WAIT_TIMEOUT
    while (reply := ChatMessage.objects.filter(session__session_id=session_id, seq=seq).first()) is None:
        if time.monotonic() > deadline:
            raise ReplyPending(session_id, seq, settings.CHAT_REPLY_WAIT_TIMEOUT)
        time.sleep(REPLY_POLL_SECONDS)
    return reply


def session_stop(*, user: AbstractBaseUser, session_id: str) -> bool:
    """Stops the reply being written, keeping what it wrote; the session stays open. False when none was."""
    session_require_owner(user=user, session_id=session_id)
    return gateway.call(SessionGateway.stop, session_id=session_id)


def tokens_used_today(user: AbstractBaseUser) -> int:
    """Tokens (in and out) the user's replies have used since midnight UTC."""
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    used = ChatMessage.objects.filter(session__user=user, created_at__gte=midnight).aggregate(
        total=Sum(F("tokens_in") + F("tokens_out"))
    )
    return used["total"] or 0


def _require_token_budget(user: AbstractBaseUser) -> None:
    budget = settings.CHAT_USER_DAILY_TOKENS
    if budget and tokens_used_today(user) >= budget:
        tomorrow = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        raise TokenBudgetExceeded(budget, retry_after=max(1, int((tomorrow - timezone.now()).total_seconds())))


def session_require_owner(*, user: AbstractBaseUser, session_id: str) -> None:
    """SessionNotFound unless the session is the user's, from the moment its workflow starts."""
    # One read answers both "whose is it?" and "is it recorded yet?": two separate reads would race with the
    # record's first write, and could tell the owner 404 in between.
    owner_id = ChatSession.objects.filter(session_id=session_id).values_list("user_id", flat=True).first()
    if owner_id is None:
        # The record is written by the workflow's first activity, a moment after the start: ask the workflow.
        owner_id = gateway.call(SessionGateway.state, session_id=session_id).user_id
    if str(owner_id) != str(user.pk):
        raise SessionNotFound(session_id)


# The worker's side: called by chat.activities, each idempotent (Temporal runs an activity at least once, and a
# retried attempt must leave the database as one attempt would).


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
    stream. The first write of a seq wins: a retry, or a stopped reply recorded twice, changes nothing."""
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
    events = [Event(session_id, "message", message_event_data(stored), key=f"message:{stored.seq}")]
    if stored.status == ChatMessage.Status.FAILED:
        detail = {"turn": stored.seq, "detail": FAILED_REPLY}
        events.append(Event(session_id, "turn_failed", detail, key=f"turn_failed:{stored.seq}"))
    get_event_log().append(session_id, events)
    return stored


def message_event_data(message: ChatMessage) -> dict:
    data = {"seq": message.seq, "role": message.role, "content": message.content}
    data["created_at"] = _iso(message.created_at)
    if message.role == ChatMessage.Role.ASSISTANT:
        data |= {"status": message.status, "model": message.model}
        data["usage"] = {"tokens_in": message.tokens_in, "tokens_out": message.tokens_out}
    return data


def _iso(moment: datetime) -> str:
    """As the API writes times (DRF's ISO 8601, UTC as Z), so an event's and a response's agree."""
    return moment.isoformat().replace("+00:00", "Z")


def message_get(*, session_id: str, seq: int) -> ChatMessageData | None:
    stored = ChatMessage.objects.filter(session__session_id=session_id, seq=seq).first()
    if stored is None:
        return None
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


def turn_conversation(*, session_id: str, upto_seq: int) -> list[StoredTurn]:
    """The conversation up to a user message, as the model is shown it: replies that failed or said nothing are
    left out."""
    rows = (
        ChatMessage.objects.filter(session__session_id=session_id, seq__lte=upto_seq)
        .exclude(role=ChatMessage.Role.ASSISTANT, status=ChatMessage.Status.FAILED)
        .exclude(content="")
        .order_by("seq")
        .values_list("role", "content")
    )
    return [StoredTurn(role, content) for role, content in rows]


def session_record_end(*, end: SessionEnd) -> None:
    """Records how, when and by whom the session ended, and tells the session's stream."""
    ChatSession.objects.filter(session_id=end.session_id).update(
        status=end.status, ended_at=end.ended_at, ended_by_id=end.ended_by
    )
    data = {"status": end.status, "ended_at": _iso(end.ended_at)}
    get_event_log().append(end.session_id, [Event(end.session_id, "session_ended", data, key="ended")])
