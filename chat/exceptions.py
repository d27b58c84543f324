"""The chat app's errors. chatproject.api maps each to its HTTP status; the admin and commands show their messages."""

from temporal_integration.client import TemporalUnavailable

__all__ = [
    "InvalidMessage",
    "SessionEnded",
    "SessionExists",
    "SessionNotFound",
    "TemporalUnavailable",
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
