"""The one door from the chat app to Temporal, and the reads of the session records."""

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from chat.exceptions import InvalidMessage, SessionEnded, SessionExists, SessionNotFound
from chat.models import ChatMessage, ChatSession
from temporal_integration.client import TemporalUnavailable, run_on_client
from temporal_integration.conf import get_config
from temporal_integration.types import (
    CLIENT_UPDATE_PREFIX,
    INVALID_MESSAGE,
    SESSION_ENDED,
    ChatMessageData,
    SessionOptions,
    SessionState,
)
from temporal_integration.workflows import ChatSessionWorkflow, workflow_id_for

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkflowView:
    """What Temporal says of a session's workflow: its execution status, and the session's state while open."""

    status: str
    state: SessionState | None


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
    config = get_config()
    user_id = str(user.pk)

    def start(search_attributes: TypedSearchAttributes | None) -> WorkflowHandle:
        return run_on_client(
            lambda client: client.start_workflow(
                ChatSessionWorkflow.run,
                # Every parameter, always: the SDK decodes by type hint only when the counts match.
                args=[user_id, session_id, session_options(), None],
                id=workflow_id_for(session_id),
                task_queue=config.task_queue,
                # Running: FAIL; closed: REJECT_DUPLICATE. Together, a session id is used once.
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"Chat session {session_id} of user {user_id}",
                search_attributes=search_attributes,
                rpc_timeout=config.rpc_timeout,
            )
        )

    try:
        try:
            handle = start(_user_search_attributes(user_id))
        except RPCError as exc:
            # The attribute only helps the Web UI filter; a namespace without it must not cost the session.
            if exc.status != RPCStatusCode.INVALID_ARGUMENT or "search attribute" not in exc.message.lower():
                raise
            logger.warning(
                "starting session %s without search attribute %s, which namespace %s lacks (%s). Register it: "
                "temporal operator search-attribute create --name %s --type Keyword",
                session_id, config.user_search_attribute, config.namespace, exc.message, config.user_search_attribute,
            )  # fmt: skip
            handle = start(None)
    except WorkflowAlreadyStartedError as exc:
        raise SessionExists(session_id) from exc
    logger.info("session started session_id=%s user_id=%s workflow_id=%s run_id=%s",
                session_id, user_id, handle.id, handle.result_run_id)  # fmt: skip
    return StartedSession(
        session_id=session_id,
        user_id=user_id,
        workflow_id=handle.id,
        run_id=handle.result_run_id,
        status=ChatSession.Status.ACTIVE,
        temporal_ui_url=config.workflow_ui_url(handle.id, handle.result_run_id),
    )


def _user_search_attributes(user_id: str) -> TypedSearchAttributes | None:
    name = get_config().user_search_attribute
    if not name:
        return None
    return TypedSearchAttributes([SearchAttributePair(SearchAttributeKey.for_keyword(name), user_id)])


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
        return _on_handle(session.session_id, lambda handle, timeout: handle.query(
            ChatSessionWorkflow.get_state, rpc_timeout=timeout))  # fmt: skip
    except (TemporalUnavailable, RPCError, WorkflowQueryFailedError):
        return None


def session_workflow_view(session: ChatSession) -> WorkflowView:
    """Asks Temporal about the session's workflow; raises TemporalUnavailable (or RPCError) if it can't say."""

    async def view(handle: WorkflowHandle, rpc_timeout: object) -> WorkflowView:
        described = await handle.describe(rpc_timeout=rpc_timeout)
        state = None
        if described.status == WorkflowExecutionStatus.RUNNING:
            state = await handle.query(ChatSessionWorkflow.get_state, rpc_timeout=rpc_timeout)
        return WorkflowView(status=described.status.name if described.status else "UNKNOWN", state=state)

    return _on_handle(session.session_id, view)


def messages_of(*, user: AbstractBaseUser, session_id: str) -> QuerySet[ChatMessage]:
    return session_get(user=user, session_id=session_id).messages.order_by("seq")


def message_post(
    *, user: AbstractBaseUser, session_id: str, content: str, client_message_id: str | None = None
) -> ChatMessageData:
    """Hands the message to the session's workflow, which numbers and stores it.

    With a client_message_id, the post is idempotent: it becomes the update's id, and Temporal answers a
    repeated update id with the first one's outcome instead of running it again.
    """
    _require_owner(user=user, session_id=session_id)
    update_id = f"{CLIENT_UPDATE_PREFIX}{client_message_id}" if client_message_id else None
    return _update(session_id, lambda handle, timeout: handle.execute_update(
        ChatSessionWorkflow.post_message, content, id=update_id, rpc_timeout=timeout))  # fmt: skip


def session_end(*, user: AbstractBaseUser, session_id: str) -> SessionState:
    """Ends the session through its workflow and returns its final state."""
    _require_owner(user=user, session_id=session_id)
    final = _update(session_id, lambda handle, timeout: handle.execute_update(
        ChatSessionWorkflow.end_session, rpc_timeout=timeout))  # fmt: skip
    logger.info("session ended session_id=%s user_id=%s workflow_id=%s messages=%d",
                session_id, user.pk, workflow_id_for(session_id), final.message_count)  # fmt: skip
    return final


def _on_handle(session_id: str, call: Callable[[WorkflowHandle, object], Awaitable[T]]) -> T:
    timeout = get_config().rpc_timeout

    def on_client(client: Client) -> Awaitable[T]:
        return call(client.get_workflow_handle(workflow_id_for(session_id)), timeout)

    return run_on_client(on_client)


def _require_owner(*, user: AbstractBaseUser, session_id: str) -> None:
    # One read answers both "whose is it?" and "is it recorded yet?": two separate reads would race with the
    # record's first write, and could tell the owner 404 in between.
    owner_id = ChatSession.objects.filter(session_id=session_id).values_list("user_id", flat=True).first()
    if owner_id is not None:
        if owner_id != user.pk:
            raise SessionNotFound(session_id)
        return
    # The record is written by the workflow's first activity, a moment after the start: ask the workflow itself.
    try:
        state = _on_handle(session_id, lambda handle, timeout: handle.query(
            ChatSessionWorkflow.get_state, rpc_timeout=timeout))  # fmt: skip
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise SessionNotFound(session_id) from None
        raise
    if state.user_id != str(user.pk):
        raise SessionNotFound(session_id)


def _update(session_id: str, call: Callable[[WorkflowHandle, object], Awaitable[T]]) -> T:
    try:
        return _on_handle(session_id, call)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == SESSION_ENDED:
            raise SessionEnded(session_id) from exc
        if isinstance(cause, ApplicationError) and cause.type == INVALID_MESSAGE:
            raise InvalidMessage(cause.message) from exc
        raise
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        raise TemporalUnavailable(
            get_config().address, "not answered in time; a retry with the same client_message_id is safe"
        ) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the caller owns it, so the workflow exists but has closed
            raise SessionEnded(session_id) from exc
        raise
