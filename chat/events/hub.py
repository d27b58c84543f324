"""Live reading: one hub per event loop (ASGI runs one per web process) reads new events for all its subscribers.

While anyone is subscribed, the hub alone reads, for every subscribed session at once, through its backend's Reader,
and hands the events to the subscribers' bounded queues. A subscriber reads its backlog first, then its queue.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from chat.events import Event

logger = logging.getLogger(__name__)

PAGE_SIZE = 1000  # events one read returns at most

SortKey = Callable[[str], tuple[int, ...]]  # the log's order of its ids


class Reader(Protocol):
    """What a backend gives its hub: the reads of one event loop."""

    def start(self) -> asyncio.Future[None] | None:
        """The hub starts reading; returns what backlog reads must wait for (None: nothing)."""
        ...

    async def read(self) -> tuple[list[Event], float]:
        """The followed sessions' new events, and the seconds to wait before the next read."""
        ...

    async def backlog(self, session_id: str, after: str | None) -> list[Event]:
        """Up to PAGE_SIZE of the session's events after `after`."""
        ...

    def caught_up(self, session_id: str, last: str | None) -> bool:
        """Whether a backlog that ends at `last` meets what read() delivers for the session."""
        ...

    async def follow(self, session_id: str, last: str | None) -> None:
        """A subscriber of the session has read its backlog up to `last`."""
        ...

    def forget(self, session_id: str) -> None:
        """The session has no subscriber left."""
        ...

    async def idle(self) -> None:
        """No one is subscribed: lets go of what reading holds."""
        ...

    async def aclose(self) -> None:
        """Closes what it holds, on its loop."""
        ...

    def close(self) -> None:
        """Its loop has closed: lets go of what can be let go without it."""
        ...


class Subscriber:
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


class Hub:
    """One loop's live reader: reads for all its subscribers, and runs only while it has any."""

    def __init__(self, reader: Reader, sort_key: SortKey, buffer: int) -> None:
        self.reader = reader
        self.sort_key = sort_key
        self.buffer = buffer
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.task: asyncio.Task[None] | None = None
        self.started: asyncio.Future[None] | None = None

    def add(self, session_id: str) -> Subscriber:
        subscriber = Subscriber(session_id, self.buffer)
        self.subscribers.setdefault(session_id, set()).add(subscriber)
        if self.task is None or self.task.done():
            self.started = self.reader.start()
            self.task = asyncio.get_running_loop().create_task(self.run(), name="chat-events-hub")
        if self.started is not None and not self.started.done():
            subscriber.barrier = self.started
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        subscribers = self.subscribers.get(subscriber.session_id)
        if subscribers and subscriber in subscribers:
            subscribers.discard(subscriber)
            if not subscribers:
                del self.subscribers[subscriber.session_id]
                self.reader.forget(subscriber.session_id)

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
            self.sort_key(after)
        subscriber = self.add(session_id)
        try:
            # Registered before its backlog is read, so what the hub reads meanwhile is queued: the backlog and the
            # queue overlap, and the overlap is dropped by id.
            last = after
            while True:
                if subscriber.barrier is not None:
                    await asyncio.shield(subscriber.barrier)
                    subscriber.barrier = None
                page = await self.reader.backlog(session_id, last)
                for event in page:
                    yield event
                    last = event.id
                if subscriber.closed or not page or (len(page) < PAGE_SIZE and self.reader.caught_up(session_id, last)):
                    break
            if session_id in self.subscribers:  # a closed subscriber may have been the session's last
                await self.reader.follow(session_id, last)
            last_key = self.sort_key(last) if last is not None else None
            while (event := await subscriber.queue.get()) is not None:
                key = self.sort_key(event.id)
                if last_key is None or key > last_key:
                    last_key = key
                    yield event
        finally:
            self.remove(subscriber)

    async def run(self) -> None:
        try:
            while True:
                if not self.subscribers:
                    await self.reader.idle()
                    if not self.subscribers:
                        return
                    continue
                events, pause = await self.reader.read()
                self.dispatch(events)
                if pause:
                    await asyncio.sleep(pause)
        except Exception:
            # Its subscribers would wait forever: end them, so that their clients reconnect (and start a new hub).
            logger.exception("the chat event hub failed; closing its subscribers")
            self.close_all()
        finally:
            if self.started is not None and not self.started.done():
                self.started.set_result(None)  # however it ended, no subscriber may wait for it any longer

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
        await self.reader.aclose()


class LiveReading:
    """A log's hubs, one per event loop, each with a reader of its own."""

    def __init__(self, new_reader: Callable[[], Reader], sort_key: SortKey, buffer: int) -> None:
        self.new_reader = new_reader
        self.sort_key = sort_key
        self.buffer = buffer
        self._hubs: dict[asyncio.AbstractEventLoop, Hub] = {}

    def hub(self) -> Hub:
        loop = asyncio.get_running_loop()
        for closed in [other for other in self._hubs if other.is_closed()]:
            self._hubs.pop(closed).reader.close()
        if loop not in self._hubs:
            self._hubs[loop] = Hub(self.new_reader(), self.sort_key, self.buffer)
        return self._hubs[loop]

    def subscribe(self, session_id: str, after: str | None = None) -> AsyncIterator[Event]:
        return self.hub().stream(session_id, after)

    async def aclose(self) -> None:
        hub = self._hubs.pop(asyncio.get_running_loop(), None)
        if hub is not None:
            await hub.aclose()
