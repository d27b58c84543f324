"""Each session's events in a durable, ordered log outside the workflow's history.

The worker appends (a stored message, the assistant's reply as it is written, a retried turn's reset, ...); the web
process streams them to any number of SSE clients per session, and a client that comes back with Last-Event-ID
resumes after that id with no gap and no duplicate. Two backends behind one interface, chosen by
settings.CHAT_EVENT_LOG: the project's database (default) and Redis Streams.

Live reading is one hub per web process (per event loop, really: ASGI has one): while anyone is subscribed, the hub
alone reads new events, for every subscribed session at once, and hands them to the subscribers' bounded queues. A
subscriber that falls a buffer's length behind is closed instead of holding memory; its client reconnects with
Last-Event-ID.

Retention: nothing trims the log yet. A session's database events go with its record (CASCADE); each Redis stream is
capped near settings.CHAT_EVENT_LOG_REDIS_MAXLEN entries, so a client resuming from an id that was trimmed away
misses what was trimmed. Trimming ended sessions is left for later.
"""

import asyncio
import functools
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.asyncio
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction

from chat.exceptions import SessionNotFound
from chat.models import ChatEvent, ChatSession

logger = logging.getLogger(__name__)

EVENT_TYPES = frozenset(ChatEvent.Type.values)


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
        return f"id: {self.id}\nevent: {self.type}\ndata: {_dumps(self.data)}\n\n".encode()


class EventLog(Protocol):
    def append(self, session_id: str, events: Sequence[Event]) -> list[str]:
        """Appends in order and returns the ids; a keyed event already in the session's log is not appended again,
        and its id is the one it got the first time."""
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

    async def aclose(self) -> None:
        """Ends the subscriptions and releases what live reading holds on the running loop."""
        ...


def get_event_log() -> EventLog:
    """The process's event log, as settings.CHAT_EVENT_LOG configures it."""
    spec = settings.CHAT_EVENT_LOG
    with _logs_lock:
        if spec not in _logs:
            buffer = settings.CHAT_EVENT_LOG_SUBSCRIBER_BUFFER
            if spec == "database":
                _logs[spec] = DatabaseEventLog(poll_interval=settings.CHAT_EVENT_LOG_POLL_INTERVAL, buffer=buffer)
            else:
                _logs[spec] = RedisEventLog(
                    spec,
                    maxlen=settings.CHAT_EVENT_LOG_REDIS_MAXLEN,
                    read_interval=settings.CHAT_EVENT_LOG_POLL_INTERVAL,
                    buffer=buffer,
                )
        return _logs[spec]


_logs: dict[str, EventLog] = {}
_logs_lock = threading.Lock()


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _check(session_id: str, events: Sequence[Event]) -> None:
    strays = {event.session_id for event in events} - {session_id}
    if strays:
        raise ValueError(f"events of sessions {sorted(strays)} appended to session {session_id!r}")


