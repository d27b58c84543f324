"""The chat app's errors. chatproject.api maps each to its HTTP status; the admin and commands show their messages."""

from temporal_integration.client import TemporalUnavailable

__all__ = [
    "InvalidMessage",
    "NothingToRegenerate",
    "ReplyPending",
    "SessionEnded",
    "SessionExists",
    "SessionNotFound",
    "TemporalUnavailable",
    "TokenBudgetExceeded",
    "ToolCallNotFound",
    "ToolCallNotWaiting",
    "UnknownUser",
    "WorkflowUnreadable",
]


class SessionExists(Exception):
    """A session with this id was already started."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session {session_id!r} already exists. Choose another session_id, or omit it.")


class SessionNotFound(Exception):
    """No session with this id belongs to the caller (another user's session is reported the same way)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session {session_id!r} not found.")


class SessionEnded(Exception):
    """The session no longer takes messages or an end."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session {session_id!r} has ended. Start a new session to go on.")


class InvalidMessage(Exception):
    """The workflow refused a message's content."""


class UnknownUser(Exception):
    """A session's workflow names a user the database doesn't have."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id} does not exist")


class WorkflowUnreadable(Exception):
    """Temporal answered, but could not describe the session's workflow (e.g. past its retention)."""


class TokenBudgetExceeded(Exception):
    """The user's replies have used their tokens for today."""

    def __init__(self, budget: int, retry_after: int) -> None:
        super().__init__(f"You have used today's {budget:,} tokens of assistant replies. Try again after midnight UTC.")
        self.retry_after = retry_after


class ReplyPending(Exception):
    """The reply was not finished within the wait a client asked for."""

    def __init__(self, session_id: str, seq: int, waited: float) -> None:
        super().__init__(
            f"Reply {seq} of session {session_id!r} is still being written after {waited:g}s. Follow it on "
            f"/api/sessions/{session_id}/events/, or read it later from /api/sessions/{session_id}/messages/."
        )


class ToolCallNotFound(Exception):
    def __init__(self, call_id: str) -> None:
        super().__init__(f"Tool call {call_id!r} not found in this session.")


class ToolCallNotWaiting(Exception):
    """The tool call was decided already, or never needed a decision."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"Tool call {call_id!r} is not waiting for a decision.")


class NothingToRegenerate(Exception):
    """No finished reply to answer again: none yet, or one is being written."""
