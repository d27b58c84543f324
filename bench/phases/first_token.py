"""Line 7: time to the first token. The local model server (devtools/model_server.py, at a set pace) answers the
project's worker; an SSE client of the project's event stream times `POST .../messages/` to the first `delta` of
its reply, and the same client times the server's own first token directly (a streamed completion, to its first
content chunk), at the same concurrency, in the same rounds. The overhead is the difference: the workflow, the
activity, pydantic-ai, the event log and the stream. Twenty at once is measured on the one worker, then with a second
worker process beside it."""

import asyncio
import json
import statistics
import time
from dataclasses import dataclass

import aiohttp

from bench.load import Load, end_sessions, p95, post_until_taken
from bench.project import EventType, workflow_id_for
from bench.results import Config

LEVELS = (1, 20)  # sessions whose messages are posted at once
TWO_WORKERS = 20  # the level measured again with a second worker process
STARTED = "workflow_task_started_event_attributes"


@dataclass(frozen=True)
class Received:
    id: str
    type: str
    data: dict
    at: float  # time.time() when it arrived, to compare with when it was appended


class Follower:
    """One session's event stream, read as a browser's EventSource would: every event, and when it came."""

    def __init__(self, http: aiohttp.ClientSession, session_id: str) -> None:
        self.http, self.session_id = http, session_id
        self.opened = asyncio.Event()  # the server answered and sent its first line
        self.events: list[Received] = []
        self.first_delta: dict[int, float] = {}  # turn -> perf_counter() of its first delta
        self.stored: dict[int, asyncio.Event] = {}
        self.writing: dict[int, asyncio.Event] = {}  # turn -> set by its first delta
        self.task = asyncio.create_task(self.read())

    def stored_event(self, seq: int) -> asyncio.Event:
        return self.stored.setdefault(seq, asyncio.Event())

    def writing_event(self, turn: int) -> asyncio.Event:
        return self.writing.setdefault(turn, asyncio.Event())

    async def read(self) -> None:
        async with self.http.get(f"/api/sessions/{self.session_id}/events/") as response:
            if response.status != 200:
                raise RuntimeError(f"events of {self.session_id}: {response.status} {await response.text()}")
            fields: dict[str, str] = {}
            async for raw in response.content:
                self.opened.set()
                line = raw.decode().rstrip("\n")
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if "event" in fields:
                    event = Received(fields["id"], fields["event"], json.loads(fields["data"]), time.time())
                    self.events.append(event)
                    if event.type == EventType.DELTA:
                        self.first_delta.setdefault(event.data["turn"], time.perf_counter())
                        self.writing_event(event.data["turn"]).set()
                    elif event.type == EventType.MESSAGE:
                        self.stored_event(event.data["seq"]).set()
                fields = {}

    def reply_text(self, turn: int) -> str:
        """The reply as a client shows it: its deltas, starting again at each reset."""
        text = ""
        for event in self.events:
            if event.type == EventType.RESET and event.data["turn"] == turn:
                text = ""
            elif event.type == EventType.DELTA and event.data["turn"] == turn:
                text += event.data["text"]
        return text

    def stored_content(self, seq: int) -> str | None:
        stored = (e.data["content"] for e in self.events if e.type == EventType.MESSAGE and e.data["seq"] == seq)
        return next(stored, None)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def through_project(load: Load, follower: Follower) -> float:
    t0 = time.perf_counter()
    url = f"/api/sessions/{follower.session_id}/messages/"
    reply = json.loads(await load.post("api", url, {"content": "hi"}, 201))["reply_seq"]
    await asyncio.wait_for(follower.stored_event(reply).wait(), 60)
    return 1000 * (follower.first_delta[reply] - t0)


