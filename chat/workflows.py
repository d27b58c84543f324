"""The session workflow. Deterministic code only: no Django, no I/O, no clocks outside `workflow.*`.

Activities are called by name: their module needs Django, which must not enter the workflow sandbox.
"""

from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.converter import value_to_type
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from chat.types import (
        ASSISTANT_TOOLS_PATCH,
        ASSISTANT_TURNS_PATCH,
        CLIENT_UPDATE_PREFIX,
        FINISH_TURN,
        INVALID_MESSAGE,
        LOG_SESSION_END,
        LOG_SESSION_START,
        MARK_REPLACED,
        NOTHING_TO_REGENERATE,
        PERSIST_MESSAGE,
        RUN_TOOL,
        RUN_TURN,
        SESSION_ENDED,
        STORE_MESSAGE,
        STORE_MESSAGE_PATCH,
        TAKE_MODEL_STEP,
        TOOL_CALL_NOT_WAITING,
        TRIM_EVENT_LOG,
        ChatMessageData,
        Decision,
        EventRetention,
        KeyedMessage,
        MessageRecord,
        MessageStatus,
        ModelStep,
        Regeneration,
        Role,
        SessionCarry,
        SessionEnd,
        SessionOptions,
        SessionState,
        SessionStatus,
        StepResult,
        ToolCallRef,
        ToolDecision,
        ToolOutcome,
        ToolRun,
        Turn,
        TurnEnd,
        TurnProgress,
        TurnResult,
        tool_call_prefix,
    )

T = TypeVar("T")

# Database writes are retried until they succeed: a session's record must not be lost to a
# database outage. Only errors raised as non-retryable (bad input) stop the retries.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=30)
)


# How many client-keyed messages a session remembers for deduplicating retries across continue-as-new.
KEYED_MESSAGES_KEPT = 100
# How many tool-call decisions and outcomes a run remembers (for decide_tool_call's answers).
DECISIONS_KEPT = 50


class _Interrupted(Exception):
    """The reply was stopped, or the session ended, between the steps of a turn."""


def workflow_id_for(session_id: str) -> str:
    return f"chat-session-{session_id}"


def _typed(cls: type[T], value: T | dict | None) -> T | None:
    # The SDK decodes arguments by type hint only when every parameter was sent; a start that omits
    # the trailing optional ones (the CLI, another SDK) hands the rest over as plain dicts.
    return value_to_type(cls, value, []) if isinstance(value, dict) else value


