"""Values that cross the workflow boundary: workflow inputs, update results, activity arguments.

Plain dataclasses and no Django, so the workflow sandbox can import them; the settings read their defaults.
"""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class SessionStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"
    TIMED_OUT = "timed_out"


# ApplicationError types raised by the workflow's update validators; the service maps them to HTTP answers.
SESSION_ENDED = "SessionEnded"
INVALID_MESSAGE = "InvalidMessage"
TOOL_CALL_NOT_WAITING = "ToolCallNotWaiting"
NOTHING_TO_REGENERATE = "NothingToRegenerate"

# Update ids that the service derives from a client's client_message_id start with this.
CLIENT_UPDATE_PREFIX = "message-"

# The patch that added the assistant's turns: histories recorded before it replay without them.
ASSISTANT_TURNS_PATCH = "assistant-turns"
# The patch after which messages are stored by STORE_MESSAGE (one dataclass) instead of PERSIST_MESSAGE.
STORE_MESSAGE_PATCH = "store-message"
# The patch after which a turn is a loop of model steps and tool calls (TAKE_MODEL_STEP, RUN_TOOL) instead of one
# RUN_TURN activity.
ASSISTANT_TOOLS_PATCH = "assistant-tools"

# The session workflow's activities, by name (the workflow calls them by name: their module needs Django).
LOG_SESSION_START = "log_session_start"
STORE_MESSAGE = "store_message"
PERSIST_MESSAGE = "persist_message"  # the same, in its earlier two-argument shape, for histories recorded before it
LOG_SESSION_END = "log_session_end"
RUN_TURN = "run_turn"  # a whole reply in one activity, for histories recorded before the assistant-tools patch
TAKE_MODEL_STEP = "take_model_step"
RUN_TOOL = "run_tool"
FINISH_TURN = "finish_turn"
MARK_REPLACED = "mark_replaced"
TRIM_EVENT_LOG = "trim_event_log"


class EventType(StrEnum):
    """What a session's event stream carries (the SSE `event:` names)."""

    MESSAGE = "message"  # a stored message, as the REST API returns it
    DELTA = "delta"  # reply text as it is written
    RESET = "reset"  # a retried attempt writes its reply again
    TOOL_CALL = "tool_call"  # the assistant calls a tool: running, or awaiting the user's approval
    TOOL_RESULT = "tool_result"  # a tool call ended: done, failed, denied, expired or unknown
    TURN_FAILED = "turn_failed"
    SESSION_ENDED = "session_ended"


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(StrEnum):
    """How an assistant's reply ended; a user's message is always complete."""

    COMPLETE = "complete"
    STOPPED = "stopped"  # the user stopped it: what was written is kept
    FAILED = "failed"  # the model could not answer, after its retries
    REPLACED = "replaced"  # the user asked for another answer: kept, and not shown to the model again


class ToolCallStatus(StrEnum):
    """Where a tool call the assistant asked for stands."""

    REQUESTED = "requested"  # stored by the model step, not run yet
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # the tool raised, or its arguments were invalid: the model is told why
    DENIED = "denied"
    EXPIRED = "expired"  # nobody decided within CHAT_TOOL_APPROVAL_TIMEOUT
    UNKNOWN = "unknown"  # an attempt that may have had its effect died before recording it; not run again

    @property
    def finished(self) -> bool:
        return self not in (ToolCallStatus.REQUESTED, ToolCallStatus.AWAITING_APPROVAL, ToolCallStatus.RUNNING)


class Decision(StrEnum):
    """What becomes of a tool call before it runs: the user's decision, or the workflow's."""

    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"  # the approval timeout passed
    STOPPED = "stopped"  # the reply was stopped, or the session ended, before the call ran
    OVER_LIMIT = "over_limit"  # the turn had made CHAT_ASSISTANT_MAX_TOOL_CALLS calls already


@dataclass(frozen=True)
class SessionOptions:
    idle_timeout_seconds: float = 30 * 60.0
    max_message_length: int = 4000
    # Start-to-close timeout of each database activity: how long Temporal waits before retrying an attempt
    # whose worker died. Database writes take milliseconds; this bounds recovery from a crashed worker.
    activity_timeout_seconds: float = 10.0
    # Continue-as-new after this many messages in one run, besides whenever Temporal suggests it.
    # None leaves it to Temporal; tests set it low to force continue-as-new.
    max_messages_per_run: int | None = None
    # The assistant's turn: how long one attempt may stream, how soon a dead worker is noticed (its heartbeats
    # stop), and how many attempts a reply gets before it is recorded as failed.
    turn_timeout_seconds: float = 300.0
    turn_heartbeat_seconds: float = 3.0
    turn_attempts: int = 5
    # Tool calls: at most this many in one reply; a call that needs approval waits this long for a decision.
    max_tool_calls: int = 8
    tool_approval_timeout_seconds: float = 24 * 3600.0


