"""The sessions' event log (chat.events) on both backends: the database and Redis Streams (at 127.0.0.1:6379, under
a namespace of each test's own). The worker's side runs on threads, as activities do."""

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction
from django.db.backends.utils import CursorWrapper
from django.test.utils import CaptureQueriesContext

from chat.events import (
    FAST_POLL_FACTOR,
    DatabaseEventLog,
    Event,
    EventLog,
    InvalidEventId,
    RedisEventLog,
    get_event_log,
)
from chat.exceptions import SessionNotFound
from chat.models import ChatEvent, ChatSession

REDIS_URL = "redis://127.0.0.1:6379/0"
INTERVAL = 0.02  # the hubs' poll and read interval in these tests


async def in_thread(func: Callable, *args):
    """Runs func on another thread, as the worker's activities do, closing that thread's connection after."""

    def run():
        try:
            return func(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def create_sessions(count: int) -> list[str]:
    user = get_user_model().objects.create_user(f"events-{uuid.uuid4().hex[:12]}")
    ids = [f"events-{uuid.uuid4().hex}" for _ in range(count)]
    ChatSession.objects.bulk_create(ChatSession(session_id=i, user=user, workflow_id="wf", run_id="run") for i in ids)
    return ids


def deltas(session_id: str, texts: range | list[int], turn: int = 2) -> list[Event]:
    return [Event(session_id, "delta", {"turn": turn, "attempt": 1, "text": str(t)}) for t in texts]


def texts(events: list[Event]) -> list[int]:
    return [int(event.data["text"]) for event in events]


async def take(events: AsyncIterator[Event], count: int, within: float = 5) -> list[Event]:
    taken: list[Event] = []
    async with asyncio.timeout(within):
        while len(taken) < count:
            taken.append(await anext(events))
    return taken


async def until(condition: Callable[[], bool], within: float = 5) -> bool:
    """Whether condition holds within `within` seconds, checked every 10 ms."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def collect(events: AsyncIterator[Event], into: list[Event]) -> None:
    async for event in events:
        into.append(event)


# The database's tests write from threads, which see only committed rows: transactional. Redis's need no database.
ON_DATABASE = pytest.param("database", marks=pytest.mark.django_db(transaction=True))


@pytest.fixture(params=[ON_DATABASE, "redis"])
def backend(request) -> str:
    return request.param


@pytest.fixture
async def make_log(backend) -> AsyncIterator[Callable[..., EventLog]]:
    """Builds logs of the test's backend; Redis ones under a namespace that is deleted afterwards."""
    made: list[EventLog] = []
    namespace = f"test-{uuid.uuid4().hex}"
    if backend == "redis":
        try:
            redis.Redis.from_url(REDIS_URL).ping()
        except redis.ConnectionError:
            pytest.fail(
                f"Redis is not answering at {REDIS_URL}: start it (`redis-server --daemonize yes --port 6379`, as "
                ".ci/run does)"
            )

    def make(buffer: int = 1000) -> EventLog:
        if backend == "database":
            log = DatabaseEventLog(poll_interval=INTERVAL, buffer=buffer)
        else:
            log = RedisEventLog(REDIS_URL, namespace=namespace, maxlen=10_000, read_interval=INTERVAL, buffer=buffer)
        made.append(log)
        return log

    yield make
    for log in made:
        await log.aclose()
    if backend == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        for log in made:
            log.client.close()


@pytest.fixture
async def log(make_log) -> EventLog:
    return make_log()


@pytest.fixture
def sessions(backend) -> Callable[[int], Awaitable[list[str]]]:
    """New sessions' ids; on the database, with their records."""

    async def new(count: int) -> list[str]:
        if backend == "database":
            return await in_thread(create_sessions, count)
        return [f"events-{uuid.uuid4().hex}" for _ in range(count)]

    return new


def test_an_event_on_the_wire_is_its_id_type_and_compact_json():
    event = Event("s", "delta", {"turn": 2, "attempt": 1, "text": "Grüß\ndich"}, id="17")

    assert event.to_sse() == 'id: 17\nevent: delta\ndata: {"turn":2,"attempt":1,"text":"Grüß\\ndich"}\n\n'.encode()


def test_an_event_of_an_unknown_type_is_refused():
    with pytest.raises(ValueError, match="unknown event type 'token'"):
        Event("s", "token", {})


async def test_ids_increase_in_append_order(log, sessions):
    [session] = await sessions(1)

    ids = await in_thread(log.append, session, deltas(session, range(3)))
    ids += await in_thread(log.append, session, deltas(session, [3]))
    ids += await in_thread(log.append, session, deltas(session, range(4, 9)))

    keys = [log.sort_key(i) for i in ids]
    assert keys == sorted(keys)
    assert len(set(keys)) == 9
    stored = await in_thread(log.read, session, None)
    assert [(e.id, e.session_id, e.type) for e in stored] == [(i, session, "delta") for i in ids]
    assert texts(stored) == list(range(9))


async def test_reading_after_an_id_returns_exactly_the_later_events(log, sessions):
    [session, other] = await sessions(2)
    ids = await in_thread(log.append, session, deltas(session, range(10)))
    await in_thread(log.append, other, deltas(other, range(100, 105)))

    for k in range(10):
        later = await in_thread(log.read, session, ids[k])
        assert [e.id for e in later] == ids[k + 1 :]
    assert texts(await in_thread(log.read, session, ids[2], 3)) == [3, 4, 5]
    with pytest.raises(InvalidEventId, match="is not an event id of this log"):
        await in_thread(log.read, session, "not-an-id")


async def test_a_retried_keyed_append_adds_nothing_and_returns_the_first_id(log, sessions):
    [session] = await sessions(1)
    message = {"seq": 1, "role": "user", "content": "hi", "created_at": "2026-01-01T00:00:00Z"}
    first = Event(session, "message", message, key="message:1")

    [first_id] = await in_thread(log.append, session, [first])
    retried = await in_thread(log.append, session, [first])
    second = Event(session, "message", {**message, "seq": 2}, key="message:2")
    mixed = await in_thread(log.append, session, [first, *deltas(session, [7, 7]), second, second])

    assert retried == [first_id]
    assert mixed[0] == first_id
    assert mixed[4] == mixed[3]
    stored = await in_thread(log.read, session, None)
    assert [(e.type, e.key) for e in stored] == [
        ("message", "message:1"),
        ("delta", None),
        ("delta", None),
        ("message", "message:2"),
    ]
    assert [e.id for e in stored] == [first_id, mixed[1], mixed[2], mixed[3]]


async def test_an_async_append_appends_as_append_does(log, sessions):
    [session] = await sessions(1)
    message = {"seq": 1, "role": "user", "content": "hi", "created_at": "2026-01-01T00:00:00Z"}
    keyed = Event(session, "message", message, key="message:1")

    ids = await log.aappend(session, [keyed, *deltas(session, range(3))])
    retried = await log.aappend(session, [keyed])

    assert retried == ids[:1]
    stored = await in_thread(log.read, session, None)
    assert [e.id for e in stored] == ids
    assert texts(stored[1:]) == [0, 1, 2]


async def test_the_newest_id_and_a_keyed_events_id_are_found_per_session(log, sessions):
    [session, other] = await sessions(2)
    assert await in_thread(log.last_id, session) is None
    message = {"seq": 1, "role": "user", "content": "hi", "created_at": "2026-01-01T00:00:00Z"}

    [keyed, *_, newest] = await in_thread(
        log.append, session, [Event(session, "message", message, key="message:1"), *deltas(session, range(3))]
    )
    await in_thread(log.append, other, [Event(other, "message", message, key="message:1"), *deltas(other, [9])])

    assert await in_thread(log.last_id, session) == newest
    assert await in_thread(log.id_of, session, "message:1") == keyed
    assert await in_thread(log.id_of, session, "message:2") is None


async def test_compacting_a_stored_reply_leaves_its_message_and_a_resume_from_inside_it_gets_the_message(log, sessions):
    [session, other] = await sessions(2)
    user = {"seq": 1, "role": "user", "content": "hi", "created_at": "2026-01-01T00:00:00Z"}
    reply = {"seq": 2, "role": "assistant", "content": "0123", "created_at": "2026-01-01T00:00:01Z"}
    [asked] = await in_thread(log.append, session, [Event(session, "message", user, key="message:1")])
    written = await in_thread(log.append, session, [*deltas(session, [0, 1]), Event(session, "reset", {"turn": 2})])
    written += await in_thread(log.append, session, deltas(session, [0, 1, 2, 3]))
    [stored] = await in_thread(log.append, session, [Event(session, "message", reply, key="message:2")])
    await in_thread(log.append, other, deltas(other, [7]))

    removed = await in_thread(log.compact, session, asked, stored)

    assert removed == 7
    assert [e.type for e in await in_thread(log.read, session, None)] == ["message", "message"]
    assert [e.data for e in await in_thread(log.read, session, written[3])] == [reply]
    assert texts(await in_thread(log.read, other, None)) == [7]
    assert await in_thread(log.compact, session, asked, stored) == 0


async def test_deleting_a_sessions_events_leaves_the_others(log, sessions):
    [session, other] = await sessions(2)
    await in_thread(log.append, session, deltas(session, range(3)))
    await in_thread(log.append, other, deltas(other, range(2)))

    await in_thread(log.delete, session)

    assert await in_thread(log.read, session, None) == []
    assert texts(await in_thread(log.read, other, None)) == [0, 1]


async def test_two_subscribers_of_a_session_get_every_event_in_order(log, sessions):
    [session] = await sessions(1)
    first, second = log.subscribe(session), log.subscribe(session)
    await in_thread(log.append, session, deltas(session, [0]))
    assert texts(await take(first, 1)) == texts(await take(second, 1)) == [0]

    for start in range(1, 21, 4):
        await in_thread(log.append, session, deltas(session, range(start, start + 4)))

    expected = list(range(1, 21))
    assert texts(await take(first, 20)) == texts(await take(second, 20)) == expected
    await first.aclose()
    await second.aclose()


async def test_a_subscriber_resuming_after_an_id_gets_the_backlog_then_live_events_while_the_worker_appends(
    log, sessions
):
    [session] = await sessions(1)
    ids = await in_thread(log.append, session, deltas(session, range(50)))

    def worker() -> None:
        try:
            for start in range(50, 300, 5):
                log.append(session, deltas(session, range(start, start + 5)))
        finally:
            connections.close_all()

    writer = threading.Thread(target=worker)
    writer.start()
    resumed = log.subscribe(session, after=ids[19])
    received = await take(resumed, 280, within=8)
    writer.join(10)

    assert texts(received) == list(range(20, 300))
    keys = [log.sort_key(e.id) for e in received]
    assert keys == sorted(keys)
    assert len(set(keys)) == 280
    await resumed.aclose()


async def test_an_unknown_last_event_id_is_refused(log):
    with pytest.raises(InvalidEventId):
        await anext(log.subscribe("any", after="12-x"))


class ReadCounter:
    """Counts the live log's reads in this process: SQL on the events table, except the writer thread's; XREAD and
    XRANGE sent by redis.asyncio clients (the worker's side writes with the sync client)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.lock = threading.Lock()
        execute_sql, execute_command = CursorWrapper._execute, redis.asyncio.Redis.execute_command

        def counting_sql(cursor, sql, *args, **kwargs):
            if "chat_chatevent" in sql and threading.current_thread().name != "test-writer":
                with self.lock:
                    self.reads += 1
            return execute_sql(cursor, sql, *args, **kwargs)

        async def counting_command(client, *args, **options):
            if str(args[0]).upper() in ("XREAD", "XRANGE"):
                self.reads += 1
            return await execute_command(client, *args, **options)

        monkeypatch.setattr(CursorWrapper, "_execute", counting_sql)
        monkeypatch.setattr(redis.asyncio.Redis, "execute_command", counting_command)


async def test_many_sessions_are_served_by_one_read_loop(log, monkeypatch, sessions):
    count = 200
    ids = await sessions(count)
    subscriptions = [log.subscribe(session) for session in ids]
    received: dict[str, list[Event]] = {session: [] for session in ids}
    consumers = [
        asyncio.create_task(collect(events, received[s])) for s, events in zip(ids, subscriptions, strict=True)
    ]

    def append_to_each(text: int) -> Callable[[], None]:
        def run() -> None:
            try:
                for session in ids:
                    log.append(session, deltas(session, [text]))
            finally:
                connections.close_all()

        return run

    def everyone_has(n: int) -> Callable[[], bool]:
        return lambda: all(len(events) >= n for events in received.values())

    first = threading.Thread(target=append_to_each(0), name="test-writer")
    first.start()
    assert await until(everyone_has(1), within=8)  # all subscribed and following
    first.join(5)

    counter = ReadCounter(monkeypatch)
    started = time.monotonic()
    await asyncio.sleep(0.3)  # idle: the window measured, not a wait for a condition
    second = threading.Thread(target=append_to_each(1), name="test-writer")
    second.start()
    assert await until(everyone_has(2), within=8)
    elapsed = time.monotonic() - started
    second.join(5)

    # One loop reads about once per interval (a fifth of it while events come), however many subscribe; reading per
    # subscriber reads `count` times as often.
    assert counter.reads <= 5 + 2 * FAST_POLL_FACTOR * elapsed / INTERVAL
    assert all(texts(events) == [0, 1] for events in received.values())
    for consumer in consumers:
        consumer.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)


async def test_a_subscriber_that_falls_behind_is_closed_not_buffered(make_log, sessions):
    log = make_log(buffer=20)
    [session] = await sessions(1)
    slow, fast = log.subscribe(session), log.subscribe(session)
    await in_thread(log.append, session, deltas(session, [0]))
    assert texts(await take(slow, 1)) == texts(await take(fast, 1)) == [0]

    # The fast subscriber reads each batch before the next is appended; the slow one reads nothing.
    for start in range(1, 101, 5):
        await in_thread(log.append, session, deltas(session, range(start, start + 5)))
        assert texts(await take(fast, 5)) == list(range(start, start + 5))

    # Its queue overflowed at the 21st event, was emptied and closed: what it didn't read is gone from memory.
    async with asyncio.timeout(2):
        assert [event async for event in slow] == []
    await fast.aclose()


@pytest.mark.parametrize("backend", [ON_DATABASE])
async def test_appends_commit_in_id_order_so_live_readers_miss_none(log, sessions):
    """On PostgreSQL ids come from a sequence: without the append lock, a later id could commit first and the hub
    would move past the earlier one for good."""
    a, b = await sessions(2)
    received: dict[str, list[Event]] = {a: [], b: []}
    consumers = [asyncio.create_task(collect(log.subscribe(s), received[s])) for s in (a, b)]
    await in_thread(log.append, a, deltas(a, [0]))
    await in_thread(log.append, b, deltas(b, [0]))
    assert await until(lambda: len(received[a]) == len(received[b]) == 1)
    appended, release = threading.Event(), threading.Event()

    def slow_worker() -> None:
        try:
            with transaction.atomic():
                log.append(a, deltas(a, [1]))
                appended.set()
                release.wait(10)
        finally:
            connections.close_all()

    slow_thread = threading.Thread(target=slow_worker)
    slow_thread.start()
    assert await asyncio.to_thread(appended.wait, 5)
    quick = asyncio.create_task(in_thread(log.append, b, deltas(b, [1])))
    # The second append must wait for the first's commit: if it doesn't, the hub gets to see its event first.
    overtaken = await until(lambda: len(received[b]) == 2, within=0.5)
    release.set()

    assert await until(lambda: len(received[a]) == len(received[b]) == 2)
    assert texts(received[a]) == texts(received[b]) == [0, 1]
    assert not overtaken
    await quick
    slow_thread.join(5)
    for consumer in consumers:
        consumer.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)


@pytest.mark.parametrize("backend", [ON_DATABASE])
async def test_a_replys_text_is_appended_without_waiting_for_the_disk_but_a_message_waits(log, sessions):
    """Deltas are redundant once the message is stored: their commits skip the fsync (SQLite's synchronous=NORMAL,
    PostgreSQL's synchronous_commit=off); every other event, and whatever the connection writes next, waits for it."""
    [session_id] = await sessions(1)

    def append_and_watch(events: list[Event]) -> tuple[list[str], object]:
        try:
            with CaptureQueriesContext(connection) as queries:
                log.append(session_id, events)
            if connection.vendor == "sqlite":
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA synchronous")
                    after = cursor.fetchone()[0]
            else:
                with connection.cursor() as cursor:
                    cursor.execute("SHOW synchronous_commit")
                    after = cursor.fetchone()[0]
            return [query["sql"] for query in queries.captured_queries], after
        finally:
            connections.close_all()

    delta_sql, after_delta = await in_thread(append_and_watch, deltas(session_id, [1, 2]))
    message = Event(session_id, "message", {"seq": 2}, key="message:2")
    message_sql, _ = await in_thread(append_and_watch, [message])

    relaxed = "synchronous = NORMAL" if connection.vendor == "sqlite" else "synchronous_commit TO OFF"
    assert any(relaxed in sql for sql in delta_sql), delta_sql
    assert not any(relaxed in sql for sql in message_sql), message_sql
    assert after_delta in (2, "on")  # the connection is back to FULL / on for what it writes next
    assert texts((await in_thread(log.read, session_id))[:2]) == [1, 2]


@pytest.mark.parametrize("backend", [ON_DATABASE])
async def test_a_delta_for_a_deleted_session_is_refused_though_the_log_remembered_its_key(log, sessions):
    [session_id] = await sessions(1)
    await in_thread(log.append, session_id, deltas(session_id, [1]))  # the log now knows the record's key
    await in_thread(lambda: ChatSession.objects.filter(session_id=session_id).delete())

    with pytest.raises(SessionNotFound):
        await in_thread(log.append, session_id, deltas(session_id, [2]))
    with pytest.raises(SessionNotFound):
        await in_thread(log.append, session_id, deltas(session_id, [3]))  # and again, without the key
    assert await in_thread(lambda: ChatEvent.objects.count()) == 0


def test_the_configured_log_is_one_per_process(settings):
    settings.CHAT_EVENT_LOG = "database"
    assert isinstance(get_event_log(), DatabaseEventLog)
    assert get_event_log() is get_event_log()

    settings.CHAT_EVENT_LOG = REDIS_URL
    assert isinstance(get_event_log(), RedisEventLog)


def test_an_event_log_setting_that_is_neither_database_nor_a_redis_url_fails_start_up():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatproject.settings", "DJANGO_ENV_FILE": "", "DJANGO_DEBUG": "1"}
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "CHAT_EVENT_LOG": "postgres://db/chat"},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
    )

    assert out.returncode == 1
    assert "ImproperlyConfigured: CHAT_EVENT_LOG='postgres://db/chat' is not valid: set `database` or a Redis URL" in (
        out.stderr
    )
