"""Each session's events in a durable, ordered log outside the workflow's history.

The worker appends (a stored message, the assistant's reply as it is written, a retried turn's reset, ...); the web
process streams them to any number of SSE clients per session. Two backends behind one interface, EventLog, chosen
by settings.CHAT_EVENT_LOG: the project's database (chat.events.database, the default) and Redis Streams
(chat.events.redis). Both read live through one hub per event loop (chat.events.hub).

The guarantee, on either backend: a session's events are read in the order they were appended, under ids that
increase; a subscriber that starts after an id gets every later event once, with no gap and no duplicate, so a client
that comes back with Last-Event-ID resumes where it left off. A subscriber that falls a buffer's length behind is
closed instead of holding memory; its client reconnects with Last-Event-ID. A stored reply's text as written (its
turn's `delta` and `reset` events) is compacted away when the session's next message is stored, or when it ends: a
subscriber that resumes from an id among them gets the whole reply once, as its `message` event.

Retention: the events of a session that ended go CHAT_EVENT_RETENTION seconds later (Redis keys expire; the
database's are trimmed by the chat-event-retention Temporal Schedule); a deleted session's go with it.
"""

import json
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chat.conf import chat_settings
from chat.models import ChatEvent

__all__ = [
    "EVENT_TYPES",
    "FAST_POLL_FACTOR",
    "DatabaseEventLog",
    "Event",
    "EventLog",
    "InvalidEventId",
    "RedisEventLog",
    "get_event_log",
]

EVENT_TYPES = frozenset(ChatEvent.Type.values)
# What a stored message makes redundant: its text as it was written.
TRANSIENT_TYPES = frozenset({ChatEvent.Type.DELTA, ChatEvent.Type.RESET})


class InvalidEventId(ValueError):
    """An id this log never gave out (a mangled Last-Event-ID, or one from the other backend)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"{event_id!r} is not an event id of this log. Reconnect without Last-Event-ID to start over.")


@dataclass(frozen=True)
class Event:
    session_id: str
    type: str
    data: dict[str, Any]
    id: str = ""  # given by the log
    key: str | None = None  # appended at most once per session

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}; one of {sorted(EVENT_TYPES)}")
        if self.key == "":
            raise ValueError("an event's key is None or a non-empty string")

    def to_sse(self) -> bytes:
        """The event as Server-Sent Events send it."""
        return f"id: {self.id}\nevent: {self.type}\ndata: {compact_json(self.data)}\n\n".encode()


class EventLog(Protocol):
    # Whether an append inside the caller's database transaction commits with it (the database log), rather than
    # at once whatever becomes of that transaction (Redis): callers that write a record and its event then make
    # them one commit.
    commits_with_the_database: bool

    def append(self, session_id: str, events: Sequence[Event]) -> list[str]:
        """Appends in order and returns the ids; a keyed event already in the session's log is not appended again,
        and its id is the one it got the first time."""
        ...

    async def aappend(self, session_id: str, events: Sequence[Event]) -> list[str]:
        """append(), from async code: on a thread of its own."""
        ...

    def read(self, session_id: str, after: str | None = None, limit: int = 1000) -> list[Event]:
        """Up to `limit` of the session's events after the one with id `after` (from the start when None)."""
        ...

    def subscribe(self, session_id: str, after: str | None = None) -> AsyncIterator[Event]:
        """The events after `after`, then each new one as it is appended, until the consumer stops iterating. It
        ends by itself only when the consumer fell a buffer's length behind: reconnect after the last id seen."""
        ...

    def sort_key(self, event_id: str) -> tuple[int, ...]:
        """Orders ids as the log does; InvalidEventId for an id it never gave out."""
        ...

    def last_id(self, session_id: str) -> str | None:
        """The id of the session's newest event; None while it has none."""
        ...

    def id_of(self, session_id: str, key: str) -> str | None:
        """The id of the session's event appended with that key; None if there is none (or it was trimmed)."""
        ...

    def compact(self, session_id: str, after: str | None, upto: str) -> int:
        """Removes the session's TRANSIENT_TYPES events between the ids `after` (from the start when None) and
        `upto`, both excluded; returns how many."""
        ...

    def delete(self, session_id: str) -> None:
        """Removes all of the session's events."""
        ...

    def retire(self, session_id: str, keep_for: float) -> None:
        """The session has ended: its events may go after `keep_for` seconds (where the backend can expire them)."""
        ...

    def trim(self, ended_before: datetime) -> int:
        """Removes the events of sessions that ended before then and were not expired by retire(); returns how
        many."""
        ...

    async def aclose(self) -> None:
        """Ends the subscriptions and releases what live reading holds on the running loop."""
        ...


def get_event_log() -> EventLog:
    """The process's event log, as CHAT_EVENT_LOG configures it."""
    spec = chat_settings.CHAT_EVENT_LOG
    with _logs_lock:
        if spec not in _logs:
            buffer = chat_settings.CHAT_EVENT_LOG_SUBSCRIBER_BUFFER
            interval = chat_settings.CHAT_EVENT_LOG_POLL_INTERVAL
            if spec == "database":
                _logs[spec] = DatabaseEventLog(poll_interval=interval, buffer=buffer)
            else:
                maxlen = chat_settings.CHAT_EVENT_LOG_REDIS_MAXLEN
                _logs[spec] = RedisEventLog(spec, maxlen=maxlen, read_interval=interval, buffer=buffer)
        return _logs[spec]


_logs: dict[str, EventLog] = {}
_logs_lock = threading.Lock()


def compact_json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def check_session(session_id: str, events: Sequence[Event]) -> None:
    """Refuses a batch that holds another session's events."""
    strays = {event.session_id for event in events} - {session_id}
    if strays:
        raise ValueError(f"events of sessions {sorted(strays)} appended to session {session_id!r}")


# Last: the backends import the names above.
from chat.events.database import FAST_POLL_FACTOR, DatabaseEventLog  # noqa: E402
from chat.events.redis import RedisEventLog  # noqa: E402