@dataclass(frozen=True)
class SessionCarry:
    """What one run hands to the next on continue-as-new."""

    started_at: datetime
    message_count: int
    last_activity_at: datetime | None
    # Messages posted with a client's id, newest last, so a retry that lands in a later run is answered
    # with the stored message (Temporal deduplicates update ids only within one run).
    keyed_messages: list["KeyedMessage"] = field(default_factory=list)
    # User messages still waiting for the assistant's reply, oldest first.
    pending_turns: list["Turn"] = field(default_factory=list)
    # How far the first of them had got (a run that continued as new while a tool call awaited approval).
    turn_progress: "TurnProgress | None" = None
    # The last user message answered, and its reply: what regenerate answers again.
    last_turn: "Turn | None" = None


@dataclass(frozen=True)
class ChatMessageData:
    seq: int
    role: str
    content: str
    created_at: datetime
    # A user message: the seq its reply will take (None in sessions recorded before the assistant).
    reply_seq: int | None = None
    # An assistant message: how it ended, the model that wrote it, its usage.
    status: MessageStatus = MessageStatus.COMPLETE
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass(frozen=True)
class EventRetention:
    """How long ended sessions' events are kept: the maintenance workflow's and its activity's input."""

    retention_seconds: float


@dataclass(frozen=True)
class MessageRecord:
    """A message to store: the store activity's input."""

    session_id: str
    message: ChatMessageData


@dataclass(frozen=True)
class Turn:
    """The assistant's reply to one user message: the turn activity's input."""

    session_id: str
    user_seq: int
    reply_seq: int


@dataclass(frozen=True)
class TurnResult:
    """What the workflow keeps of a reply (the text goes to the database and the event log, never the history)."""

    reply_seq: int
    status: MessageStatus
    model: str
    tokens_in: int
    tokens_out: int
    completed_at: datetime


def tool_call_id(reply_seq: int, step: int, index: int) -> str:
    """A tool call's id: its place in the session (the model's own ids need not be unique), and the idempotency key
    of its effect."""
    return f"{tool_call_prefix(reply_seq, step)}{index}"


def tool_call_prefix(reply_seq: int, step: int) -> str:
    return f"call-{reply_seq}-{step}-"


@dataclass(frozen=True)
class ToolCallRef:
    """A tool call as the workflow knows it: its id and name, never its arguments or result (those are in the
    database). `finished`: the model step settled it already (its arguments were invalid)."""

    call_id: str
    name: str
    needs_approval: bool = False
    finished: bool = False


@dataclass
class TurnProgress:
    """How far a reply's turn has got: model steps taken, tool calls made, and the calls still to run."""

    steps: int = 0
    calls_made: int = 0
    calls: list[ToolCallRef] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    # When the first call of `calls` stops waiting for approval, once its wait has begun.
    approval_deadline: datetime | None = None


@dataclass(frozen=True)
class ModelStep:
    """One model request of a reply's turn: the model step activity's input."""

    session_id: str
    user_seq: int
    reply_seq: int
    step: int
    calls_left: int  # 0: the model is sent no tools, and told the limit was reached
    tokens_in: int = 0  # spent by the turn's earlier steps, added to the stored reply's
    tokens_out: int = 0


@dataclass(frozen=True)
class StepResult:
    """What a model step returns: the tool calls it asked for, or, when it asked for none, the stored reply."""

    calls: list[ToolCallRef] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    reply: "TurnResult | None" = None


@dataclass(frozen=True)
class ToolRun:
    """A tool call to run or settle: the tool activity's input. `decision` is None for a call that needed none."""

    session_id: str
    call_id: str
    name: str
    decision: Decision | None = None
    decided_by: str | None = None  # the user id of whoever approved or denied it
    reason: str = ""


@dataclass(frozen=True)
class ToolOutcome:
    call_id: str
    status: ToolCallStatus


@dataclass(frozen=True)
class ToolDecision:
    """A user's approval or denial of a tool call: the decide_tool_call update's input."""

    call_id: str
    approve: bool
    decided_by: str
    reason: str = ""


@dataclass(frozen=True)
class Regeneration:
    """The regenerate update's answer: the seq the new reply takes, and the one it replaces."""

    reply_seq: int
    replaces: int


@dataclass(frozen=True)
class TurnEnd:
    """A turn that ended before the model finished (stopped, failed, or the session ended): the reply to store,
    with the text its model steps wrote."""

    session_id: str
    reply_seq: int
    status: MessageStatus
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass(frozen=True)
class KeyedMessage:
    update_id: str
    message: ChatMessageData


@dataclass(frozen=True)
class SessionState:
    session_id: str
    user_id: str
    status: SessionStatus
    message_count: int
    started_at: datetime
    last_activity_at: datetime | None
    ended_at: datetime | None
    idle_timeout_seconds: float
    writing_reply: int | None = None  # the seq of the assistant's reply being written, if one is
    replies_pending: int = 0  # user messages whose reply is not written yet (the one being written included)
    awaiting_approval: str | None = None  # the id of the tool call that waits for the user's decision, if one does


@dataclass(frozen=True)
class SessionEnd:
    session_id: str
    status: SessionStatus
    ended_at: datetime
    message_count: int
    ended_by: str | None = None  # the user id of whoever ended it; None when it timed out
