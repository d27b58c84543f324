"""Line 8: what one machine holds. Idle SSE clients on the web server (its memory, per stream and in all; its CPU while
they wait), and many turns streaming at once (every delta delivered, in order; how long after its append each reached
its client; the worker's CPU per message and per turn)."""

import asyncio
import datetime
import json
import statistics
import time
from contextlib import closing

from bench.load import Load, end_sessions, fan_out, p95, post_until_taken
from bench.phases.first_token import Follower
from bench.procs import log
from bench.project import EventType
from bench.results import CONCURRENCY, Config

IDLE_SECONDS = 5.0  # the idle streams' CPU is measured over this long
# The model server (--tools) answers this with a send_email call, which waits for the user's approval.
HELD_TURN = "email me the notes"


async def idle(load: Load, config: Config) -> None:
    """config.streams clients follow as many open sessions' event streams, each with nothing to say."""
    web, f = load.processes["web server"], load.results.figures
    while len(load.open["api"]) < 10:  # when run alone (BENCH_PHASES)
        await load.start("api")
    ids = [load.open["api"][i % len(load.open["api"])] for i in range(config.streams)]
    await load.quiesce()
    rss_before = web.rss_mb()
    async with load.stream_client() as http:
        followers = []
        for i in range(0, len(ids), 100):  # 100 at a time, as a crowd of browsers would arrive
            followers += [Follower(http, session_id) for session_id in ids[i : i + 100]]
            await asyncio.gather(*(follower.opened.wait() for follower in followers))
        await load.quiesce()
        cpu_before, t0 = web.cpu_seconds(), time.monotonic()
        await asyncio.sleep(IDLE_SECONDS)
        f["streams_idle_cpu"] = 100 * (web.cpu_seconds() - cpu_before) / (time.monotonic() - t0)
        f["streams_web_rss"], f["streams_web_rss_before"] = web.rss_mb(), rss_before
        f["streams_rss_per_stream_kb"] = 1024 * (f["streams_web_rss"] - rss_before) / len(ids)
        f["streams_threads"] = web.threads()
        f["streams_open"] = sum(not follower.task.done() for follower in followers)
        for follower in followers:
            await follower.close()
    log(
        f"{len(ids):,} idle streams: {f['streams_rss_per_stream_kb']:.0f} KB each, "
        f"{f['streams_idle_cpu']:.1f}% of a core while idle, {f['streams_threads']:.0f} threads"
    )


def order_key(event_id: str) -> tuple[int, ...]:
    """The log's order of its ids: the database's are integers, Redis Streams' are `milliseconds-sequence`."""
    return tuple(int(part) for part in event_id.split("-"))


def appended_at(load: Load, event_ids: list[str]) -> dict[str, float]:
    """When each event was appended, in the epoch's seconds: a Redis Streams id begins with its milliseconds; the
    database log's row has its created_at."""
    if all("-" in event_id for event_id in event_ids):
        return {event_id: int(event_id.split("-")[0]) / 1000 for event_id in event_ids}
    found: dict[str, float] = {}
    with closing(load.db.connect()) as conn:
        for i in range(0, len(event_ids), 500):
            chunk = [int(event_id) for event_id in event_ids[i : i + 500]]
            marks = ",".join(["%s"] * len(chunk))
            for event_id, created in conn.execute(
                f"SELECT id, created_at FROM chat_chatevent WHERE id IN ({marks})", tuple(chunk)
            ).fetchall():
                if isinstance(created, str):  # SQLite: naive UTC text
                    created = datetime.datetime.fromisoformat(created).replace(tzinfo=datetime.UTC)
                found[str(event_id)] = created.timestamp()
    return found


