"""The chat app's use cases. The web side's go through the gateway to the session's workflow; the worker side's
(called by chat.activities) write the records that project the workflow into the database."""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet

from chat import gateway
from chat.exceptions import SessionExists, SessionNotFound, TemporalUnavailable, UnknownUser, WorkflowUnreadable
from chat.gateway import SessionGateway, WorkflowView
from chat.models import ChatMessage, ChatSession
from chat.types import ChatMessageData, SessionEnd, SessionOptions, SessionState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartedSession:
    session_id: str
    user_id: str
    workflow_id: str
    run_id: str
    status: str
    temporal_ui_url: str


def session_options() -> SessionOptions:
    return SessionOptions(
        idle_timeout_seconds=settings.CHAT_SESSION_IDLE_TIMEOUT,
        max_message_length=settings.CHAT_MESSAGE_MAX_LENGTH,
        activity_timeout_seconds=settings.CHAT_ACTIVITY_TIMEOUT,
    )


def session_start(*, user: AbstractBaseUser, session_id: str | None = None) -> StartedSession:
    """Starts the session's workflow; the workflow's activity writes the record."""
    # The record outlives the workflow's retention in Temporal, so it is the lasting guard against reusing a
    # client's id. An id generated here is a fresh uuid4: no record can hold it, so that read is skipped.
    if session_id is None:
        session_id = uuid.uuid4().hex
    elif ChatSession.objects.filter(session_id=session_id).exists():
        raise SessionExists(session_id)
    user_id = str(user.pk)
    started = gateway.call(SessionGateway.start, user_id=user_id, session_id=session_id, options=session_options())
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
    )


def sessions_of(*, user: AbstractBaseUser) -> QuerySet[ChatSession]:
    return ChatSession.objects.filter(user=user)


def session_get(*, user: AbstractBaseUser, session_id: str) -> ChatSession:
    """The caller's session record; SessionNotFound for an unknown id and for another user's session alike."""
    try:
        return sessions_of(user=user).get(session_id=session_id)
    except ChatSession.DoesNotExist:
        raise SessionNotFound(session_id) from None


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
    client_message_id."""
    _require_owner(user=user, session_id=session_id)
    return gateway.call(
        SessionGateway.post, session_id=session_id, content=content, client_message_id=client_message_id
    )


def session_end(*, user: AbstractBaseUser, session_id: str, by: AbstractBaseUser | None = None) -> SessionState:
    """Ends the user's session through its workflow and returns its final state. `by` is whoever ends it when
    that isn't the owner (a staff member in the admin)."""
    _require_owner(user=user, session_id=session_id)
    by = by or user
    final = gateway.call(SessionGateway.end, session_id=session_id, ended_by=str(by.pk))
    logger.info(
        "session ended session_id=%s user_id=%s ended_by=%s messages=%d",
        *(session_id, user.pk, by.get_username(), final.message_count),
    )
    return final


def _require_owner(*, user: AbstractBaseUser, session_id: str) -> None:
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


def message_record(*, session_id: str, message: ChatMessageData) -> None:
    """Stores one message under its sequence number, and moves the session's counters forward."""
    with transaction.atomic():
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


def session_record_end(*, end: SessionEnd) -> None:
    """Records how, when and by whom the session ended."""
    ChatSession.objects.filter(session_id=end.session_id).update(
        status=end.status, ended_at=end.ended_at, ended_by_id=end.ended_by
    )
