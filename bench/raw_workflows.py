"""The baseline's workflow: the shape of ChatSessionWorkflow with nothing else, and no Django anywhere.

It calls its activities (bench.raw_worker) by name, as the project's workflow calls its own.
"""

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bench.project import DB_RETRY, ChatMessageData, SessionOptions

DEFAULTS = SessionOptions()
DB_OPTIONS = {"start_to_close_timeout": timedelta(seconds=DEFAULTS.activity_timeout_seconds), "retry_policy": DB_RETRY}


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
        await workflow.execute_activity("raw_log_session_start", args=[user_id, session_id], **DB_OPTIONS)
        self.started = True
        seen = -1
        while stay_open and seen != self.count:
            seen = self.count
            try:  # an idle timer, reset by each message, as the session's idle timeout is
                await workflow.wait_condition(lambda s=seen: self.count != s, timeout=DEFAULTS.idle_timeout_seconds)
            except TimeoutError:
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.count

    @workflow.update
    async def post_message(self, content: str) -> ChatMessageData:
        self.count += 1
        message = ChatMessageData(seq=self.count, role="user", content=content, created_at=workflow.now())
        await workflow.wait_condition(lambda: self.started)
        await workflow.execute_activity("raw_persist_message", args=[self.session_id, message], **DB_OPTIONS)
        return message