class _Subscriber:
    def __init__(self, session_id: str, buffer: int) -> None:
        self.session_id = session_id
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=buffer)
        self.closed = False
        self.barrier: asyncio.Future[None] | None = None

    def offer(self, event: Event) -> bool:
        """Queues the event; False, and closed, when the queue is full."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.close()
            return False
        return True

    def close(self) -> None:
        self.closed = True
        # What it didn't read is dropped: a reader that stopped must not keep a session's stream in memory.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class _Hub:
    """One loop's live reader: reads for all its subscribers, and runs only while it has any."""

    page_size = 1000

    def __init__(self, log: "DatabaseEventLog | RedisEventLog", buffer: int) -> None:
        self.log = log
        self.buffer = buffer
        self.subscribers: dict[str, set[_Subscriber]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, session_id: str) -> _Subscriber:
        subscriber = _Subscriber(session_id, self.buffer)
        self.subscribers.setdefault(session_id, set()).add(subscriber)
        if self.task is None or self.task.done():
            self.starting()
            self.task = asyncio.get_running_loop().create_task(self.guarded_run(), name=type(self).__name__)
        return subscriber

    def remove(self, subscriber: _Subscriber) -> None:
        subscribers = self.subscribers.get(subscriber.session_id)
        if subscribers and subscriber in subscribers:
            subscribers.discard(subscriber)
            if not subscribers:
                del self.subscribers[subscriber.session_id]
                self.forget(subscriber.session_id)

    def dispatch(self, events: Sequence[Event]) -> None:
        for event in events:
            for subscriber in list(self.subscribers.get(event.session_id, ())):
                if not subscriber.offer(event):
                    logger.info(
                        "event subscriber closed: %d events behind session_id=%s", self.buffer, event.session_id
                    )
                    self.remove(subscriber)

    async def stream(self, session_id: str, after: str | None) -> AsyncIterator[Event]:
        if after is not None:
            self.log.sort_key(after)
        subscriber = self.add(session_id)
        try:
            # Registered first, so whatever the hub reads from now on is queued; the backlog covers the rest, and
            # the overlap is dropped by id.
            last = after
            while True:
                page = await self.backlog(subscriber, last)
                for event in page:
                    yield event
                    last = event.id
                if subscriber.closed or not page or (len(page) < self.page_size and self.caught_up(session_id, last)):
                    break
            await self.follow(session_id, last)
            last_key = self.log.sort_key(last) if last is not None else None
            while (event := await subscriber.queue.get()) is not None:
                key = self.log.sort_key(event.id)
                if last_key is None or key > last_key:
                    last_key = key
                    yield event
        finally:
            self.remove(subscriber)

    async def guarded_run(self) -> None:
        try:
            await self.run()
        except Exception:
            # Its subscribers would wait forever: end them, so that their clients reconnect (and start a new hub).
            logger.exception("the chat event hub failed; closing its subscribers")
            self.close_all()

    def close_all(self) -> None:
        for subscribers in list(self.subscribers.values()):
            for subscriber in subscribers:
                subscriber.close()
        self.subscribers.clear()

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.close_all()

    # What each backend's hub provides.

    def starting(self) -> None:
        """Called as the reader task is about to start."""

    async def run(self) -> None:
        raise NotImplementedError

    async def backlog(self, subscriber: _Subscriber, after: str | None) -> list[Event]:
        raise NotImplementedError

    def caught_up(self, session_id: str, last: str | None) -> bool:
        """Whether a backlog that ends at `last` meets what the hub delivers for the session."""
        return True

    async def follow(self, session_id: str, last: str | None) -> None:
        """The session's subscriber has read its backlog up to `last`."""

    def forget(self, session_id: str) -> None:
        """The session has no subscriber left."""

    def discard(self) -> None:
        """Its loop has closed: let go of what can be let go without it."""

    async def release(self) -> None:
        """Closes what it holds, on its loop."""


class _LiveReading:
    """The per-loop hubs of a log."""

    def __init__(self) -> None:
        self._hubs: dict[asyncio.AbstractEventLoop, _Hub] = {}

    def _new_hub(self) -> _Hub:
        raise NotImplementedError

    def hub(self) -> _Hub:
        loop = asyncio.get_running_loop()
        for closed in [other for other in self._hubs if other.is_closed()]:
            self._hubs.pop(closed).discard()
        if loop not in self._hubs:
            self._hubs[loop] = self._new_hub()
        return self._hubs[loop]

    def subscribe(self, session_id: str, after: str | None = None) -> AsyncIterator[Event]:
        return self.hub().stream(session_id, after)

    async def aclose(self) -> None:
        hub = self._hubs.pop(asyncio.get_running_loop(), None)
        if hub is not None:
            await hub.aclose()
            await hub.release()


# The database


def _close_connection() -> None:
    connection.close()  # this thread's: the name resolves in the thread that calls it


# Taken by every append on PostgreSQL. Ids come from a sequence, and without it two appends could commit out of id
# order: the hub, having seen id 11 commit, would move past 10 for good. SQLite's writes are serial already.
APPEND_LOCK_ID = 0x63686174_6576  # "chatev"


