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
        ASSISTANT_TURNS_PATCH,
        CLIENT_UPDATE_PREFIX,
        INVALID_MESSAGE,
        LOG_SESSION_END,
        LOG_SESSION_START,
        PERSIST_MESSAGE,
        RUN_TURN,
        SESSION_ENDED,
        STORE_MESSAGE,
        STORE_MESSAGE_PATCH,
        TRIM_EVENT_LOG,
        ChatMessageData,
        EventRetention,
        KeyedMessage,
        MessageRecord,
        MessageStatus,
        Role,
        SessionCarry,
        SessionEnd,
        SessionOptions,
        SessionState,
        SessionStatus,
        Turn,
        TurnResult,
    )

T = TypeVar("T")

# Database writes are retried until they succeed: a session's record must not be lost to a
# database outage. Only errors raised as non-retryable (bad input) stop the retries.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=30)
)


# How many client-keyed messages a session remembers for deduplicating retries across continue-as-new.
KEYED_MESSAGES_KEPT = 100


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
        self.turn: ActivityHandle[TurnResult] | None = None
        self.last_reply_status: MessageStatus | None = None

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
        if self.turn is None:
            return False
        stopping = self.pending_turns[0].reply_seq
        self.turn.cancel()
        await workflow.wait_condition(lambda: not self.pending_turns or self.pending_turns[0].reply_seq != stopping)
        return self.last_reply_status == MessageStatus.STOPPED

    @stop_reply.validator
    def _validate_stop_reply(self) -> None:
        self._require_active()

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
            writing_reply=self.pending_turns[0].reply_seq if self.turn else None,
            replies_pending=len(self.pending_turns),
        )

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
        self.turn = workflow.start_activity(
            RUN_TURN,
            turn,
            result_type=TurnResult,
            start_to_close_timeout=timedelta(seconds=self.options.turn_timeout_seconds),
            heartbeat_timeout=timedelta(seconds=self.options.turn_heartbeat_seconds),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=self.options.turn_attempts,
            ),
            # A stop reaches the activity through its heartbeat; it stores what it wrote before it ends.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"reply {turn.reply_seq} to message {turn.user_seq}",
        )
        self._show()
        try:
            result = await self.turn
            self.last_activity_at = result.completed_at  # the stored reply's time, so record and state agree
            self.last_reply_status = result.status
        except ActivityError as failure:
            stopped = isinstance(failure.cause, CancelledError)
            status = MessageStatus.STOPPED if stopped else MessageStatus.FAILED
            # The first write of a seq wins: a stop the activity already stored, with its text, stays as it is.
            reply = ChatMessageData(turn.reply_seq, Role.ASSISTANT, "", workflow.now(), status=status)
            self.last_activity_at = reply.created_at
            self.last_reply_status = status
            await self._store(reply)
        finally:
            self.turn = None
        self.pending_turns.pop(0)
        self._show()

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
        )

    def _show(self) -> None:
        last = self.last_activity_at.isoformat(timespec="seconds") if self.last_activity_at else "none yet"
        writing = f"writing reply {self.pending_turns[0].reply_seq} · " if self.turn else ""
        workflow.set_current_details(
            f"**{self.status.value}** · {self.message_count} message{'' if self.message_count == 1 else 's'} · "
            f"{writing}last message {last} · idle timeout {self.options.idle_timeout_seconds:g}s"
        )


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
