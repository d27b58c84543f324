"""The chat app's use cases, for the web side (the API, the pages, the admin): each goes through the gateway to the
session's workflow. Reads are in chat.selectors; the worker's writes in chat.projections."""

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from chat import gateway
from chat.conf import chat_settings, session_options
from chat.events import get_event_log
from chat.exceptions import SessionEnded, SessionExists, SessionNotFound, TokenBudgetExceeded
from chat.gateway import SessionGateway
from chat.models import ChatSession, ChatToolCall
from chat.selectors import session_get, session_owner_id, session_require_owner, tokens_used_today, tool_call_get
from chat.types import ChatMessageData, Regeneration, SessionState, ToolDecision

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartedSession:
    session_id: str
    user_id: str
    workflow_id: str
    run_id: str
    status: str
    temporal_ui_url: str
    message: ChatMessageData | None = None  # the first message, when it rode on the start


def session_starting(
    *, user: AbstractBaseUser, session_id: str | None = None, content: str | None = None
) -> gateway.Pending[StartedSession]:
    """Checks the start, and prepares it: `.result()` starts the session's workflow, with its first message when
    `content` is given (one round trip), and the API's async door awaits it on the server's loop instead. The
    workflow's activity writes the record."""
    # The record outlives the workflow's retention in Temporal, so it is the lasting guard against reusing a
    # client's id. An id generated here is a fresh uuid4: no record can hold it, so that read is skipped.
    if session_id is None:
        session_id = uuid.uuid4().hex
    elif session_owner_id(session_id) is not None:
        raise SessionExists(session_id)
    if content is not None:
        _require_token_budget(user)
    user_id = str(user.pk)

    def started_session(started: gateway.StartedWorkflow) -> StartedSession:
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

    options = {"user_id": user_id, "session_id": session_id, "options": session_options(), "first": content}
    return gateway.Pending(SessionGateway.start, options, started_session)


def message_posting(
    *, user: AbstractBaseUser, session_id: str, content: str, client_message_id: str | None = None
) -> gateway.Pending[ChatMessageData]:
    """Checks the post, and prepares it: `.result()` hands the message to the session's workflow, which numbers and
    stores it (idempotent with a client_message_id), and the API's async door awaits it on the server's loop
    instead. Over the user's daily token budget, refused before any model call."""
    session_require_owner(user=user, session_id=session_id)
    _require_token_budget(user)
    post = {"session_id": session_id, "content": content, "client_message_id": client_message_id}
    return gateway.Pending(SessionGateway.post, post)


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


def session_delete(*, user: AbstractBaseUser, session_id: str, by: AbstractBaseUser | None = None) -> None:
    """Ends the user's session if it is open, then removes its messages, its events and its record. Temporal keeps
    the workflow's history until the namespace's retention (docs/reliability.md)."""
    session_require_owner(user=user, session_id=session_id)
    by = by or user
    status = ChatSession.objects.filter(session_id=session_id).values_list("status", flat=True).first()
    if status in (None, ChatSession.Status.ACTIVE):  # None: the record is not written yet
        try:
            gateway.call(SessionGateway.end, session_id=session_id, ended_by=str(by.pk))
        except (SessionEnded, SessionNotFound):  # ended meanwhile, or its workflow is past retention
            pass
    get_event_log().delete(session_id)
    ChatSession.objects.filter(session_id=session_id).delete()
    logger.info("session deleted session_id=%s user_id=%s by=%s", session_id, user.pk, by.get_username())


def session_rename(*, user: AbstractBaseUser, session_id: str, title: str | None = None) -> ChatSession:
    """Renames the user's chat, open or ended. A title is the owner's label for the chat, not part of the session's
    life, so it is written here rather than through the workflow (which an ended chat no longer has running)."""
    session = session_get(user=user, session_id=session_id)
    if title is not None:
        session.title = title
        session.save(update_fields=["title", "updated_at"])
    return session


def reply_regenerate(*, user: AbstractBaseUser, session_id: str) -> Regeneration:
    """Asks the assistant to answer the last answered message again, through the session's workflow: the old reply
    is kept, marked replaced; the new one streams under the next seq. Over the daily token budget, refused first."""
    session_require_owner(user=user, session_id=session_id)
    _require_token_budget(user)
    return gateway.call(SessionGateway.regenerate, session_id=session_id)


def session_stop(*, user: AbstractBaseUser, session_id: str) -> bool:
    """Stops the reply being written, keeping what it wrote; the session stays open. False when none was."""
    session_require_owner(user=user, session_id=session_id)
    return gateway.call(SessionGateway.stop, session_id=session_id)


def tool_call_decide(
    *, user: AbstractBaseUser, session_id: str, call_id: str, approve: bool, reason: str = ""
) -> ChatToolCall:
    """Approves or denies a tool call of the user's that waits for a decision, through the session's workflow, and
    returns the call: finished, when it ran (approved) or was settled (denied) within the RPC timeout; else as it
    stands (its result follows on the event stream). ToolCallNotWaiting when it doesn't wait."""
    tool_call_get(user=user, session_id=session_id, call_id=call_id)  # the owner's, and this session's
    decision = ToolDecision(call_id, approve=approve, decided_by=str(user.pk), reason=reason)
    outcome = gateway.call(SessionGateway.decide, session_id=session_id, decision=decision)
    logger.info(
        "tool call decided session_id=%s call_id=%s approve=%s outcome=%s",
        *(session_id, call_id, approve, outcome.status if outcome else "pending"),
    )
    return tool_call_get(user=user, session_id=session_id, call_id=call_id)


def _require_token_budget(user: AbstractBaseUser) -> None:
    budget = chat_settings.CHAT_USER_DAILY_TOKENS
    if budget and tokens_used_today(user) >= budget:
        tomorrow = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        raise TokenBudgetExceeded(budget, retry_after=max(1, int((tomorrow - timezone.now()).total_seconds())))
