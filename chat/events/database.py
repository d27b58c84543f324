"""The database backend: events in the ChatEvent table, read live by polling for the ids after a cursor."""

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from chat.events import TRANSIENT_TYPES, Event, InvalidEventId, check_session
from chat.events.hub import PAGE_SIZE, LiveReading
from chat.exceptions import SessionNotFound
from chat.models import ChatEvent, ChatSession
from temporal_integration.connections import in_thread

logger = logging.getLogger(__name__)

# Taken by every append on PostgreSQL, whose ids come from a sequence: appends so commit in id order, and the reader
# never moves its cursor past an id still to commit. SQLite's writes are serial already.
APPEND_LOCK_ID = 0x63686174_6576  # "chatev"
# Sessions whose record key the transient appends remember (forgotten all at once past this many).
SESSION_PKS_KEPT = 10_000
DATA = ChatEvent._meta.get_field("data")
CREATED_AT = ChatEvent._meta.get_field("created_at")


def _now() -> Any:
    return CREATED_AT.get_db_prep_save(timezone.now(), connection)


class DatabaseEventLog:
    """Events in the ChatEvent table; ids are its primary key, increasing across all sessions."""

    commits_with_the_database = True

    def __init__(self, *, poll_interval: float, buffer: int) -> None:
        self.poll_interval = poll_interval
        self.buffer = buffer
        self._live = LiveReading(lambda: DatabaseReader(self), self.sort_key, buffer)
        self._session_pks: dict[str, int] = {}  # session id -> its record's primary key, for the transient appends

    def append(self, session_id: str, events: Sequence[Event]) -> list[str]:
        """Appends in one transaction: the caller's, when it has one (events then commit with what it writes, and
        on PostgreSQL other appends wait for that commit: keep such transactions short)."""
        check_session(session_id, events)
        if not events:
            return []
        if not connection.in_atomic_block and all(event.type in TRANSIENT_TYPES for event in events):
            return self._append_transient(session_id, events)
        with transaction.atomic():
            session_pk = _session_pk(session_id)
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

    def _append_transient(self, session_id: str, events: Sequence[Event]) -> list[str]:
        """A reply's text as it is written (a turn appends one every flush, dozens a turn): one INSERT with the
        session's key known, and no wait for the disk. The stored message makes these events redundant, and the
        next durable commit (SQLite's WAL, PostgreSQL's) carries them to disk in order: a crash of the machine can
        lose only the last of them, never a message."""
        known = self._session_pks.get(session_id)
        if known is not None:
            try:
                return self._insert_transient(known, events)
            except IntegrityError:  # that record was deleted (its key is checked at commit): look again
                self._session_pks.pop(session_id, None)
        session_pk = _session_pk(session_id)
        try:
            ids = self._insert_transient(session_pk, events)
        except IntegrityError:  # deleted meanwhile
            raise SessionNotFound(session_id) from None
        if len(self._session_pks) >= SESSION_PKS_KEPT:
            self._session_pks.clear()
        self._session_pks[session_id] = session_pk
        return ids

    @staticmethod
    def _insert_transient(session_pk: int, events: Sequence[Event]) -> list[str]:
        data = [DATA.get_db_prep_save(event.data, connection) for event in events]
        rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(events))
        table = ChatEvent._meta.db_table
        sql = f"INSERT INTO {table} (session_id, type, data, key, created_at) VALUES {rows} RETURNING id"
        sqlite = connection.vendor == "sqlite"
        with connection.cursor() as cursor:
            if sqlite:
                cursor.execute("PRAGMA synchronous = NORMAL")  # settable only outside a transaction
            try:
                with transaction.atomic():
                    if not sqlite:
                        cursor.execute("SET LOCAL synchronous_commit TO OFF")
                        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [APPEND_LOCK_ID])
                    now = _now()  # stamped once the write lock is held, as the ORM stamps the other appends
                    params = [
                        value
                        for event, datum in zip(events, data, strict=True)
                        for value in (session_pk, event.type, datum, "", now)
                    ]
                    cursor.execute(sql, params)
                    ids = sorted(row[0] for row in cursor.fetchall())
            finally:
                if sqlite:
                    cursor.execute("PRAGMA synchronous = FULL")
        return [str(pk) for pk in ids]

    async def aappend(self, session_id: str, events: Sequence[Event]) -> list[str]:
        return await in_thread(self.append, session_id, events)

    def read(self, session_id: str, after: str | None = None, limit: int = 1000) -> list[Event]:
        rows = ChatEvent.objects.filter(session__session_id=session_id).order_by("id")
        if after is not None:
            rows = rows.filter(id__gt=self.sort_key(after)[0])
        return [
            Event(session_id, kind, data, id=str(pk), key=key or None)
            for pk, kind, data, key in rows.values_list("pk", "type", "data", "key")[:limit]
        ]

    def subscribe(self, session_id: str, after: str | None = None) -> AsyncIterator[Event]:
        return self._live.subscribe(session_id, after)

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

    def compact(self, session_id: str, after: str | None, upto: str) -> int:
        rows = ChatEvent.objects.filter(
            session__session_id=session_id, id__lt=self.sort_key(upto)[0], type__in=TRANSIENT_TYPES
        )
        if after is not None:
            rows = rows.filter(id__gt=self.sort_key(after)[0])
        return rows.delete()[0]

    def delete(self, session_id: str) -> None:
        ChatEvent.objects.filter(session__session_id=session_id).delete()

    def retire(self, session_id: str, keep_for: float) -> None:
        """Nothing to do: trim() removes them."""

    def trim(self, ended_before: datetime) -> int:
        return ChatEvent.objects.filter(session__ended_at__lt=ended_before).delete()[0]

    async def aclose(self) -> None:
        await self._live.aclose()


