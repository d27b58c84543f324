import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from chat.types import (
    FINISH_TURN,
    INVALID_MESSAGE,
    LOG_SESSION_END,
    LOG_SESSION_START,
    MARK_REPLACED,
    NOTHING_TO_REGENERATE,
    RUN_TOOL,
    SESSION_ENDED,
    STORE_MESSAGE,
    TAKE_MODEL_STEP,
    TOOL_CALL_NOT_WAITING,
    ChatMessageData,
    Decision,
    MessageRecord,
    MessageStatus,
    ModelStep,
    SessionEnd,
    SessionOptions,
    SessionState,
    SessionStatus,
    StepResult,
    ToolCallRef,
    ToolCallStatus,
    ToolDecision,
    ToolOutcome,
    ToolRun,
    Turn,
    TurnEnd,
    TurnResult,
)
from chat.workflows import ChatSessionWorkflow, workflow_id_for
from tests.conftest import wait_until

T = TypeVar("T")


def workflow_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeDatabase:
    """Activities registered under the real names, recording what the workflow asks them to store."""

    starts: list[tuple[str, str]] = field(default_factory=list)
    messages: list[ChatMessageData] = field(default_factory=list)
    ends: list[SessionEnd] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    # Tool calls the model asks for, by reply seq: a reply's first step asks for them, its second answers.
    calls: dict[int, list[ToolCallRef]] = field(default_factory=dict)
    tool_runs: list[ToolRun] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)

    def activities(self, **replacing: object) -> list:
        """The activities, with any replaced by name (`log_session_end=slow_end`)."""

        @activity.defn(name=LOG_SESSION_START)
        async def log_session_start(user_id: str, session_id: str, started_at: datetime | None = None) -> str:
            self.starts.append((user_id, session_id))
            return f"recorded {session_id}"

        @activity.defn(name=STORE_MESSAGE)
        async def store_message(record: MessageRecord) -> None:
            self.messages.append(record.message)

        @activity.defn(name=LOG_SESSION_END)
        async def log_session_end(end: SessionEnd) -> None:
            self.ends.append(end)

        @activity.defn(name=TAKE_MODEL_STEP)
        async def take_model_step(step: ModelStep) -> StepResult:
            if step.step == 0 and step.reply_seq in self.calls:
                return StepResult(calls=self.calls[step.reply_seq], tokens_in=1, tokens_out=1)
            self.turns.append(Turn(step.session_id, step.user_seq, step.reply_seq))
            reply = ChatMessageData(step.reply_seq, "assistant", f"re {step.user_seq}", workflow_now(), model="fake")
            self.messages.append(reply)
            return StepResult(reply=TurnResult(step.reply_seq, MessageStatus.COMPLETE, "fake", 1, 2, reply.created_at))

        @activity.defn(name=FINISH_TURN)
        async def finish_turn(end: TurnEnd) -> TurnResult:
            reply = ChatMessageData(end.reply_seq, "assistant", "", workflow_now(), status=end.status)
            self.messages.append(reply)
            return TurnResult(end.reply_seq, end.status, "fake", 0, 0, reply.created_at)

        @activity.defn(name=MARK_REPLACED)
        async def mark_replaced(record: MessageRecord) -> None:
            self.replaced.append(record.message.seq)

        @activity.defn(name=RUN_TOOL)
        async def run_tool(run: ToolRun) -> ToolOutcome:
            self.tool_runs.append(run)
            settled = {Decision.DENIED: ToolCallStatus.DENIED, Decision.EXPIRED: ToolCallStatus.EXPIRED}
            failed = run.decision in (Decision.STOPPED, Decision.OVER_LIMIT)
            status = ToolCallStatus.FAILED if failed else settled.get(run.decision, ToolCallStatus.DONE)
            return ToolOutcome(run.call_id, status)

        defined = [
            log_session_start,
            store_message,
            log_session_end,
            take_model_step,
            finish_turn,
            run_tool,
            mark_replaced,
        ]
        return [replacing.pop(fn.__name__, fn) for fn in defined] + list(replacing.values())

    def user_messages(self) -> list[ChatMessageData]:
        return [m for m in self.messages if m.role == "user"]


