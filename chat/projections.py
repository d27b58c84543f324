"""The worker's side of the chat app: the records that project each session's workflow into the database, and the
reads its activities need. Only chat.activities calls these.

Each write is idempotent: Temporal runs an activity at least once, and a retried attempt must leave the database as
one attempt would.
"""

from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from chat.assistant import StoredTurn
from chat.conf import chat_settings
from chat.events import Event, get_event_log
from chat.exceptions import UnknownUser
from chat.models import ChatEvent, ChatMessage, ChatSession
from chat.serializers import MessageSerializer, SessionEndedSerializer
from chat.types import ChatMessageData, MessageStatus, SessionEnd


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
    data = dict(MessageSerializer(stored).data)
    events = [Event(session_id, ChatEvent.Type.MESSAGE, data, key=ChatEvent.message_key(stored.seq))]
    if stored.status == ChatMessage.Status.FAILED:
        detail = {"turn": stored.seq, "detail": ChatMessage.FAILED_REPLY}
        events.append(Event(session_id, ChatEvent.Type.TURN_FAILED, detail, key=f"turn_failed:{stored.seq}"))
    log = get_event_log()
    log.append(session_id, events)
    if stored.role == ChatMessage.Role.USER and stored.seq > 1:
        # The replies stored before this message no longer need their text as written: live readers have had it
        # since, and anyone resuming gets their messages. The reply just before goes once it is stored.
        previous_reply = log.id_of(session_id, ChatEvent.message_key(stored.seq - 1))
        if previous_reply is not None:
            log.compact(session_id, after=None, upto=previous_reply)
    return stored


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
    data = dict(SessionEndedSerializer(end).data)
    log = get_event_log()
    [ended] = log.append(end.session_id, [Event(end.session_id, ChatEvent.Type.SESSION_ENDED, data, key="ended")])
    log.compact(end.session_id, after=None, upto=ended)  # every reply is stored by now
    log.retire(end.session_id, chat_settings.CHAT_EVENT_RETENTION)


def events_trim(*, retention_seconds: float) -> int:
    """Removes the events of sessions that ended more than `retention_seconds` ago; returns how many."""
    return get_event_log().trim(ended_before=timezone.now() - timedelta(seconds=retention_seconds))
