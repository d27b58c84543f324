"""The one door to the session workflows: every SDK call the chat app makes, and every SDK error it can meet,
translated here into the app's own exceptions.

`SessionGateway`'s methods are async, on the process's client loop; sync code (views, services, the admin) runs
one through `call(SessionGateway.post, ...)`, or prepares one as a `Pending` for the API's async door to await.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
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

from chat.exceptions import (
    InvalidMessage,
    NothingToRegenerate,
    SessionEnded,
    SessionExists,
    SessionNotFound,
    TemporalUnavailable,
    ToolCallNotWaiting,
    WorkflowUnreadable,
)
from chat.types import (
    CLIENT_UPDATE_PREFIX,
    INVALID_MESSAGE,
    NOTHING_TO_REGENERATE,
    SESSION_ENDED,
    TOOL_CALL_NOT_WAITING,
    ChatMessageData,
    Regeneration,
    SessionOptions,
    SessionState,
    ToolDecision,
    ToolOutcome,
)
from chat.workflows import ChatSessionWorkflow, workflow_id_for
from temporal_integration.client import run_on_client, run_on_loop, unavailable
from temporal_integration.conf import get_config

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class StartedWorkflow:
    workflow_id: str
    run_id: str
    first_message: ChatMessageData | None = None


@dataclass(frozen=True)
class WorkflowView:
    """What Temporal says of a session's workflow: its execution status, and the session's state while open."""

    status: str
    state: SessionState | None


class SessionGateway:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._config = get_config()
        self._timeout = self._config.rpc_timeout

    def _handle(self, session_id: str) -> WorkflowHandle:
        return self._client.get_workflow_handle_for(ChatSessionWorkflow.run, workflow_id_for(session_id))

    async def start(
        self, *, user_id: str, session_id: str, options: SessionOptions, first: str | None = None
    ) -> StartedWorkflow:
        """Starts the session's workflow, with its first message in the same round trip when given
        (update-with-start); SessionExists if its id was ever used."""
        with _translated(session_id):
            try:
                return await self._start(user_id, session_id, options, first, self._user_search_attributes(user_id))
            except RPCError as exc:
                # The attribute only helps the Web UI filter; a namespace without it must not cost the session.
                if exc.status != RPCStatusCode.INVALID_ARGUMENT or "search attribute" not in exc.message.lower():
                    raise
                name, namespace = self._config.user_search_attribute, self._config.namespace
                logger.warning(
                    "starting session %s without search attribute %s, which namespace %s lacks (%s). Register it: "
                    "temporal operator search-attribute create --name %s --type Keyword",
                    *(session_id, name, namespace, exc.message, name),
                )
                return await self._start(user_id, session_id, options, first, None)

    async def _start(
        self,
        user_id: str,
        session_id: str,
        options: SessionOptions,
        first: str | None,
        attributes: TypedSearchAttributes | None,
    ) -> StartedWorkflow:
        start = {
            # Every parameter, always: the SDK decodes by type hint only when the counts match.
            "args": [user_id, session_id, options, None],
            "id": workflow_id_for(session_id),
            "task_queue": self._config.task_queue,
            # Running: FAIL; closed: REJECT_DUPLICATE. Together, a session id is used once.
            "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
            "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
            "static_summary": f"Chat session {session_id} of user {user_id}",
            "search_attributes": attributes,
        }
        if first is None:
            handle = await self._client.start_workflow(ChatSessionWorkflow.run, rpc_timeout=self._timeout, **start)
            return StartedWorkflow(workflow_id=handle.id, run_id=handle.result_run_id or "")
        operation = WithStartWorkflowOperation(ChatSessionWorkflow.run, **start)
        message = await self._client.execute_update_with_start_workflow(
            ChatSessionWorkflow.post_message, first, start_workflow_operation=operation, rpc_timeout=self._timeout
        )
        handle = await operation.workflow_handle()
        return StartedWorkflow(workflow_id=handle.id, run_id=handle.result_run_id or "", first_message=message)

    def _user_search_attributes(self, user_id: str) -> TypedSearchAttributes | None:
        name = self._config.user_search_attribute
        if not name:
            return None
        return TypedSearchAttributes([SearchAttributePair(SearchAttributeKey.for_keyword(name), user_id)])

    async def post(self, *, session_id: str, content: str, client_message_id: str | None = None) -> ChatMessageData:
        """Hands a message to the workflow, which numbers and stores it. A client_message_id becomes the update's
        id, so a retried post is answered with the first one's outcome instead of running again."""
        update_id = f"{CLIENT_UPDATE_PREFIX}{client_message_id}" if client_message_id else None
        with _translated(session_id):
            return await self._handle(session_id).execute_update(
                ChatSessionWorkflow.post_message, content, id=update_id, rpc_timeout=self._timeout
            )

    async def end(self, *, session_id: str, ended_by: str) -> SessionState:
        """Ends the session and returns its final state; SessionEnded if it already had."""
        with _translated(session_id):
            return await self._handle(session_id).execute_update(
                ChatSessionWorkflow.end_session, ended_by, rpc_timeout=self._timeout
            )

    async def regenerate(self, *, session_id: str) -> Regeneration:
        """Asks for another answer to the last answered message; NothingToRegenerate while a reply is written."""
        with _translated(session_id):
            return await self._handle(session_id).execute_update(
                ChatSessionWorkflow.regenerate, rpc_timeout=self._timeout
            )

    async def stop(self, *, session_id: str) -> bool:
        """Stops the reply being written, if one is; SessionEnded if the session has."""
        with _translated(session_id):
            return await self._handle(session_id).execute_update(
                ChatSessionWorkflow.stop_reply, rpc_timeout=self._timeout
            )

    async def decide(self, *, session_id: str, decision: ToolDecision) -> ToolOutcome | None:
        """Approves or denies the tool call that waits for a decision. Answers with its outcome once the call has
        run or been settled, or None when that takes longer than the RPC timeout (the decision stands; the result
        follows on the event stream). ToolCallNotWaiting if the call doesn't wait (decided already, or it needs no
        decision)."""
        with _translated(session_id):
            try:
                # A rejection (the validator's) completes the update at once: start_update or result() raises it.
                update = await self._handle(session_id).start_update(
                    ChatSessionWorkflow.decide_tool_call,
                    decision,
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                    rpc_timeout=self._timeout,
                )
                return await asyncio.wait_for(update.result(), self._timeout.total_seconds())
            except WorkflowUpdateFailedError as exc:
                if isinstance(exc.cause, ApplicationError) and exc.cause.type == TOOL_CALL_NOT_WAITING:
                    raise ToolCallNotWaiting(decision.call_id) from exc
                raise
            except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
                return None  # accepted: the decision stands, and the call's result follows on the event stream

    async def state(self, *, session_id: str) -> SessionState:
        """The running workflow's own view of the session; SessionNotFound if there is no such workflow."""
        with _translated(session_id, not_found=SessionNotFound):
            return await self._handle(session_id).query(ChatSessionWorkflow.get_state, rpc_timeout=self._timeout)

    async def describe(self, *, session_id: str) -> WorkflowView:
        """The workflow's execution status, with the session's state while it runs."""
        handle = self._handle(session_id)
        with _translated(session_id, not_found=_past_retention):
            described = await handle.describe(rpc_timeout=self._timeout)
            state = None
            if described.status == WorkflowExecutionStatus.RUNNING:
                state = await handle.query(ChatSessionWorkflow.get_state, rpc_timeout=self._timeout)
        return WorkflowView(status=described.status.name if described.status else "UNKNOWN", state=state)