@asynccontextmanager
async def session(
    client: Client, activities: list, options: SessionOptions | None = None, session_id: str = "s-1"
) -> AsyncIterator[WorkflowHandle]:
    """A session workflow on a fresh task queue, with a real worker running the given activities."""
    task_queue = f"test-{uuid.uuid4()}"
    async with Worker(client, task_queue=task_queue, workflows=[ChatSessionWorkflow], activities=activities):
        yield await client.start_workflow(
            ChatSessionWorkflow.run,
            args=["7", session_id, options or SessionOptions()],
            id=workflow_id_for(f"{session_id}-{uuid.uuid4()}"),
            task_queue=task_queue,
        )


async def event_types(handle: WorkflowHandle) -> list[str]:
    return [EventType.Name(event.event_type) async for event in handle.fetch_history_events()]


async def run_ids(client: Client, handle: WorkflowHandle) -> list[str]:
    """The session's runs, first to last, following each continue-as-new."""
    runs = [handle.first_execution_run_id]
    while True:
        history = await client.get_workflow_handle(handle.id, run_id=runs[-1]).fetch_history()
        last = history.events[-1]
        if not last.HasField("workflow_execution_continued_as_new_event_attributes"):
            return runs
        runs.append(last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id)


@pytest.fixture(scope="session")
async def dev_client(dev_server) -> Client:
    """A client on the dev server: updates need the real server (the time-skipping one hangs on them)."""
    return await Client.connect(dev_server.address)


# Updates on the dev server use these: its timers run in real time, so the idle timeout is an input.
NO_IDLE = SessionOptions(idle_timeout_seconds=3600)


async def test_a_session_logs_its_start_with_the_workflow_inputs(dev_client):
    db = FakeDatabase()
    async with session(dev_client, db.activities(), NO_IDLE, session_id="s-42") as handle:
        await handle.execute_update(ChatSessionWorkflow.end_session)
        await handle.result()

    assert db.starts == [("7", "s-42")]


async def test_an_idle_session_times_out_after_30_minutes(time_skipping_env):
    db = FakeDatabase()
    async with session(time_skipping_env.client, db.activities()) as handle:
        state = await handle.result()  # the time-skipping server jumps over the 30 minutes

    assert state.status == SessionStatus.TIMED_OUT
    assert timedelta(minutes=30) <= state.ended_at - state.started_at < timedelta(minutes=30, seconds=1)
    assert [end.status for end in db.ends] == [SessionStatus.TIMED_OUT]


async def test_each_message_restarts_the_idle_timeout(dev_client):
    db = FakeDatabase()
    idle = timedelta(seconds=3)
    async with session(dev_client, db.activities(), SessionOptions(idle_timeout_seconds=idle.total_seconds())) as h:
        await asyncio.sleep(1)  # part of the idle time passes (the test's input, not a wait for a condition)
        message = await h.execute_update(ChatSessionWorkflow.post_message, "still here")
        state = await h.result()

    assert state.status == SessionStatus.TIMED_OUT
    assert state.ended_at - message.created_at >= idle
    assert state.ended_at - state.started_at >= idle + (message.created_at - state.started_at)


async def answered(handle: WorkflowHandle) -> SessionState:
    """The session's state once no reply is waiting to be written."""
    return await wait_until(
        lambda: handle.query(ChatSessionWorkflow.get_state),
        lambda state: state.replies_pending == 0,
    )


async def test_each_message_and_its_reply_take_consecutive_sequence_numbers_and_are_stored(dev_client):
    db = FakeDatabase()
    async with session(dev_client, db.activities(), NO_IDLE) as handle:
        posted = [await handle.execute_update(ChatSessionWorkflow.post_message, f"m{i}") for i in range(1, 4)]
        state = await answered(handle)
        final = await handle.execute_update(ChatSessionWorkflow.end_session)
        await handle.result()

    assert [(m.seq, m.reply_seq, m.content) for m in posted] == [(1, 2, "m1"), (3, 4, "m2"), (5, 6, "m3")]
    assert [(m.seq, m.role) for m in db.messages] == [(n, "user" if n % 2 else "assistant") for n in range(1, 7)]
    assert db.turns == [Turn("s-1", n, n + 1) for n in (1, 3, 5)]
    assert (state.status, state.message_count) == ("active", 6)
    assert (final.status, final.message_count) == (SessionStatus.ENDED, 6)
    assert db.ends == [SessionEnd("s-1", SessionStatus.ENDED, final.ended_at, 6)]