class DatabaseEventLog(_LiveReading):
    """Events in the ChatEvent table; ids are its primary key, increasing across all sessions."""

    def __init__(self, *, poll_interval: float = 0.05, buffer: int = 1000) -> None:
        super().__init__()
        self.poll_interval = poll_interval
        self.buffer = buffer

    def append(self, session_id: str, events: Sequence[Event]) -> list[str]:
        """Appends in one transaction: the caller's, when it has one (events then commit with what it writes, and
        on PostgreSQL other appends wait for that commit: keep such transactions short)."""
        _check(session_id, events)
        if not events:
            return []
        with transaction.atomic():
            session_pk = ChatSession.objects.filter(session_id=session_id).values_list("pk", flat=True).first()
            if session_pk is None:
                raise SessionNotFound(session_id)
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [APPEND_LOCK_ID])
            keys = {event.key for event in events if event.key}
            known: dict[str, int | ChatEvent] = dict(
                ChatEvent.objects.filter(session_id=session_pk, key__in=keys).values_list("key", "pk") if keys else ()
            )
            slots: list[int | ChatEvent] = []
            new: list[ChatEvent] = []
            for event in events:
                slot = known.get(event.key) if event.key else None
                if slot is None:
                    slot = ChatEvent(session_id=session_pk, type=event.type, data=event.data, key=event.key or "")
                    new.append(slot)
                    if event.key:
                        known[event.key] = slot
                slots.append(slot)
            ChatEvent.objects.bulk_create(new)
        return [str(slot if isinstance(slot, int) else slot.pk) for slot in slots]

    def read(self, session_id: str, after: str | None = None, limit: int = 1000) -> list[Event]:
        rows = ChatEvent.objects.filter(session__session_id=session_id).order_by("id")
        if after is not None:
            rows = rows.filter(id__gt=self.sort_key(after)[0])
        return [
            Event(session_id, kind, data, id=str(pk), key=key or None)
            for pk, kind, data, key in rows.values_list("pk", "type", "data", "key")[:limit]
        ]

    def sort_key(self, event_id: str) -> tuple[int, ...]:
        if not re.fullmatch(r"[0-9]{1,19}", event_id):
            raise InvalidEventId(event_id)
        return (int(event_id),)

    def last_id(self, session_id: str) -> str | None:
        newest = ChatEvent.objects.filter(session__session_id=session_id).order_by("-id").values_list("id", flat=True)
        return _str_or_none(newest.first())

    def id_of(self, session_id: str, key: str) -> str | None:
        keyed = ChatEvent.objects.filter(session__session_id=session_id, key=key).values_list("id", flat=True)
        return _str_or_none(keyed.first())

    def _new_hub(self) -> _Hub:
        return _DatabaseHub(self, self.buffer)


@functools.cache
def _poll_sql() -> str:
    """The events after an id, of every session, oldest first: what `ChatEvent.objects.filter(id__gt=cursor)` with
    the session's id would read."""
    event, session = ChatEvent._meta.db_table, ChatSession._meta.db_table
    return (
        f"SELECT e.id, s.session_id, e.type, e.data, e.key FROM {event} e JOIN {session} s ON s.id = e.session_id "
        "WHERE e.id > %s ORDER BY e.id LIMIT %s"
    )


# After the hub has seen an event it polls this many times faster, for BUSY_SECONDS: a reply's first words come a
# model's first-token time after its message's event, and waited half a poll interval on average to be read (43 ms
# p50 from append to client at 50 ms, `make bench` line 7's probe); idle streams keep the slow pace.
FAST_POLL_FACTOR = 5
BUSY_SECONDS = 5.0


