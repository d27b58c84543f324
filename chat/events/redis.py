"""The Redis Streams backend: a stream per session, read live with one XREAD over every followed stream."""

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import redis
import redis.asyncio
from asgiref.sync import sync_to_async

from chat.events import TRANSIENT_TYPES, Event, InvalidEventId, check_session, compact_json
from chat.events.hub import PAGE_SIZE, LiveReading

logger = logging.getLogger(__name__)

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


class RedisEventLog:
    """Events in Redis Streams, one per session (`<namespace>:events:<session_id>`); ids are the stream ids."""

    commits_with_the_database = False

    def __init__(
        self,
        url: str,
        *,
        maxlen: int,
        read_interval: float,
        buffer: int,
        namespace: str = "chat",
    ) -> None:
        self.url = url
        self.read_interval = read_interval
        self.namespace = namespace
        self.maxlen = maxlen
        self.buffer = buffer
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self._append = self.client.register_script(APPEND_SCRIPT)
        self._live = LiveReading(lambda: RedisReader(self), self.sort_key, buffer)

    def stream_key(self, session_id: str) -> str:
        return f"{self.namespace}:events:{session_id}"

    def keys_key(self, session_id: str) -> str:
        return f"{self.namespace}:event-keys:{session_id}"

    def append(self, session_id: str, events: Sequence[Event]) -> list[str]:
        check_session(session_id, events)
        if not events:
            return []
        args: list[str | int] = [self.maxlen]
        for event in events:
            args += [event.type, compact_json(event.data), event.key or ""]
        return list(self._append(keys=[self.stream_key(session_id), self.keys_key(session_id)], args=args))

    async def aappend(self, session_id: str, events: Sequence[Event]) -> list[str]:
        return await sync_to_async(self.append, thread_sensitive=False)(session_id, events)

    def read(self, session_id: str, after: str | None = None, limit: int = 1000) -> list[Event]:
        entries = self.client.xrange(self.stream_key(session_id), min=self.range_start(after), count=limit)
        return [self.entry_event(session_id, entry_id, fields) for entry_id, fields in entries]

    def subscribe(self, session_id: str, after: str | None = None) -> AsyncIterator[Event]:
        return self._live.subscribe(session_id, after)

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

    def compact(self, session_id: str, after: str | None, upto: str) -> int:
        self.sort_key(upto)
        stream = self.stream_key(session_id)
        entries = self.client.xrange(stream, min=self.range_start(after), max=f"({upto}")
        transient = [entry_id for entry_id, fields in entries if fields["type"] in TRANSIENT_TYPES]
        return self.client.xdel(stream, *transient) if transient else 0

    def delete(self, session_id: str) -> None:
        self.client.delete(self.stream_key(session_id), self.keys_key(session_id))

    def retire(self, session_id: str, keep_for: float) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for key in (self.stream_key(session_id), self.keys_key(session_id)):
                pipe.expire(key, max(1, round(keep_for)))
            pipe.execute()

    def trim(self, ended_before: datetime) -> int:
        """Nothing to do: retire() set the keys of ended sessions to expire."""
        return 0

    async def aclose(self) -> None:
        await self._live.aclose()


class RedisReader:
    """One XREAD BLOCK over every followed session's stream, from the last id it read of each.

    After a read that returned anything it waits read_interval, so that under load one XREAD (which names every
    followed stream) gathers many sessions' events instead of one.
    """

    block_ms = 2000

    def __init__(self, log: RedisEventLog) -> None:
        self.log = log
        # A pool of a few connections on this loop: one blocks in XREAD, the others read backlogs.
        self.client = redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                log.url, max_connections=8, timeout=20, decode_responses=True
            )
        )
        self.positions: dict[str, str] = {}  # session id -> the last id read of its stream
        # A stream of this reader's own in every XREAD, written to when a session is followed, so the XREAD takes
        # it in.
        self.wake_key = f"{log.namespace}:events-wake:{uuid.uuid4().hex}"
        self.wake_position = "0-0"
        self.wake_pending = False

    def start(self) -> None:
        self.wake_position = "0-0"

    async def read(self) -> tuple[list[Event], float]:
        streams = {self.log.stream_key(session_id): position for session_id, position in self.positions.items()}
        streams[self.wake_key] = self.wake_position
        self.wake_pending = False  # this read names every stream followed so far
        try:
            reply = await self.client.xread(streams, count=PAGE_SIZE, block=self.block_ms)
        except (redis.RedisError, OSError):
            logger.exception("reading chat events from Redis failed; retrying")
            await asyncio.sleep(1)
            return [], 0.0
        events: list[Event] = []
        for stream, entries in reply or ():
            if stream == self.wake_key:
                self.wake_position = entries[-1][0]
                continue
            session_id = stream.removeprefix(self.log.stream_key(""))
            position = self.positions.get(session_id)
            if position is None:
                continue  # its last subscriber left meanwhile
            if self.log.sort_key(entries[-1][0]) > self.log.sort_key(position):
                self.positions[session_id] = entries[-1][0]
            events += [self.log.entry_event(session_id, entry_id, fields) for entry_id, fields in entries]
        return events, self.log.read_interval if reply else 0.0

    async def backlog(self, session_id: str, after: str | None) -> list[Event]:
        entries = await self.client.xrange(
            self.log.stream_key(session_id), min=self.log.range_start(after), count=PAGE_SIZE
        )
        return [self.log.entry_event(session_id, entry_id, fields) for entry_id, fields in entries]

    def caught_up(self, session_id: str, last: str | None) -> bool:
        # The reader delivers what follows its position: a backlog must reach it.
        position = self.positions.get(session_id)
        if position is None:
            return True
        return last is not None and self.log.sort_key(last) >= self.log.sort_key(position)

    async def follow(self, session_id: str, last: str | None) -> None:
        if session_id in self.positions:
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

    async def idle(self) -> None:
        await self.client.delete(self.wake_key)

    async def aclose(self) -> None:
        await self.client.aclose(close_connection_pool=True)

    def close(self) -> None:
        pass  # its connections belong to the closed loop