def _session_pk(session_id: str) -> int:
    """The session record's primary key; SessionNotFound without a record."""
    session_pk = ChatSession.objects.filter(session_id=session_id).values_list("pk", flat=True).first()
    if session_pk is None:
        raise SessionNotFound(session_id)
    return session_pk


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _close_connection() -> None:
    connection.close()  # this thread's: the name resolves in the thread that calls it


@functools.cache
def _poll_sql() -> str:
    """The events after an id, of every session, oldest first: what `ChatEvent.objects.filter(id__gt=cursor)` with
    the session's id would read."""
    event, session = ChatEvent._meta.db_table, ChatSession._meta.db_table
    return (
        f"SELECT e.id, s.session_id, e.type, e.data, e.key FROM {event} e JOIN {session} s ON s.id = e.session_id "
        "WHERE e.id > %s ORDER BY e.id LIMIT %s"
    )


# After the reader has seen an event it polls this many times faster, for BUSY_SECONDS: a reply's first words
# follow its message's event closely. Idle streams keep the slow pace.
FAST_POLL_FACTOR = 5
BUSY_SECONDS = 5.0


class DatabaseReader:
    """Polls `id > cursor` every poll_interval (a fifth of it while events are coming), one query for all
    subscribers whatever their number.

    Each web process so reads every session's new events, its subscribers' or not: the write rate bounds that.
    (Redis's reader reads only the streams it follows.)
    """

    def __init__(self, log: DatabaseEventLog) -> None:
        self.log = log
        # One thread, so the reader holds one connection, closed whenever it goes idle.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-events")
        # The id after which it reads, from the newest when it starts. Until then subscribers hold their backlog
        # reads (`started`): one read before it would miss what commits in between.
        self.cursor: int | None = None
        self.started: asyncio.Future[None] | None = None
        self.busy_until = 0.0
        self.checked_at = 0.0

    def start(self) -> asyncio.Future[None]:
        self.cursor = None
        self.busy_until = 0.0
        self.started = asyncio.get_running_loop().create_future()
        return self.started

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        # Straight to the executor: sync_to_async's context copy and more, on every poll, would add up.
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def read(self) -> tuple[list[Event], float]:
        # Events go to whoever is subscribed when a poll's answer arrives; a later subscriber reads its backlog
        # after that poll ran, and finds them there.
        events: list[Event] = []
        more = False
        try:
            if self.cursor is None:
                self.cursor = await self.call(self.max_id)
                if self.started is not None:
                    self.started.set_result(None)
            else:
                events, self.cursor, more = await self.call(self.poll, self.cursor)
                if events:
                    self.busy_until = time.monotonic() + BUSY_SECONDS
        except DatabaseError:
            logger.exception("reading chat events failed; retrying")
            self.checked_at = 0.0
            await asyncio.sleep(1)
        if more:
            return events, 0.0
        fast = time.monotonic() < self.busy_until
        return events, self.log.poll_interval / (FAST_POLL_FACTOR if fast else 1)

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
        # Every session's new events (dispatch drops the others'), in plain SQL built once: this runs every poll
        # interval in each web process, where naming the subscribed sessions or the ORM's compiling would cost most.
        self.hygiene()
        with connection.cursor() as db:
            db.execute(_poll_sql(), [cursor, PAGE_SIZE])
            rows = db.fetchall()
        events = [
            Event(session_id, kind, data if isinstance(data, dict) else json.loads(data), id=str(pk), key=key or None)
            for pk, session_id, kind, data, key in rows
        ]
        return events, rows[-1][0] if rows else cursor, len(rows) == PAGE_SIZE

    async def backlog(self, session_id: str, after: str | None) -> list[Event]:
        return await self.call(self.read_backlog, session_id, after)

    def read_backlog(self, session_id: str, after: str | None) -> list[Event]:
        self.hygiene()
        return self.log.read(session_id, after, PAGE_SIZE)

    def caught_up(self, session_id: str, last: str | None) -> bool:
        return True  # the cursor was fixed before any backlog was read

    async def follow(self, session_id: str, last: str | None) -> None:
        pass  # it reads every session

    def forget(self, session_id: str) -> None:
        pass

    async def idle(self) -> None:
        await self.call(_close_connection)

    async def aclose(self) -> None:
        await self.call(_close_connection)
        self.executor.shutdown(wait=False)

    def close(self) -> None:
        self.executor.shutdown(wait=False)