class _DatabaseHub(_Hub):
    """Polls `id > cursor` every poll_interval (a fifth of it while events are coming), one query for all
    subscribers whatever their number.

    Each web process so reads every session's new events, its subscribers' or not: the write rate bounds that.
    (Redis's hub reads only the streams it follows.)
    """

    def __init__(self, log: DatabaseEventLog, buffer: int) -> None:
        super().__init__(log, buffer)
        self.log: DatabaseEventLog = log
        # One thread, so the hub holds one connection, closed whenever it goes idle.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-events")
        # The id after which it reads, from the newest when it starts. Until then subscribers hold their backlog
        # reads: one read before it would miss what commits in between.
        self.cursor: int | None = None
        self.started: asyncio.Future[None] | None = None
        self.checked_at = 0.0

    def add(self, session_id: str) -> _Subscriber:
        subscriber = super().add(session_id)
        if self.started is not None and not self.started.done():
            subscriber.barrier = self.started
        return subscriber

    def starting(self) -> None:
        self.cursor = None
        self.started = asyncio.get_running_loop().create_future()

    async def call(self, func: Any, *args: Any) -> Any:
        # Straight to the executor: asgiref's sync_to_async adds a context copy and more per call, 20 calls a second
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def run(self) -> None:
        try:
            await self.poll_while_subscribed()
        finally:
            if self.started is not None and not self.started.done():
                self.started.set_result(None)  # however it ended, no subscriber may wait for it any longer

    async def poll_while_subscribed(self) -> None:
        # Events are delivered to whoever is subscribed when a poll's answer arrives. A subscriber that came after
        # it reads its backlog after that poll ran, so it finds there what the poll saw: nothing is lost, since
        # appends commit in id order (see APPEND_LOCK_ID), and what it gets twice is dropped by id.
        busy_until = 0.0
        while True:
            if not self.subscribers:
                await self.call(_close_connection)
                if not self.subscribers:
                    return
                continue
            more = False
            try:
                if self.cursor is None:
                    self.cursor = await self.call(self.max_id)
                    if self.started is not None:
                        self.started.set_result(None)
                else:
                    events, self.cursor, more = await self.call(self.poll, self.cursor)
                    self.dispatch(events)
                    if events:
                        busy_until = time.monotonic() + BUSY_SECONDS
            except DatabaseError:
                logger.exception("reading chat events failed; retrying")
                self.checked_at = 0.0
                await asyncio.sleep(1)
            if not more:
                fast = time.monotonic() < busy_until
                await asyncio.sleep(self.log.poll_interval / (FAST_POLL_FACTOR if fast else 1))

    def hygiene(self) -> None:
        # Nothing else recycles this thread's connection: drop it when it is too old or broke. At most once a
        # second, as with CONN_HEALTH_CHECKS each check costs a query.
        now = time.monotonic()
        if now - self.checked_at >= 1.0:
            self.checked_at = now
            close_old_connections()

    def max_id(self) -> int:
        self.hygiene()
        return ChatEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def poll(self, cursor: int) -> tuple[list[Event], int, bool]:
        # Every session's new events (dispatch drops the others'): a query naming the subscribed sessions cost ~5 ms
        # of CPU per poll with 1,000 of them (most of it the ORM's). This one is plain SQL, built once: it runs 20
        # times a second in each web process while anyone follows a stream, and the ORM's compiling of it was most
        # of the process's CPU with 1,000 idle streams.
        self.hygiene()
        with connection.cursor() as db:
            db.execute(_poll_sql(), [cursor, self.page_size])
            rows = db.fetchall()
        events = [
            Event(session_id, kind, data if isinstance(data, dict) else json.loads(data), id=str(pk), key=key or None)
            for pk, session_id, kind, data, key in rows
        ]
        return events, rows[-1][0] if rows else cursor, len(rows) == self.page_size

    async def backlog(self, subscriber: _Subscriber, after: str | None) -> list[Event]:
        if subscriber.barrier is not None:
            await asyncio.shield(subscriber.barrier)
            subscriber.barrier = None
        return await self.call(self.read_backlog, subscriber.session_id, after)

    def read_backlog(self, session_id: str, after: str | None) -> list[Event]:
        self.hygiene()
        return self.log.read(session_id, after, self.page_size)

    def discard(self) -> None:
        self.executor.shutdown(wait=False)

    async def release(self) -> None:
        await self.call(_close_connection)
        self.executor.shutdown(wait=False)


# Redis Streams


# Appends a batch to a session's stream; a keyed entry whose key the session's key hash holds is not added again, and
# its first id is returned. One script, so the check and the XADD are atomic.
APPEND_SCRIPT = """
local ids = {}
for i = 2, #ARGV, 3 do
  local key = ARGV[i + 2]
  local id = false
  if key ~= '' then
    id = redis.call('HGET', KEYS[2], key)
  end
  if not id then
    if key == '' then
      id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[i], 'data', ARGV[i + 1])
    else
      id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[i], 'data', ARGV[i + 1], 'key', key)
      redis.call('HSET', KEYS[2], key, id)
    end
  end
  ids[#ids + 1] = id
end
return ids
"""