async def turns_at_once(load: Load, config: Config) -> None:
    """config.turns sessions, each followed on its event stream, are sent a message at once; each reply (a dozen
    words at the model server's pace) must reach its follower whole and in order."""
    n, f = config.turns, load.results.figures
    ids: list[str] = []

    async def start() -> None:
        ids.append(await load.start("api"))

    held = await holding_turns(load, n)  # for the message's CPU alone, measured after the turns
    await fan_out(n, CONCURRENCY, start)
    await held_on_approval(load, held)
    await load.drain()
    question = "please tell me about " + " ".join(f"topic{k}" for k in range(9))
    spent: dict[str, float] = {}
    retried: list[str] = []
    async with load.stream_client() as http:
        followers = [Follower(http, session_id) for session_id in ids]
        await asyncio.gather(*(follower.opened.wait() for follower in followers))
        with load.charge(spent):
            posted = await asyncio.gather(*(post_until_taken(load, s, question, retried) for s in ids))
            replies = [json.loads(body)["reply_seq"] for body in posted]
            stored = (follower.stored_event(seq).wait() for follower, seq in zip(followers, replies, strict=True))
            await asyncio.gather(*(asyncio.wait_for(done, 120) for done in stored))
            await load.quiesce()
        for follower in followers:
            await follower.close()
    whole = in_order = 0
    deltas: list[tuple[str, float]] = []
    for follower, seq in zip(followers, replies, strict=True):
        events = [e for e in follower.events if e.data.get("turn") == seq or e.data.get("seq") == seq]
        ids_seen = [order_key(e.id) for e in events]
        in_order += ids_seen == sorted(ids_seen)
        whole += follower.reply_text(seq) == follower.stored_content(seq)
        deltas += [(e.id, e.at) for e in events if e.type == EventType.DELTA]
    when = appended_at(load, [event_id for event_id, _ in deltas])
    latencies = [1000 * (at - when[event_id]) for event_id, at in deltas]
    f["turns_n"], f["turns_whole"], f["turns_in_order"] = n, whole, in_order
    f["turns_deltas"], f["turns_retried"] = len(deltas), len(retried)
    f["turns_delivery_p50"], f["turns_delivery_p95"] = statistics.median(latencies), p95(latencies)
    f["turns_worker_cpu"] = 1000 * spent["worker"] / n
    f["turns_message_cpu"] = await messages_alone(load, held, question)
    f["turns_turn_cpu"] = f["turns_worker_cpu"] - f["turns_message_cpu"]
    log(
        f"{n} turns at once: {whole} whole, {in_order} in order, {len(deltas)} deltas, {len(retried)} posts retried, "
        f"delivery p95 {f['turns_delivery_p95']:.0f} ms, worker CPU {f['turns_worker_cpu']:.0f} ms a message and its "
        f"turn: {f['turns_message_cpu']:.0f} ms the message, {f['turns_turn_cpu']:.0f} ms the turn"
    )


async def holding_turns(load: Load, n: int) -> list[str]:
    """n new sessions whose first message asks for a tool call that waits for the user's approval: each holds its
    turn there, and the turns of the messages posted after it wait behind it."""
    ids: list[str] = []

    async def start() -> None:
        ids.append(await load.start("api", stay_open=False))  # ended by messages_alone

    await fan_out(n, CONCURRENCY, start)
    await asyncio.gather(*(post_until_taken(load, session_id, HELD_TURN, []) for session_id in ids))
    return ids


async def awaiting_approval(load: Load, session_id: str) -> bool:
    async with load.http["api"].get(f"/api/sessions/{session_id}/") as response:
        live = (await response.json())["live"]
    return bool(live and live.get("awaiting_approval"))


async def held_on_approval(load: Load, ids: list[str]) -> None:
    """Waits until each session's turn waits for the user's approval."""
    waiting, deadline = set(ids), time.monotonic() + 60
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} of {len(ids)} sessions' replies never awaited approval")
        asked = list(waiting)
        held = await asyncio.gather(*(awaiting_approval(load, session_id) for session_id in asked))
        waiting -= {session_id for session_id, yes in zip(asked, held, strict=True) if yes}
        await asyncio.sleep(0.1)


async def messages_alone(load: Load, ids: list[str], content: str) -> float:
    """The worker's CPU per message stored whose turn does not run, in ms: the sessions of holding_turns are sent
    `content` at once; from the posts until every message is stored and the workers are idle. The sessions are
    ended after."""
    t0 = time.monotonic()
    await load.quiesce()
    spent: dict[str, float] = {}
    with load.charge(spent):
        await asyncio.gather(*(post_until_taken(load, session_id, content, []) for session_id in ids))
        await load.quiesce()
    await end_sessions(load, ids)
    await load.drain()
    load.results.timings["8 of which the messages alone, after the turns"] = time.monotonic() - t0
    return 1000 * spent["worker"] / len(ids)
