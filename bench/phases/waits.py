"""Line 11: another user's requests while one user waits on 50 slow replies (`?wait=true`; 25 at BENCH_SCALE=small),
beside the same requests with nothing waiting; and the event log's rows each stored reply leaves once its text is
compacted."""

import asyncio
import math
import statistics
import time

import aiohttp

from bench.load import Load, end_sessions
from bench.procs import log
from bench.results import Config

# The model server answers "You said: <prompt>" a word every 30 ms: a prompt this long keeps each reply being written
# for a few seconds, while the other user's requests are measured.
SLOW_PROMPT = " ".join(f"word{n}" for n in range(150))
EVENTS = (
    "SELECT COUNT(*) FROM chat_chatevent e JOIN chat_chatsession s ON s.id = e.session_id WHERE s.session_id IN ({})"
)
REPLIES = (
    "SELECT COUNT(*) FROM chat_chatmessage m JOIN chat_chatsession s ON s.id = m.session_id "
    "WHERE m.role = 'assistant' AND s.session_id IN ({})"
)


def p99(values: list[float]) -> float:
    return sorted(values)[math.ceil(0.99 * len(values)) - 1]  # nearest rank


async def requests_of_another_user(other: aiohttp.ClientSession, n: int) -> list[float]:
    """n of another user's `GET /api/sessions/`, one after another; their times in ms."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with other.get("/api/sessions/") as response:
            assert response.status == 200, await response.text()
            await response.read()
        times.append(1000 * (time.perf_counter() - t0))
    return times


async def measure(load: Load, config: Config) -> None:
    n = config.other_requests
    other = load.http_client(load.web.url, token=load.rig.setup["other_token"])
    try:
        idle = await requests_of_another_user(other, n)
        sessions = [await load.start("api", stay_open=False) for _ in range(config.waits)]  # they end below
        await load.drain()
        waits = [
            asyncio.create_task(
                load.post("api", f"/api/sessions/{s}/messages/?wait=true", {"content": SLOW_PROMPT}, 201)
            )
            for s in sessions
        ]
        await asyncio.sleep(1)  # the posts stored, their replies being written
        busy = await requests_of_another_user(other, n)
        still_waiting = sum(not w.done() for w in waits)
        await asyncio.gather(*waits)
        await end_sessions(load, sessions)  # an end compacts the last reply's text as written
    finally:
        await other.close()
    ids = ",".join(f"'{s}'" for s in sessions)  # hex ids the server gave
    events = (await asyncio.to_thread(load.db.query, EVENTS.format(ids)))[0]
    replies = (await asyncio.to_thread(load.db.query, REPLIES.format(ids)))[0]
    figures = load.results.figures
    figures |= {"other_idle_p50": statistics.median(idle), "other_idle_p99": p99(idle)}
    figures |= {"other_busy_p50": statistics.median(busy), "other_busy_p99": p99(busy)}
    per_exchange = (events - len(sessions)) / replies  # without each session's session_ended
    figures |= {"waits_pending": still_waiting, "waits": config.waits, "event_rows_per_exchange": per_exchange}
    log(
        f"another user's list p99: {p99(idle):.1f} ms idle, {p99(busy):.1f} ms while {still_waiting} of {config.waits} "
        f"waits were pending; {per_exchange:.2f} event rows per message and its stored reply"
    )