async def test_concurrent_messages_never_share_a_sequence_number_and_are_answered_in_order(dev_client):
    db = FakeDatabase()
    async with session(dev_client, db.activities(), NO_IDLE) as handle:
        posted = await asyncio.gather(
            *(handle.execute_update(ChatSessionWorkflow.post_message, f"m{i}") for i in range(20))
        )
        await answered(handle)
        await handle.execute_update(ChatSessionWorkflow.end_session)

    assert sorted(m.seq for m in posted) == list(range(1, 41, 2))
    assert all(m.reply_seq == m.seq + 1 for m in posted)
    assert [turn.user_seq for turn in db.turns] == list(range(1, 41, 2))  # answered once each, in order


async def test_messages_survive_continue_as_new_in_order_and_once(dev_client):
    db = FakeDatabase()
    options = SessionOptions(idle_timeout_seconds=3600, max_messages_per_run=3)
    async with session(dev_client, db.activities(), options) as handle:
        posted = []
        for i in range(1, 11):
            posted.append(await handle.execute_update(ChatSessionWorkflow.post_message, f"m{i}"))
            await answered(handle)
        final = await handle.execute_update(ChatSessionWorkflow.end_session)
        await handle.result()
        runs = await run_ids(dev_client, handle)
    assert [m.seq for m in posted] == list(range(1, 21, 2))
    assert [(m.seq, m.content) for m in db.user_messages()] == [(2 * i - 1, f"m{i}") for i in range(1, 11)]
    assert [turn.reply_seq for turn in db.turns] == list(range(2, 21, 2))
    assert final.message_count == 20
    assert db.starts == [("7", "s-1")]  # logged once, not once per run
    assert len(runs) == 4  # 3 + 3 + 3 messages, then the 10th and the end in the fourth run


async def test_rejected_updates_leave_no_trace_in_history(dev_client):
    db = FakeDatabase()
    options = SessionOptions(idle_timeout_seconds=3600, max_message_length=10)
    async with session(dev_client, db.activities(), options) as handle:
        await handle.execute_update(ChatSessionWorkflow.post_message, "hello")
        rejections = []
        for content in ["", "   ", "x" * 11]:
            with pytest.raises(WorkflowUpdateFailedError) as failure:
                await handle.execute_update(ChatSessionWorkflow.post_message, content)
            rejections.append((failure.value.cause.type, failure.value.cause.message))
        await handle.execute_update(ChatSessionWorkflow.end_session)
        await handle.result()
        events = await event_types(handle)

    assert rejections == [
        (INVALID_MESSAGE, "content must not be empty."),
        (INVALID_MESSAGE, "content must not be empty."),
        (INVALID_MESSAGE, "content must be at most 10 characters."),
    ]
    assert events.count("EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED") == 2  # "hello" and the end
    assert not [e for e in events if "UPDATE_REJECTED" in e]
    assert [m.content for m in db.user_messages()] == ["hello"]


async def test_messages_and_a_second_end_are_rejected_while_the_session_is_ending(dev_client):
    db = FakeDatabase()
    release = asyncio.Event()

    @activity.defn(name=LOG_SESSION_END)
    async def slow_end(end: SessionEnd) -> None:
        await release.wait()
        db.ends.append(end)

    async with session(dev_client, db.activities(log_session_end=slow_end), NO_IDLE) as handle:
        ending = asyncio.create_task(handle.execute_update(ChatSessionWorkflow.end_session))
        await wait_until(lambda: handle.query(ChatSessionWorkflow.get_state), lambda s: s.status == "ended")
        with pytest.raises(WorkflowUpdateFailedError) as post:
            await handle.execute_update(ChatSessionWorkflow.post_message, "too late")
        with pytest.raises(WorkflowUpdateFailedError) as second_end:
            await handle.execute_update(ChatSessionWorkflow.end_session)
        release.set()
        final = await ending
        await handle.result()

    assert (post.value.cause.type, post.value.cause.message) == (SESSION_ENDED, "Session 's-1' has ended.")
    assert second_end.value.cause.type == SESSION_ENDED
    assert (final.status, len(db.ends), db.messages) == (SessionStatus.ENDED, 1, [])