@workflow.defn
class ChatSessionWorkflow:
    """One chat session, open until ended or idle; the owner of its messages' order."""

    @workflow.init
    def __init__(
        self, user_id: str, session_id: str, options: SessionOptions | None = None, carry: SessionCarry | None = None
    ) -> None:
        carry = _typed(SessionCarry, carry)
        self.user_id = user_id
        self.session_id = session_id
        self.options = _typed(SessionOptions, options) or SessionOptions()
        self.status = SessionStatus.ACTIVE
        self.started_at: datetime = carry.started_at if carry else workflow.info().workflow_start_time
        self.message_count = carry.message_count if carry else 0
        self.last_activity_at = carry.last_activity_at if carry else None
        self.ended_at: datetime | None = None
        self.keyed: dict[str, ChatMessageData] = {k.update_id: k.message for k in carry.keyed_messages} if carry else {}
        self.start_logged = carry is not None
        self.messages_this_run = 0
        self.persisting = 0
        # User messages waiting for the assistant's reply, answered one at a time, oldest first.
        self.pending_turns: list[Turn] = list(carry.pending_turns) if carry else []
        self.unstored: set[int] = set()  # user messages numbered but not yet stored (none at continue-as-new)
        self.turn: ActivityHandle | None = None  # the reply's activity (its model step) while one runs
        self.last_reply_status: MessageStatus | None = None
        # The turn of pending_turns[0] when it runs as model steps and tool calls (carried over continue-as-new).
        self.progress: TurnProgress | None = carry.turn_progress if carry else None
        self.stopping = False  # the user pressed Stop: the turn ends at its next step
        self.decisions: dict[str, ToolDecision] = {}
        self.outcomes: dict[str, ToolOutcome] = {}
        self.last_turn: Turn | None = carry.last_turn if carry else None

    @workflow.run
    async def run(
        self, user_id: str, session_id: str, options: SessionOptions | None = None, carry: SessionCarry | None = None
    ) -> SessionState:
        if not self.start_logged:
            await workflow.execute_activity(
                LOG_SESSION_START, args=[user_id, session_id, self.started_at], **self._db()
            )
            self.start_logged = True
        self._show()
        while self.status == SessionStatus.ACTIVE:
            if self.pending_turns:
                await self._answer(self.pending_turns[0])
                continue
            if self._continue_as_new_due() and workflow.all_handlers_finished():
                workflow.continue_as_new(args=[user_id, session_id, self.options, self._carry()])
            idle_left = (self._idle_deadline() - workflow.now()).total_seconds()
            if idle_left <= 0:
                if workflow.all_handlers_finished():
                    await self._close(SessionStatus.TIMED_OUT)
                else:  # a message is still being stored: the session is not idle yet
                    await workflow.wait_condition(workflow.all_handlers_finished)
                continue
            try:
                await workflow.wait_condition(
                    lambda seen=self.message_count: (
                        self.status != SessionStatus.ACTIVE
                        or self.message_count != seen
                        or bool(self.pending_turns)
                        or (self._continue_as_new_due() and workflow.all_handlers_finished())
                    ),
                    timeout=idle_left,
                    timeout_summary="idle timeout",
                )
            except TimeoutError:
                pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state()

    @workflow.update
    async def post_message(self, content: str) -> ChatMessageData:
        """Stores a user message and queues the assistant's reply to it, whose seq is the next one."""
        update = workflow.current_update_info()
        key = update.id if update and update.id.startswith(CLIENT_UPDATE_PREFIX) else None
        if key in self.keyed:  # a client's retry that reached a later run: the message is already stored
            return self.keyed[key]
        answered = workflow.patched(ASSISTANT_TURNS_PATCH)
        # Sequence numbers are taken before any await, so concurrent posts never share one; the reply's is taken
        # with its message's, so the answer can name it and replies keep their messages' order.
        self.message_count += 2 if answered else 1
        self.messages_this_run += 1
        reply_seq = self.message_count if answered else None
        message = ChatMessageData(
            seq=self.message_count - 1 if answered else self.message_count,
            role=Role.USER,
            content=content,
            created_at=workflow.now(),
            reply_seq=reply_seq,
        )
        self.last_activity_at = message.created_at
        if reply_seq is not None:  # queued now, in seq order; answered once stored
            self.pending_turns.append(Turn(self.session_id, message.seq, reply_seq))
            self.unstored.add(message.seq)
        self.persisting += 1
        try:
            await workflow.wait_condition(lambda: self.start_logged)
            await self._store(message)
        finally:
            self.persisting -= 1
        self.unstored.discard(message.seq)
        if key:
            self.keyed[key] = message
            while len(self.keyed) > KEYED_MESSAGES_KEPT:
                del self.keyed[next(iter(self.keyed))]
        self._show()
        return message

    @post_message.validator
    def _validate_post_message(self, content: str) -> None:
        self._require_active()
        if not content.strip():
            raise ApplicationError("content must not be empty.", type=INVALID_MESSAGE)
        if "\x00" in content:  # no database stores it; accepted, its write would be retried forever
            raise ApplicationError("content must not contain NUL characters.", type=INVALID_MESSAGE)
        if len(content) > self.options.max_message_length:
            raise ApplicationError(
                f"content must be at most {self.options.max_message_length} characters.", type=INVALID_MESSAGE
            )

    @workflow.update
    async def end_session(self, ended_by: str | None = None) -> SessionState:
        """Ends the session; `ended_by` is the user id of whoever ended it (the owner, or a staff member)."""
        await self._close(SessionStatus.ENDED, ended_by)
        return self.state()

    @end_session.validator
    def _validate_end_session(self, ended_by: str | None = None) -> None:
        self._require_active()

    @workflow.update
    async def stop_reply(self) -> bool:
        """Stops the reply being written, keeping what it wrote; False when none was (or it finished first)."""
        if self.turn is None and self.progress is None:
            return False
        stopping = self.pending_turns[0].reply_seq
        self.stopping = True
        if self.turn is not None:
            self.turn.cancel()
        await workflow.wait_condition(lambda: not self.pending_turns or self.pending_turns[0].reply_seq != stopping)
        return self.last_reply_status == MessageStatus.STOPPED

    @stop_reply.validator
    def _validate_stop_reply(self) -> None:
        self._require_active()

    @workflow.update
    async def regenerate(self) -> Regeneration:
        """Answers the last answered message again: its reply is kept, marked replaced, and a new one takes the next
        seq."""
        assert self.last_turn is not None  # the validator's
        replaced = self.last_turn
        self.message_count += 1
        self.messages_this_run += 1
        turn = Turn(self.session_id, replaced.user_seq, self.message_count)
        self.pending_turns.append(turn)  # queued before any await, so a message posted meanwhile is answered after
        self.last_activity_at = workflow.now()
        self.persisting += 1
        try:
            await workflow.execute_activity(
                MARK_REPLACED, MessageRecord(self.session_id, self._replaced(replaced.reply_seq)), **self._db()
            )
        finally:
            self.persisting -= 1
        self._show()
        return Regeneration(turn.reply_seq, replaced.reply_seq)

    @regenerate.validator
    def _validate_regenerate(self) -> None:
        self._require_active()
        if self.last_turn is None or self.pending_turns:
            raise ApplicationError(
                "There is no finished reply to answer again: none yet, or one is being written.",
                type=NOTHING_TO_REGENERATE,
            )

    def _replaced(self, seq: int) -> ChatMessageData:
        return ChatMessageData(seq, Role.ASSISTANT, "", workflow.now(), status=MessageStatus.REPLACED)

    @workflow.update
    async def decide_tool_call(self, decision: ToolDecision) -> ToolOutcome:
        """Approves or denies the tool call that waits for the user; answers once the call has run (or not)."""
        self.decisions[decision.call_id] = decision
        _forget_oldest(self.decisions, DECISIONS_KEPT)
        await workflow.wait_condition(
            lambda: decision.call_id in self.outcomes or not self._call_pending(decision.call_id)
        )
        if decision.call_id not in self.outcomes:  # the step that was reporting it did not ask for it
            raise ApplicationError(self._not_waiting(decision.call_id), type=TOOL_CALL_NOT_WAITING)
        return self.outcomes[decision.call_id]

    @decide_tool_call.validator
    def _validate_decide_tool_call(self, decision: ToolDecision) -> None:
        self._require_active()
        known = self.progress is not None and any(  # the waiting call, or one after it in the same step
            call.call_id == decision.call_id and call.needs_approval and not call.finished
            for call in self.progress.calls
        )
        # A client may see the call (the step's activity tells the event log) a moment before the workflow has the
        # step's result: a decision for a call of the step being reported waits for it in the handler.
        reported = self.turn is not None and self._of_current_step(decision.call_id)
        if decision.call_id in self.decisions or not (known or reported):
            raise ApplicationError(self._not_waiting(decision.call_id), type=TOOL_CALL_NOT_WAITING)

    def _not_waiting(self, call_id: str) -> str:
        return f"Tool call {call_id!r} is not waiting for a decision."

    def _of_current_step(self, call_id: str) -> bool:
        return (
            self.progress is not None
            and bool(self.pending_turns)
            and call_id.startswith(tool_call_prefix(self.pending_turns[0].reply_seq, self.progress.steps))
        )

    def _call_pending(self, call_id: str) -> bool:
        """Whether the turn may still run this call: it is among the step's calls, or its step is being reported."""
        if self.progress is None:
            return False
        if any(call.call_id == call_id for call in self.progress.calls):
            return True
        return self.turn is not None and self._of_current_step(call_id)

    @workflow.query
    def get_state(self) -> SessionState:
        return self.state()

    def state(self) -> SessionState:
        return SessionState(
            session_id=self.session_id,
            user_id=self.user_id,
            status=self.status,
            message_count=self.message_count,
            started_at=self.started_at,
            last_activity_at=self.last_activity_at,
            ended_at=self.ended_at,
            idle_timeout_seconds=self.options.idle_timeout_seconds,
            writing_reply=self.pending_turns[0].reply_seq if self.turn or self.progress else None,
            replies_pending=len(self.pending_turns),
            awaiting_approval=self._awaiting_approval(),
        )

    def _awaiting_approval(self) -> str | None:
        """The id of the tool call that waits for the user's decision, if one does."""
        if self.progress is None or not self.progress.calls or self.progress.approval_deadline is None:
            return None
        return self.progress.calls[0].call_id

    def _require_active(self) -> None:
        if self.status != SessionStatus.ACTIVE:
            raise ApplicationError(f"Session {self.session_id!r} has {self.status.value}.", type=SESSION_ENDED)

    async def _close(self, status: SessionStatus, ended_by: str | None = None) -> None:
        self.status = status
        self.ended_at = workflow.now()
        self._show()
        if self.turn is not None:  # the reply being written stops, and is kept as far as it got
            self.turn.cancel()
            await workflow.wait_condition(lambda: self.turn is None)
        await workflow.wait_condition(lambda: self.progress is None)  # a turn between its steps ends at the next
        # Messages already accepted are stored before the end is, so the record never counts a missing message.
        await workflow.wait_condition(lambda: self.persisting == 0)
        await workflow.wait_condition(lambda: self.start_logged)
        end = SessionEnd(self.session_id, status, self.ended_at, self.message_count, ended_by)
        await workflow.execute_activity(LOG_SESSION_END, end, **self._db())

    async def _answer(self, turn: Turn) -> None:
        """Runs the assistant's turn for one user message; a reply that failed or was stopped is recorded too."""
        await workflow.wait_condition(lambda: turn.user_seq not in self.unstored)
        if self.status != SessionStatus.ACTIVE:  # ended meanwhile: the message stays unanswered
            self.pending_turns.pop(0)
            return
        if self.progress is not None or workflow.patched(ASSISTANT_TOOLS_PATCH):
            await self._take_turn(turn, self.progress or TurnProgress())
        else:
            await self._run_turn(turn)
        self.pending_turns.pop(0)
        self.last_turn = turn
        self._show()

    async def _run_turn(self, turn: Turn) -> None:
        """The whole reply in one activity, as histories recorded before the assistant-tools patch have it."""
        self.turn = workflow.start_activity(RUN_TURN, turn, result_type=TurnResult, **self._turn_activity())
        self._show()
        try:
            self._replied(await self.turn)
        except ActivityError as failure:
            status = MessageStatus.STOPPED if isinstance(failure.cause, CancelledError) else MessageStatus.FAILED
            # The first write of a seq wins: a stop the activity already stored, with its text, stays as it is.
            reply = ChatMessageData(turn.reply_seq, Role.ASSISTANT, "", workflow.now(), status=status)
            self.last_activity_at = reply.created_at
            self.last_reply_status = status
            await self._store(reply)
        finally:
            self.turn = None

    async def _take_turn(self, turn: Turn, progress: TurnProgress) -> None:
        """The reply as a loop: a model step, then each tool call it asked for (one activity each; a call that needs
        approval first waits here for the user's decision), then the next step, until the model answers with text.
        Stopped or ended between steps, the calls not yet run are settled as not run and the reply is stored with
        the text its steps wrote."""
        self.progress = progress
        self.stopping = False
        try:
            while True:
                if self._interrupted():
                    raise _Interrupted
                if not progress.calls:
                    step = await self._model_step(turn, progress)
                    if step.reply is not None:
                        self._replied(step.reply)
                        return
                    progress.calls = list(step.calls)
                    progress.tokens_in += step.tokens_in
                    progress.tokens_out += step.tokens_out
                    continue
                call = progress.calls[0]
                if not call.finished:
                    await self._run_tool(call, progress)
                progress.calls.pop(0)
        except _Interrupted:
            await self._end_turn(turn, progress, MessageStatus.STOPPED)
        except ActivityError as failure:  # the model step failed after its retries, or was cancelled (Stop, end)
            stopped = isinstance(failure.cause, CancelledError)
            await self._end_turn(turn, progress, MessageStatus.STOPPED if stopped else MessageStatus.FAILED)
        finally:
            self.progress = None

    async def _model_step(self, turn: Turn, progress: TurnProgress) -> StepResult:
        step = ModelStep(
            turn.session_id,
            turn.user_seq,
            turn.reply_seq,
            step=progress.steps,
            calls_left=max(0, self.options.max_tool_calls - progress.calls_made),
            tokens_in=progress.tokens_in,
            tokens_out=progress.tokens_out,
        )
        self.turn = workflow.start_activity(
            TAKE_MODEL_STEP,
            step,
            result_type=StepResult,
            **self._turn_activity(),
            summary=f"reply {turn.reply_seq}, step {progress.steps + 1}",
        )
        self._show()
        try:
            result = await self.turn
        finally:
            self.turn = None
        progress.steps += 1
        return result

    async def _run_tool(self, call: ToolCallRef, progress: TurnProgress) -> None:
        kind: Decision | None = None  # None: a call that needs no decision
        decision: ToolDecision | None = None  # the user's, when they made it
        if progress.calls_made >= self.options.max_tool_calls:
            kind = Decision.OVER_LIMIT
        elif call.needs_approval:
            kind, decision = await self._decision(call, progress)
        if kind != Decision.OVER_LIMIT:
            progress.calls_made += 1
        run = ToolRun(
            self.session_id,
            call.call_id,
            call.name,
            decision=kind,
            decided_by=decision.decided_by if decision else None,
            reason=decision.reason if decision else "",
        )
        outcome = await workflow.execute_activity(
            RUN_TOOL,
            run,
            result_type=ToolOutcome,
            start_to_close_timeout=timedelta(seconds=self.options.turn_timeout_seconds),
            heartbeat_timeout=timedelta(seconds=self.options.turn_heartbeat_seconds),
            retry_policy=DB_RETRY,
            summary=call.name if kind in (None, Decision.APPROVED) else f"{call.name} ({kind.value})",
        )
        progress.approval_deadline = None
        self.outcomes[call.call_id] = outcome
        _forget_oldest(self.outcomes, DECISIONS_KEPT)
        self._show()

    async def _decision(self, call: ToolCallRef, progress: TurnProgress) -> tuple[Decision, ToolDecision | None]:
        """Waits for the user to approve or deny the call, for at most the approval timeout (carried over
        continue-as-new, which may happen meanwhile)."""
        if progress.approval_deadline is None:
            progress.approval_deadline = workflow.now() + timedelta(seconds=self.options.tool_approval_timeout_seconds)
        self._show()
        while call.call_id not in self.decisions:
            left = (progress.approval_deadline - workflow.now()).total_seconds()
            if left <= 0:
                return Decision.EXPIRED, None
            if self._interrupted():
                raise _Interrupted
            if self._continue_as_new_due() and workflow.all_handlers_finished():
                workflow.continue_as_new(args=[self.user_id, self.session_id, self.options, self._carry()])
            try:
                await workflow.wait_condition(
                    lambda: (
                        call.call_id in self.decisions
                        or self._interrupted()
                        or (self._continue_as_new_due() and workflow.all_handlers_finished())
                    ),
                    timeout=left,
                    timeout_summary=f"approval of {call.name}",
                )
            except TimeoutError:
                pass
        decision = self.decisions[call.call_id]
        return Decision.APPROVED if decision.approve else Decision.DENIED, decision

    async def _end_turn(self, turn: Turn, progress: TurnProgress, status: MessageStatus) -> None:
        """Settles the calls not yet run, then stores the reply as far as its steps wrote it."""
        for call in progress.calls:
            if not call.finished:
                self.outcomes[call.call_id] = await workflow.execute_activity(
                    RUN_TOOL,
                    ToolRun(self.session_id, call.call_id, call.name, decision=Decision.STOPPED),
                    result_type=ToolOutcome,
                    **self._db(),
                    summary=f"{call.name} ({Decision.STOPPED.value})",
                )
        _forget_oldest(self.outcomes, DECISIONS_KEPT)
        progress.calls.clear()
        end = TurnEnd(self.session_id, turn.reply_seq, status, progress.tokens_in, progress.tokens_out)
        self._replied(await workflow.execute_activity(FINISH_TURN, end, result_type=TurnResult, **self._db()))

    def _replied(self, result: TurnResult) -> None:
        self.last_activity_at = result.completed_at  # the stored reply's time, so record and state agree
        self.last_reply_status = result.status

    def _interrupted(self) -> bool:
        return self.stopping or self.status != SessionStatus.ACTIVE

    def _turn_activity(self) -> dict:
        return {
            "start_to_close_timeout": timedelta(seconds=self.options.turn_timeout_seconds),
            "heartbeat_timeout": timedelta(seconds=self.options.turn_heartbeat_seconds),
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=self.options.turn_attempts,
            ),
            # A stop reaches the activity through its heartbeat; it stores what it wrote before it ends.
            "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        }

    async def _store(self, message: ChatMessageData) -> None:
        if workflow.patched(STORE_MESSAGE_PATCH):
            await workflow.execute_activity(STORE_MESSAGE, MessageRecord(self.session_id, message), **self._db())
        else:
            await workflow.execute_activity(PERSIST_MESSAGE, args=[self.session_id, message], **self._db())

    def _db(self) -> dict:
        return {
            "start_to_close_timeout": timedelta(seconds=self.options.activity_timeout_seconds),
            "retry_policy": DB_RETRY,
        }

    def _idle_deadline(self) -> datetime:
        return (self.last_activity_at or self.started_at) + timedelta(seconds=self.options.idle_timeout_seconds)

    def _continue_as_new_due(self) -> bool:
        limit = self.options.max_messages_per_run
        return workflow.info().is_continue_as_new_suggested() or bool(limit and self.messages_this_run >= limit)

    def _carry(self) -> SessionCarry:
        return SessionCarry(
            started_at=self.started_at,
            message_count=self.message_count,
            last_activity_at=self.last_activity_at,
            keyed_messages=[KeyedMessage(key, message) for key, message in self.keyed.items()],
            pending_turns=list(self.pending_turns),
            turn_progress=self.progress,
            last_turn=self.last_turn,
        )

    def _show(self) -> None:
        last = self.last_activity_at.isoformat(timespec="seconds") if self.last_activity_at else "none yet"
        writing = f"writing reply {self.pending_turns[0].reply_seq} · " if self.turn else ""
        awaiting = self._awaiting_approval()
        if awaiting:
            writing = f"reply {self.pending_turns[0].reply_seq} awaits approval of {self.progress.calls[0].name} · "
        workflow.set_current_details(
            f"**{self.status.value}** · {self.message_count} message{'' if self.message_count == 1 else 's'} · "
            f"{writing}last message {last} · idle timeout {self.options.idle_timeout_seconds:g}s"
        )


def _forget_oldest(kept: dict, limit: int) -> None:
    while len(kept) > limit:
        del kept[next(iter(kept))]


@workflow.defn
class ChatMaintenanceWorkflow:
    """The chat app's housekeeping, run by a Temporal Schedule (chat.maintenance): the event log's retention."""

    @workflow.run
    async def run(self, retention: EventRetention) -> int:
        return await workflow.execute_activity(
            TRIM_EVENT_LOG,
            retention,
            result_type=int,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary="trim the events of ended sessions",
        )
