"""The baseline's workflow: the shape of ChatSessionWorkflow with nothing else, and no Django anywhere."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from bench.raw_activities import RawMessage, raw_log_session_start, raw_persist_message

# The project's activity options: SessionOptions().activity_timeout_seconds and DB_RETRY.
DB_OPTIONS = {
    "start_to_close_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=30)
    ),
}
IDLE_TIMEOUT = timedelta(minutes=30)  # the project's CHAT_SESSION_IDLE_TIMEOUT default


@workflow.defn
class RawSessionWorkflow:
    """Writes its row, then (if `stay_open`) waits for messages until idle, as a chat session does; else completes."""

    @workflow.init
    def __init__(self, user_id: str, session_id: str, stay_open: bool) -> None:
        self.session_id = session_id
        self.started = False
        self.count = 0

    @workflow.run
    async def run(self, user_id: str, session_id: str, stay_open: bool) -> int:
        await workflow.execute_activity(raw_log_session_start, args=[user_id, session_id], **DB_OPTIONS)
        self.started = True
        if stay_open:
            seen = -1
            while seen != self.count:
                seen = self.count
                try:  # an idle timer, reset by each message, as the session's idle timeout is
                    await workflow.wait_condition(lambda s=seen: self.count != s, timeout=IDLE_TIMEOUT)
                except TimeoutError:
                    break
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.count

    @workflow.update
    async def post_message(self, content: str) -> RawMessage:
        self.count += 1
        message = RawMessage(seq=self.count, role="user", content=content, created_at=workflow.now())
        await workflow.wait_condition(lambda: self.started)
        await workflow.execute_activity(raw_persist_message, args=[self.session_id, message], **DB_OPTIONS)
        return message
