"""The chat app's reads, for the web side: the caller's sessions and messages, and what Temporal says of them."""

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import F, QuerySet, Sum
from django.utils import timezone

from chat import gateway
from chat.events import get_event_log
from chat.exceptions import SessionNotFound, TemporalUnavailable, ToolCallNotFound, WorkflowUnreadable
from chat.gateway import SessionGateway, WorkflowView
from chat.models import ChatEvent, ChatMessage, ChatSession, ChatToolCall
from chat.types import SessionState, SessionStatus


def sessions_of(*, user: AbstractBaseUser) -> QuerySet[ChatSession]:
    return ChatSession.objects.filter(user=user)


def session_get(*, user: AbstractBaseUser, session_id: str) -> ChatSession:
    """The caller's session record; SessionNotFound for an unknown id and for another user's session alike."""
    try:
        return sessions_of(user=user).get(session_id=session_id)
    except ChatSession.DoesNotExist:
        raise SessionNotFound(session_id) from None


def session_owner_id(session_id: str) -> int | None:
    """The id of the session record's user; None while it has no record (never started, deleted, or started a
    moment ago). On every start and message: its SQL is compiled once."""
    with connection.cursor() as cursor:
        cursor.execute(_owner_sql(connection.vendor), [session_id])
        row = cursor.fetchone()
    return None if row is None else row[0]


@functools.cache
def _owner_sql(vendor: str) -> str:
    sql, _ = ChatSession.objects.filter(session_id="").order_by().values_list("user_id")[:1].query.sql_with_params()
    return sql


def session_require_owner(*, user: AbstractBaseUser, session_id: str) -> None:
    """SessionNotFound unless the session is the user's, from the moment its workflow starts."""
    # One read answers both "whose is it?" and "is it recorded yet?": two reads would race with the record's first
    # write, and could tell the owner 404 in between.
    owner_id = session_owner_id(session_id)
    if owner_id is None:
        # The record is written by the workflow's first activity, a moment after the start: ask the workflow. One that
        # has closed without a record was deleted (a session's end waits for its record).
        state = gateway.call(SessionGateway.state, session_id=session_id)
        if state.status != SessionStatus.ACTIVE:
            raise SessionNotFound(session_id)
        owner_id = state.user_id
    if str(owner_id) != str(user.pk):
        raise SessionNotFound(session_id)


def sessions_listed(*, user: AbstractBaseUser, limit: int = 50) -> list[ChatSession]:
    """The user's newest sessions, each with its `title` (its first message's start, written when that message is
    stored; migration 0008 titled the older ones)."""
    return list(sessions_of(user=user)[:limit])


def sessions_titled(
    *, user: AbstractBaseUser, query: str, limit: int = 10, excluding: Iterable[str] = ()
) -> list[ChatSession]:
    """The user's chats whose title contains `query` (case-insensitive), newest first, but those `excluding` names:
    a renamed chat is found by the name its owner gave it."""
    found = sessions_of(user=user).filter(title__icontains=query).exclude(session_id__in=list(excluding))
    return list(found[:limit])


def messages_matching(
    *, user: AbstractBaseUser, query: str, limit: int = 10, skip: tuple[str, int] | None = None
) -> list[ChatMessage]:
    """What the user wrote, in all their chats, containing `query` (case-insensitive), newest first, each with its
    session. `skip` leaves out one session's messages from a seq on. The page's search and the assistant's
    search_chats tool both read this."""
    found = ChatMessage.objects.filter(session__user=user, role=ChatMessage.Role.USER, content__icontains=query)
    if skip is not None:
        found = found.exclude(session__session_id=skip[0], seq__gte=skip[1])
    return list(found.select_related("session").order_by("-created_at", "-seq")[:limit])


def messages_of(*, user: AbstractBaseUser, session_id: str) -> QuerySet[ChatMessage]:
    return session_get(user=user, session_id=session_id).messages.order_by("seq")


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
    if messages and messages[-1].status == ChatMessage.Status.REPLACED:  # regenerated: a new answer is on its way
        unanswered.append(max(m.seq for m in messages if m.role == ChatMessage.Role.USER))
        unanswered.sort()
    if unanswered and session.status == ChatSession.Status.ACTIVE:
        # A reply may be on its way, its text so far only in the log. A turn starts after its message is stored
        # (and that message's event appended), so the stream from that event on carries all of the reply.
        anchor = log.id_of(session_id, ChatEvent.message_key(unanswered[0]))
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


def tokens_used_today(user: AbstractBaseUser) -> int:
    """Tokens (in and out) the user's replies have used since midnight UTC."""
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    used = ChatMessage.objects.filter(session__user=user, created_at__gte=midnight).aggregate(
        total=Sum(F("tokens_in") + F("tokens_out"))
    )
    return used["total"] or 0


def tool_calls_of(*, user: AbstractBaseUser, session_id: str) -> QuerySet[ChatToolCall]:
    session = session_get(user=user, session_id=session_id)
    return session.tool_calls.select_related("decided_by").order_by("reply_seq", "step", "index")


def tool_call_get(*, user: AbstractBaseUser, session_id: str, call_id: str) -> ChatToolCall:
    try:
        return tool_calls_of(user=user, session_id=session_id).get(call_id=call_id)
    except ChatToolCall.DoesNotExist:
        raise ToolCallNotFound(call_id) from None


def tool_calls_by_reply(*, session_id: str, reply_seqs: Iterable[int]) -> dict[int, list[ChatToolCall]]:
    """The calls of these replies, by reply: one query for a page of messages."""
    by_reply: dict[int, list[ChatToolCall]] = defaultdict(list)
    calls = ChatToolCall.objects.filter(session__session_id=session_id, reply_seq__in=list(reply_seqs))
    for call in calls.select_related("decided_by").order_by("reply_seq", "step", "index"):
        by_reply[call.reply_seq].append(call)
    return by_reply