async def direct(http: aiohttp.ClientSession, model_url: str) -> float:
    body = {"model": "bench-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    t0 = time.perf_counter()
    async with http.post(f"{model_url}/chat/completions", json=body) as response:
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                took = 1000 * (time.perf_counter() - t0)
                break
        async for _ in response.content:  # the rest of the answer, as the worker reads it
            pass
    return took


async def level(
    load: Load, streams: aiohttp.ClientSession, model: aiohttp.ClientSession, ids: list[str], rounds: int, key: str
) -> None:
    """`rounds` rounds of a message posted to each of the sessions `ids` at once, beside as many of the model's own
    first tokens; the figures ttft_<key>_*."""
    followers = [Follower(streams, session_id) for session_id in ids]
    project, own = [], []
    try:
        for _ in range(rounds):
            own += await asyncio.gather(*(direct(model, load.rig.model_url) for _ in ids))
            project += await asyncio.gather(*(through_project(load, f) for f in followers))
    finally:
        for follower in followers:
            await follower.close()
    f = load.results.figures
    f[f"ttft_{key}_project_p50"], f[f"ttft_{key}_project_p95"] = statistics.median(project), p95(project)
    f[f"ttft_{key}_model_p50"], f[f"ttft_{key}_model_p95"] = statistics.median(own), p95(own)
    f[f"ttft_{key}_overhead_p50"] = f[f"ttft_{key}_project_p50"] - f[f"ttft_{key}_model_p50"]
    f[f"ttft_{key}_overhead_p95"] = f[f"ttft_{key}_project_p95"] - f[f"ttft_{key}_model_p95"]


async def measure(load: Load, config: Config) -> None:
    rounds = {1: max(5, config.messages // 4), 20: max(3, config.messages // 20)}
    streams = load.stream_client()
    model = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(60))
    try:
        for n in LEVELS:
            ids = [await load.start("api") for _ in range(n)]
            await load.drain()
            await level(load, streams, model, ids, rounds[n], str(n))
            await load.drain()
        await on_two_workers(load, streams, model, rounds[TWO_WORKERS])
    finally:
        await streams.close()
        await model.close()


async def on_two_workers(load: Load, streams: aiohttp.ClientSession, model: aiohttp.ClientSession, rounds: int) -> None:
    """TWO_WORKERS sessions at once again, with a second worker process polling the same task queue: new sessions,
    whose first workflow task either worker takes (their turns then run on that worker), each answering its first
    message before the rounds, so that the second worker has run a turn before it is timed. The sessions are ended
    before the second worker stops, so no session is left on a queue no worker polls."""
    t0 = time.monotonic()
    with load.rig.second_worker() as worker:
        await asyncio.to_thread(worker.wait_ready)
        ids = await asyncio.gather(*(load.start("api", stay_open=False) for _ in range(TWO_WORKERS)))
        firsts = [Follower(streams, session_id) for session_id in ids]
        try:
            await asyncio.gather(*(post_until_taken(load, session_id, "hi", []) for session_id in ids))
            await asyncio.gather(*(asyncio.wait_for(follower.stored_event(2).wait(), 60) for follower in firsts))
        finally:
            for follower in firsts:
                await follower.close()
        await load.drain()
        await level(load, streams, model, ids, rounds, f"{TWO_WORKERS}_two")
        worker.check_alive()
        second = await asyncio.gather(*(ran_on(load, session_id, worker.pid) for session_id in ids))
        load.results.figures[f"ttft_{TWO_WORKERS}_two_on_second"] = sum(second)
        await end_sessions(load, ids)
        await asyncio.to_thread(worker.stop)
    load.results.timings["7 of which two workers"] = time.monotonic() - t0


async def ran_on(load: Load, session_id: str, pid: int) -> bool:
    """Whether the session's last workflow task ran on the worker process `pid` (a worker's identity is pid@host)."""
    history = await load.client.get_workflow_handle(workflow_id_for(session_id)).fetch_history()
    tasks = [e.workflow_task_started_event_attributes.identity for e in history.events if e.HasField(STARTED)]
    return tasks[-1].startswith(f"{pid}@")
