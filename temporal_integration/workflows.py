"""Workflow definitions. Deterministic code only: no Django, no I/O, no clocks outside `workflow.*`."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from temporal_integration.activities import log_session_start

# Database writes are retried until they succeed: a session's record must not be lost to a
# database outage. Only errors raised as non-retryable (bad input) stop the retries.
DB_ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
DB_ACTIVITY_TIMEOUT = timedelta(seconds=30)


def workflow_id_for(session_id: str) -> str:
    return f"chat-session-{session_id}"


@workflow.defn
class ChatSessionWorkflow:
    """One chat session. For now it records the session's start and completes."""

    @workflow.run
    async def run(self, user_id: str, session_id: str) -> str:
        return await workflow.execute_activity(
            log_session_start,
            args=[user_id, session_id],
            start_to_close_timeout=DB_ACTIVITY_TIMEOUT,
            retry_policy=DB_ACTIVITY_RETRY,
        )