class RedisEventLog(_LiveReading):
    """Events in Redis Streams, one per session (`<namespace>:events:<session_id>`); ids are the stream ids."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "chat",
        maxlen: int = 100_000,
        read_interval: float = 0.05,
        buffer: int = 1000,
    ) -> None:
        super().__init__()
        self.url = url
        self.read_interval = read_interval
        self.namespace = namespace
        self.maxlen = maxlen
        self.buffer = buffer
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self._append = self.client.register_script(APPEND_SCRIPT)

    def stream_key(self, session_id: str) -> str:
        return f"{self.namespace}:events:{session_id}"

    def keys_key(self, session_id: str) -> str:
        return f"{self.namespace}:event-keys:{session_id}"

    def append(self, session_id: str, events: Sequence[Event]) -> list[str]:
        _check(session_id, events)
        if not events:
            return []
        args: list[str | int] = [self.maxlen]
        for event in events:
            args += [event.type, _dumps(event.data), event.key or ""]
        return list(self._append(keys=[self.stream_key(session_id), self.keys_key(session_id)], args=args))

    def read(self, session_id: str, after: str | None = None, limit: int = 1000) -> list[Event]:
        entries = self.client.xrange(self.stream_key(session_id), min=self.range_start(after), count=limit)
        return [self.entry_event(session_id, entry_id, fields) for entry_id, fields in entries]

    def last_id(self, session_id: str) -> str | None:
        newest = self.client.xrevrange(self.stream_key(session_id), count=1)
        return newest[0][0] if newest else None

    def id_of(self, session_id: str, key: str) -> str | None:
        return self.client.hget(self.keys_key(session_id), key)

    def range_start(self, after: str | None) -> str:
        if after is None:
            return "-"
        self.sort_key(after)
        return f"({after}"

    def entry_event(self, session_id: str, entry_id: str, fields: dict[str, str]) -> Event:
        return Event(session_id, fields["type"], json.loads(fields["data"]), id=entry_id, key=fields.get("key"))

    def sort_key(self, event_id: str) -> tuple[int, ...]:
        match = re.fullmatch(r"([0-9]{1,20})-([0-9]{1,20})", event_id)
        if not match:
            raise InvalidEventId(event_id)
        return int(match[1]), int(match[2])

    def _new_hub(self) -> _Hub:
        return _RedisHub(self, self.buffer)


class _RedisHub(_Hub):
    """One XREAD BLOCK over every subscribed session's stream, from the last id it read of each.

    After a read that returned anything it waits read_interval, so that under load one XREAD (which names every
    subscribed stream) gathers many sessions' events instead of one.
    """

    block_ms = 2000

    def __init__(self, log: RedisEventLog, buffer: int) -> None:
        super().__init__(log, buffer)
        self.log: RedisEventLog = log
        # A pool of a few connections on this loop: one blocks in XREAD, the others read backlogs.
        self.client = redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                log.url, max_connections=8, timeout=20, decode_responses=True
            )
        )
        self.positions: dict[str, str] = {}  # session id -> the last id the hub read of its stream
        # A stream of this hub's own in every XREAD, written to when a session joins, so the XREAD takes it in.
        self.wake_key = f"{log.namespace}:events-wake:{uuid.uuid4().hex}"
        self.wake_pending = False

    async def run(self) -> None:
        wake_position = "0-0"
        while True:
            if not self.subscribers:
                await self.client.delete(self.wake_key)
                if not self.subscribers:
                    return
            streams = {self.log.stream_key(session_id): position for session_id, position in self.positions.items()}
            streams[self.wake_key] = wake_position
            self.wake_pending = False  # this read names every stream followed so far
            try:
                reply = await self.client.xread(streams, count=self.page_size, block=self.block_ms)
            except (redis.RedisError, OSError):
                logger.exception("reading chat events from Redis failed; retrying")
                await asyncio.sleep(1)
                continue
            for stream, entries in reply or ():
                if stream == self.wake_key:
                    wake_position = entries[-1][0]
                    continue
                session_id = stream.removeprefix(self.log.stream_key(""))
                position = self.positions.get(session_id)
                if position is None:
                    continue  # its last subscriber left meanwhile
                if self.log.sort_key(entries[-1][0]) > self.log.sort_key(position):
                    self.positions[session_id] = entries[-1][0]
                self.dispatch([self.log.entry_event(session_id, entry_id, fields) for entry_id, fields in entries])
            if reply:
                await asyncio.sleep(self.log.read_interval)

    async def backlog(self, subscriber: _Subscriber, after: str | None) -> list[Event]:
        session_id = subscriber.session_id
        entries = await self.client.xrange(
            self.log.stream_key(session_id), min=self.log.range_start(after), count=self.page_size
        )
        return [self.log.entry_event(session_id, entry_id, fields) for entry_id, fields in entries]

    def caught_up(self, session_id: str, last: str | None) -> bool:
        # The hub delivers what follows its position: a backlog must reach it.
        position = self.positions.get(session_id)
        if position is None:
            return True
        return last is not None and self.log.sort_key(last) >= self.log.sort_key(position)

    async def follow(self, session_id: str, last: str | None) -> None:
        if session_id in self.positions or session_id not in self.subscribers:
            return
        self.positions[session_id] = last or "0-0"
        if self.wake_pending:
            return
        self.wake_pending = True
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.xadd(self.wake_key, {"session": session_id}, maxlen=1)
            pipe.expire(self.wake_key, 3600)
            await pipe.execute()

    def forget(self, session_id: str) -> None:
        self.positions.pop(session_id, None)

    async def release(self) -> None:
        await self.client.aclose(close_connection_pool=True)
