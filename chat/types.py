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
    FAILED = "failed"


# ApplicationError types raised by the workflow's update validators; the service maps them to HTTP answers.
SESSION_ENDED = "SessionEnded"
INVALID_MESSAGE = "InvalidMessage"

# Update ids that the service derives from a client's client_message_id start with this.
CLIENT_UPDATE_PREFIX = "message-"


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


@dataclass(frozen=True)
class SessionCarry:
    """What one run hands to the next on continue-as-new."""

    started_at: datetime
    message_count: int
    last_activity_at: datetime | None
    # Messages posted with a client's id, newest last, so a retry that lands in a later run is answered
    # with the stored message (Temporal deduplicates update ids only within one run).
    keyed_messages: list["KeyedMessage"] = field(default_factory=list)


@dataclass(frozen=True)
class ChatMessageData:
    seq: int
    role: str
    content: str
    created_at: datetime


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


@dataclass(frozen=True)
class SessionEnd:
    session_id: str
    status: SessionStatus
    ended_at: datetime
    message_count: int
    ended_by: str | None = None  # the user id of whoever ended it; None when it timed out
