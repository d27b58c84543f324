import subprocess
import sys
import uuid

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_integration.workflows import ChatSessionWorkflow, workflow_id_for


async def run_session(env: WorkflowEnvironment, activities: list, user_id: str = "7", session_id: str = "s-1") -> str:
    task_queue = f"test-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=task_queue, workflows=[ChatSessionWorkflow], activities=activities):
        return await env.client.execute_workflow(
            ChatSessionWorkflow.run, args=[user_id, session_id], id=workflow_id_for(session_id), task_queue=task_queue
        )


async def test_workflow_logs_the_session_start_with_its_inputs_and_completes(time_skipping_env):
    calls: list[tuple[str, str]] = []

    @activity.defn(name="log_session_start")
    async def record(user_id: str, session_id: str) -> str:
        calls.append((user_id, session_id))
        return f"recorded {session_id}"

    result = await run_session(time_skipping_env, [record], user_id="7", session_id="s-42")

    assert calls == [("7", "s-42")]
    assert result == "recorded s-42"


async def test_workflow_retries_log_session_start_until_it_succeeds(time_skipping_env):
    attempts: list[int] = []

    @activity.defn(name="log_session_start")
    async def flaky(user_id: str, session_id: str) -> str:
        attempts.append(activity.info().attempt)
        if len(attempts) < 4:
            raise RuntimeError("database is down")
        return "ok"

    assert await run_session(time_skipping_env, [flaky]) == "ok"
    assert attempts == [1, 2, 3, 4]


async def test_workflow_fails_at_once_on_a_non_retryable_activity_error(time_skipping_env):
    attempts: list[int] = []

    @activity.defn(name="log_session_start")
    async def reject(user_id: str, session_id: str) -> str:
        attempts.append(activity.info().attempt)
        raise ApplicationError("user 7 does not exist", non_retryable=True)

    with pytest.raises(WorkflowFailureError):
        await run_session(time_skipping_env, [reject])
    assert attempts == [1]


def test_workflow_module_imports_no_django():
    code = (
        "import sys, temporal_integration.workflows; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'chat', 'rest_framework')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