async def test_a_message_after_the_session_closed_meets_a_closed_workflow(dev_client):
    db = FakeDatabase()
    async with session(dev_client, db.activities(), NO_IDLE) as handle:
        await handle.execute_update(ChatSessionWorkflow.end_session)
        await handle.result()
        with pytest.raises(RPCError) as failure:
            await handle.execute_update(ChatSessionWorkflow.post_message, "too late")

    assert failure.value.status == RPCStatusCode.NOT_FOUND
    assert db.messages == []


async def test_the_session_retries_a_failing_database_write_until_it_succeeds(time_skipping_env):
    db = FakeDatabase()
    attempts: list[int] = []

    @activity.defn(name=LOG_SESSION_START)
    async def flaky(user_id: str, session_id: str, started_at: datetime | None = None) -> str:
        attempts.append(activity.info().attempt)
        if len(attempts) < 4:
            raise RuntimeError("database is down")
        return "ok"

    async with session(time_skipping_env.client, [flaky, *db.activities()[1:]]) as handle:
        state = await handle.result()

    assert attempts == [1, 2, 3, 4]
    assert state.status == SessionStatus.TIMED_OUT


async def test_the_session_fails_at_once_on_a_non_retryable_start_error(time_skipping_env):
    db = FakeDatabase()
    attempts: list[int] = []

    @activity.defn(name=LOG_SESSION_START)
    async def reject(user_id: str, session_id: str, started_at: datetime | None = None) -> str:
        attempts.append(activity.info().attempt)
        raise ApplicationError("user 7 does not exist", non_retryable=True)

    async with session(time_skipping_env.client, [reject, *db.activities()[1:]]) as handle:
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert attempts == [1]