def _past_retention(session_id: str) -> WorkflowUnreadable:
    return WorkflowUnreadable(f"Temporal has no workflow for session {session_id!r}; it may be past its retention.")


@contextmanager
def _translated(session_id: str, not_found: Callable[[str], Exception] = SessionEnded) -> Iterator[None]:
    """SDK errors as the app's exceptions. A workflow that isn't found is `not_found`: callers have checked the
    session is the user's, so for an update it means the workflow has closed."""
    try:
        yield
    except WorkflowAlreadyStartedError as exc:
        raise SessionExists(session_id) from exc
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == SESSION_ENDED:
            raise SessionEnded(session_id) from exc
        if isinstance(cause, ApplicationError) and cause.type == INVALID_MESSAGE:
            raise InvalidMessage(cause.message) from exc
        if isinstance(cause, ApplicationError) and cause.type == NOTHING_TO_REGENERATE:
            raise NothingToRegenerate(cause.message) from exc

        raise
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        raise TemporalUnavailable(
            get_config().address, "not answered in time; a retry with the same client_message_id is safe"
        ) from exc
    except WorkflowQueryFailedError as exc:
        raise WorkflowUnreadable(f"Temporal could not query session {session_id!r}: {exc}") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise not_found(session_id) from exc
        translated = unavailable(exc)
        if translated is not None:
            raise translated from exc
        raise WorkflowUnreadable(f"Temporal refused a call for session {session_id!r}: {exc.message}") from exc


def call(method: Callable[Concatenate[SessionGateway, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Runs one gateway method on the client's loop and returns its result: the door for sync code."""
    return run_on_client(lambda client: method(SessionGateway(client), *args, **kwargs))


def _unchanged(result: Any) -> Any:
    return result


@dataclass(frozen=True)
class Pending(Generic[T]):
    """A gateway call that sync code has checked and prepared, and what becomes of its result (`then`: no database
    work). `result()` runs it as `call` does; the API's async door (chatproject.asgi) awaits `on_loop()` instead, with
    a client of the server's own loop, once the thread that prepared it has been let go."""

    method: Callable[..., Awaitable[Any]]
    kwargs: dict[str, Any]
    then: Callable[[Any], T] = _unchanged

    def result(self) -> T:
        return self.then(call(self.method, **self.kwargs))

    async def on_loop(self) -> T:
        return self.then(await run_on_loop(lambda client: self.method(SessionGateway(client), **self.kwargs)))
