"""The one door from the chat app to Temporal."""

import uuid
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from chat.exceptions import SessionExists
from chat.models import ChatSession
from temporal_integration.client import run_on_client
from temporal_integration.conf import get_config
from temporal_integration.workflows import ChatSessionWorkflow, workflow_id_for


@dataclass(frozen=True)
class StartedSession:
    session_id: str
    user_id: str
    workflow_id: str
    run_id: str
    status: str
    temporal_ui_url: str


def session_start(*, user: AbstractBaseUser, session_id: str | None = None) -> StartedSession:
    """Starts the session's workflow; the workflow's activity writes the record."""
    session_id = session_id or uuid.uuid4().hex
    # The record outlives the workflow's retention in Temporal, so it is the lasting guard against reuse.
    if ChatSession.objects.filter(session_id=session_id).exists():
        raise SessionExists(session_id)
    config = get_config()
    user_id = str(user.pk)
    try:
        handle = run_on_client(
            lambda client: client.start_workflow(
                ChatSessionWorkflow.run,
                args=[user_id, session_id],
                id=workflow_id_for(session_id),
                task_queue=config.task_queue,
                # Running: FAIL; closed: REJECT_DUPLICATE. Together, a session id is used once.
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=config.rpc_timeout,
            )
        )
    except WorkflowAlreadyStartedError as exc:
        raise SessionExists(session_id) from exc
    return StartedSession(
        session_id=session_id,
        user_id=user_id,
        workflow_id=handle.id,
        run_id=handle.result_run_id,
        status=ChatSession.Status.ACTIVE,
        temporal_ui_url=config.workflow_ui_url(handle.id, handle.result_run_id),
    )