def test_workflow_module_imports_no_django_and_nothing_of_the_app_but_its_types():
    code = (
        "import sys, chat.workflows; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'chat', 'rest_framework')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['chat', 'chat.types', 'chat.workflows']"


async def test_a_session_started_with_only_user_and_session_id_uses_the_default_options(dev_client):
    db = FakeDatabase()
    task_queue = f"test-{uuid.uuid4()}"
    async with Worker(dev_client, task_queue=task_queue, workflows=[ChatSessionWorkflow], activities=db.activities()):
        handle = await dev_client.start_workflow(
            ChatSessionWorkflow.run, args=["7", "bare"], id=f"bare-{task_queue}", task_queue=task_queue
        )
        state = await handle.query(ChatSessionWorkflow.get_state)
        await handle.execute_update(ChatSessionWorkflow.end_session)

    assert state.idle_timeout_seconds == 30 * 60


async def test_a_client_keyed_retry_that_lands_in_a_later_run_returns_the_stored_message(dev_client):
    db = FakeDatabase()
    options = SessionOptions(idle_timeout_seconds=3600, max_messages_per_run=1)
    async with session(dev_client, db.activities(), options) as handle:
        first = await handle.execute_update(ChatSessionWorkflow.post_message, "once", id="message-k1")
        # The run continues-as-new after each answered message here, so the retry reaches a new run, where
        # Temporal's own deduplication of update ids no longer applies.
        latest = dev_client.get_workflow_handle(handle.id)
        await wait_until(latest.describe, lambda described: described.run_id != handle.first_execution_run_id)
        retry = await handle.execute_update(ChatSessionWorkflow.post_message, "once", id="message-k1")
        other = await handle.execute_update(ChatSessionWorkflow.post_message, "next", id="message-k2")
        state = await handle.query(ChatSessionWorkflow.get_state)
        await handle.execute_update(ChatSessionWorkflow.end_session)
        await handle.result()
        runs = await run_ids(dev_client, handle)

    assert retry == first
    assert (first.seq, other.seq, state.message_count) == (1, 3, 4)
    assert [m.content for m in db.user_messages()] == ["once", "next"]
    assert len(runs) >= 2


async def test_a_nul_character_is_refused_by_the_workflow_itself(dev_client):
    db = FakeDatabase()
    async with session(dev_client, db.activities(), NO_IDLE) as handle:
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            await handle.execute_update(ChatSessionWorkflow.post_message, "a\x00b")
        await handle.execute_update(ChatSessionWorkflow.end_session)

    assert (failure.value.cause.type, failure.value.cause.message) == (
        INVALID_MESSAGE, "content must not contain NUL characters."
    )  # fmt: skip
    assert db.messages == []


async def test_stop_cancels_the_reply_being_written_which_keeps_its_text_and_the_session_stays_open(dev_client):
    db = FakeDatabase()
    writing = asyncio.Event()

    @activity.defn(name=TAKE_MODEL_STEP)
    async def endless_turn(turn: ModelStep) -> StepResult:
        writing.set()
        try:
            while True:  # writes until stopped; the stop arrives with a heartbeat's answer
                activity.heartbeat()
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            db.messages.append(ChatMessageData(turn.reply_seq, "assistant", "so far", workflow_now(), status="stopped"))
            raise

    options = SessionOptions(idle_timeout_seconds=3600, turn_heartbeat_seconds=1)
    async with session(dev_client, db.activities(take_model_step=endless_turn), options) as handle:
        posted = await handle.execute_update(ChatSessionWorkflow.post_message, "tell me everything")
        await asyncio.wait_for(writing.wait(), 10)
        stopped = await handle.execute_update(ChatSessionWorkflow.stop_reply)
        state = await handle.query(ChatSessionWorkflow.get_state)
        again = await handle.execute_update(ChatSessionWorkflow.stop_reply)

    stored = [(m.seq, m.role, m.content, m.status) for m in db.messages]
    assert (stopped, again) == (True, False)
    # The activity's own record of what it wrote, then the workflow's, which the first write of a seq outlives.
    assert stored == [(1, "user", "tell me everything", "complete"), (2, "assistant", "so far", "stopped"),
                      (2, "assistant", "", "stopped")]  # fmt: skip
    assert (state.status, state.writing_reply, state.replies_pending) == ("active", None, 0)
    assert posted.reply_seq == 2


async def test_a_reply_that_fails_every_attempt_is_recorded_as_failed_and_the_next_message_is_answered(dev_client):
    db = FakeDatabase()
    working_turn = db.activities()[3]
    attempts: list[int] = []

    @activity.defn(name=TAKE_MODEL_STEP)
    async def flaky_turn(turn: ModelStep) -> StepResult:
        attempts.append(activity.info().attempt)
        if turn.user_seq == 1:
            raise ApplicationError("the model is down")
        return await working_turn(turn)

    options = SessionOptions(idle_timeout_seconds=3600, turn_attempts=2)
    async with session(dev_client, db.activities(take_model_step=flaky_turn), options) as handle:
        await handle.execute_update(ChatSessionWorkflow.post_message, "first")
        await handle.execute_update(ChatSessionWorkflow.post_message, "second")
        state = await answered(handle)

    assert attempts == [1, 2, 1]
    assert [(m.seq, m.role, m.status) for m in db.messages if m.role == "assistant"] == [
        (2, "assistant", "failed"),
        (4, "assistant", "complete"),
    ]
    assert (state.status, state.message_count) == ("active", 4)


SEARCH = ToolCallRef("call-2-0-0", "search_chats")
EMAIL = ToolCallRef("call-2-0-1", "send_email", needs_approval=True)


async def awaiting(handle: WorkflowHandle, call_id: str) -> SessionState:
    return await wait_until(
        lambda: handle.query(ChatSessionWorkflow.get_state), lambda state: state.awaiting_approval == call_id
    )


async def test_a_call_that_needs_approval_waits_for_it_and_refused_decisions_leave_no_trace(dev_client):
    db = FakeDatabase(calls={2: [SEARCH, EMAIL]})
    async with session(dev_client, db.activities(), NO_IDLE) as handle:
        await handle.execute_update(ChatSessionWorkflow.post_message, "search, then email me")
        waiting = await awaiting(handle, EMAIL.call_id)
        refused = []
        for call_id in ["call-9-9-9", SEARCH.call_id]:  # unknown; needs no decision
            with pytest.raises(WorkflowUpdateFailedError) as failure:
                await handle.execute_update(ChatSessionWorkflow.decide_tool_call, ToolDecision(call_id, True, "7"))
            refused.append(failure.value.cause)
        outcome = await handle.execute_update(
            ChatSessionWorkflow.decide_tool_call, ToolDecision(EMAIL.call_id, True, "7")
        )
        with pytest.raises(WorkflowUpdateFailedError) as twice:
            await handle.execute_update(ChatSessionWorkflow.decide_tool_call, ToolDecision(EMAIL.call_id, False, "7"))
        final = await answered(handle)
        events = await event_types(handle)

    assert (waiting.writing_reply, waiting.replies_pending) == (2, 1)
    assert [cause.type for cause in [*refused, twice.value.cause]] == [TOOL_CALL_NOT_WAITING] * 3
    assert outcome == ToolOutcome(EMAIL.call_id, ToolCallStatus.DONE)
    assert [(run.call_id, run.decision, run.decided_by) for run in db.tool_runs] == [
        (SEARCH.call_id, None, None),
        (EMAIL.call_id, Decision.APPROVED, "7"),
    ]
    assert (final.awaiting_approval, final.message_count) == (None, 2)
    assert events.count("EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED") == 2  # the message and the one decision
    assert not [e for e in events if "UPDATE_REJECTED" in e]


async def test_a_pending_approval_is_carried_over_continue_as_new_and_decided_in_the_next_run(dev_client):
    db = FakeDatabase(calls={2: [EMAIL]})
    options = SessionOptions(idle_timeout_seconds=3600, max_messages_per_run=1)
    async with session(dev_client, db.activities(), options) as handle:
        await handle.execute_update(ChatSessionWorkflow.post_message, "email me")
        await wait_until(lambda: run_ids(dev_client, handle), lambda runs: len(runs) == 2)
        await awaiting(handle, EMAIL.call_id)
        outcome = await handle.execute_update(
            ChatSessionWorkflow.decide_tool_call, ToolDecision(EMAIL.call_id, False, "7", "not now")
        )
        final = await answered(handle)

    assert outcome == ToolOutcome(EMAIL.call_id, ToolCallStatus.DENIED)
    assert [(run.decision, run.reason) for run in db.tool_runs] == [(Decision.DENIED, "not now")]
    assert [m.seq for m in db.messages if m.role == "assistant"] == [2]
    assert final.message_count == 2


async def test_an_approval_expires_and_a_stop_settles_the_calls_not_run(dev_client):
    db = FakeDatabase(calls={2: [EMAIL], 4: [ToolCallRef("call-4-0-0", "send_email", needs_approval=True), SEARCH]})
    options = SessionOptions(idle_timeout_seconds=3600, tool_approval_timeout_seconds=1)
    async with session(dev_client, db.activities(), options) as handle:
        await handle.execute_update(ChatSessionWorkflow.post_message, "email me")
        await answered(handle)  # the approval expires after 1 s
        again = await handle.execute_update(ChatSessionWorkflow.post_message, "again")
        await awaiting(handle, "call-4-0-0")
        stopped = await handle.execute_update(ChatSessionWorkflow.stop_reply)
        final = await answered(handle)

    assert [(run.call_id, run.decision) for run in db.tool_runs] == [
        (EMAIL.call_id, Decision.EXPIRED),
        ("call-4-0-0", Decision.STOPPED),
        (SEARCH.call_id, Decision.STOPPED),
    ]
    assert again.reply_seq == 4
    assert stopped is True
    assert [(m.seq, m.status) for m in db.messages if m.role == "assistant"] == [(2, "complete"), (4, "stopped")]
    assert final.replies_pending == 0


async def test_regenerate_answers_the_last_message_again_under_the_next_seq_and_marks_the_old_reply(dev_client):
    db = FakeDatabase()
    options = SessionOptions(idle_timeout_seconds=3600, max_messages_per_run=2)
    async with session(dev_client, db.activities(), options) as handle:
        with pytest.raises(WorkflowUpdateFailedError) as nothing_yet:
            await handle.execute_update(ChatSessionWorkflow.regenerate)
        await handle.execute_update(ChatSessionWorkflow.post_message, "question")
        await answered(handle)
        first = await handle.execute_update(ChatSessionWorkflow.regenerate)
        await answered(handle)
        await wait_until(lambda: run_ids(dev_client, handle), lambda runs: len(runs) == 2)  # the last turn is carried
        second = await handle.execute_update(ChatSessionWorkflow.regenerate)
        state = await answered(handle)

    assert nothing_yet.value.cause.type == NOTHING_TO_REGENERATE
    assert (first.reply_seq, first.replaces, second.reply_seq, second.replaces) == (3, 2, 4, 3)
    assert db.replaced == [2, 3]
    assert db.turns == [Turn(db.turns[0].session_id, 1, seq) for seq in (2, 3, 4)]  # each answers message 1
    assert state.message_count == 4
