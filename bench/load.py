"""Both sides' clients on one rig (the API over HTTP, the raw SDK over gRPC), and the tools every phase measures with.

Samples of the two sides are interleaved or alternated, so that the shared machine's noise falls on both.
"""

import asyncio
import contextlib
import itertools
import json
import math
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Self

import aiohttp
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from bench.procs import Rig, WebServer
from bench.project import ChatSessionWorkflow, SessionOptions, workflow_id_for
from bench.raw_worker import RawDB
from bench.raw_workflows import RawSessionWorkflow
from bench.results import CONCURRENCY, Results

# The project's API, its peer (FastAPI and the same SDK: bench.fastapi_peer, whose session ids start with "fa-") and the
# raw SDK. The first two write the project's table.
SIDES = ("api", "fastapi", "raw")
ENDING = 8  # sessions ended at once: an end runs a few activities, and its update must answer within the RPC timeout
ROWS = {
    "api": "SELECT COUNT(*) FROM chat_chatsession WHERE substr(session_id, 1, 3) <> 'fa-'",
    "fastapi": "SELECT COUNT(*) FROM chat_chatsession WHERE substr(session_id, 1, 3) = 'fa-'",
    "raw": "SELECT COUNT(*) FROM bench_raw_session",
}


class Load:
    """Starts and messages sessions of either side, counting the rows each should have written and what stays open."""

    def __init__(self, rig: Rig, web: WebServer, results: Results, peer: WebServer | None = None) -> None:
        self.rig, self.web, self.peer, self.results = rig, web, peer, results
        self.sides = SIDES if peer else ("api", "raw")
        self.db = RawDB(rig.database_url, rig.setup["busy_timeout"])
        self.open: dict[str, list[str]] = {side: [] for side in self.sides}  # session ids (API), workflow ids (raw)
        self.queues = {"api": rig.env["TEMPORAL_TASK_QUEUE"], "raw": rig.raw_task_queue}  # the peer's: the API's
        self.processes = rig.processes | {"web server": web} | ({"fastapi peer": peer} if peer else {})

    async def __aenter__(self) -> Self:
        self.client = await Client.connect(self.rig.address)
        # aiohttp, not httpx: on this machine httpx spent 4x the CPU per request (2.7 against 0.6 ms, measured side
        # by side), CPU taken from the two cores the measured processes share. Idle connections are dropped after
        # 1 s, before gunicorn's 2 s keep-alive closes them under a request.
        servers = {"api": self.web, "fastapi": self.peer}
        self.http = {side: self.http_client(servers[side].url) for side in self.sides if side != "raw"}
        self.rows = {side: await self.count(side) for side in self.sides}  # expected once every start is written
        return self

    def http_client(self, url: str, token: str | None = None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            url,
            connector=aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=1),
            headers={"Authorization": f"Token {token or self.rig.setup['token']}"},
            timeout=aiohttp.ClientTimeout(60),
        )

    def stream_client(self) -> aiohttp.ClientSession:
        """For the API's event streams: a connection for each (as a browser tab holds one), no time limit."""
        return aiohttp.ClientSession(
            self.web.url,
            connector=aiohttp.TCPConnector(limit=0),
            headers={"Authorization": f"Token {self.rig.setup['token']}"},
            timeout=aiohttp.ClientTimeout(),
        )

    async def __aexit__(self, *exc: object) -> None:
        for http in self.http.values():
            await http.close()

    def cpu(self) -> dict[str, float]:
        own = os.times()
        return {name: p.cpu_seconds() for name, p in self.processes.items()} | {"bench client": own.user + own.system}

    @contextlib.contextmanager
    def charge(self, spent: dict[str, float]) -> Iterator[None]:
        """Adds the CPU seconds each process spends in the block to `spent`."""
        before = self.cpu()
        yield
        for name, seconds in self.cpu().items():
            spent[name] = spent.get(name, 0.0) + seconds - before[name]

    async def count(self, side: str) -> int:
        return (await asyncio.to_thread(self.db.query, ROWS[side]))[0]

    async def wait_rows(self, side: str, expected: int, limit: float = 600) -> float:
        """Polls until the side's table holds `expected` rows; returns the monotonic time it was first seen."""
        deadline = time.monotonic() + limit
        while (found := await self.count(side)) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{found} rows of side {side}, expected {expected}")
            self.rig.check_alive()
            for server in (self.web, self.peer):
                if server:
                    server.check_alive()
            await asyncio.sleep(0.02)
        return time.monotonic()

    async def drain(self) -> None:
        for side in self.sides:
            await self.wait_rows(side, self.rows[side])
        await self.quiesce()

    async def quiesce(self, limit: float = 60) -> None:
        """Waits until the workers and the server are idle (under 5% of a core over 0.5 s)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            spent: dict[str, float] = {}
            with self.charge(spent):
                await asyncio.sleep(0.5)
            if all(spent[k] < 0.025 for k in ("worker", "raw worker", "temporal")):
                return

    async def post(self, side: str, url: str, body: dict, expected: int) -> str:
        async with self.http[side].post(url, json=body) as response:
            if response.status != expected:
                raise RuntimeError(f"POST {url}: {response.status} {(await response.text())[:200]}")
            return await response.text()

    async def start(
        self, side: str, *, by_client: bool = False, stay_open: bool = True, content: str | None = None
    ) -> str:
        """Starts a session, returns its id: an API or peer one by `POST /api/sessions/` (the server names it, as the
        README's clients let it) or, `by_client`, as chat.gateway starts one, minus the HTTP and Django; a raw one with
        the raw client, open for messages or (not `stay_open`) completing after its activity. With `content`, the
        first message rides on the start (update-with-start); `by_client`, as chat.gateway sends it."""
        name, user, queue = uuid.uuid4().hex, self.rig.setup["user_id"], self.queues.get(side)
        body = {} if content is None else {"content": content}
        if side in ("api", "fastapi") and not by_client:
            key = json.loads(await self.post(side, "/api/sessions/", body, 202))["session_id"]
        elif side == "api":
            key = name
            start = {"args": [user, name, SessionOptions(), None], "id": workflow_id_for(key), "task_queue": queue}
            if content is None:
                await self.client.start_workflow(ChatSessionWorkflow.run, **start)
            else:
                operation = WithStartWorkflowOperation(
                    ChatSessionWorkflow.run, id_conflict_policy=WorkflowIDConflictPolicy.FAIL, **start
                )
                await self.client.execute_update_with_start_workflow(
                    ChatSessionWorkflow.post_message, content, start_workflow_operation=operation
                )
        else:
            key = f"raw-{name}"
            await self.client.start_workflow(
                RawSessionWorkflow.run, args=[user, name, stay_open], id=key, task_queue=queue
            )
        self.rows[side] += 1
        if stay_open:
            self.open[side].append(key)
        return key

    async def message(self, side: str, key: str) -> None:
        if side in ("api", "fastapi"):
            await self.post(side, f"/api/sessions/{key}/messages/", {"content": "hello"}, 201)
        else:
            await self.client.get_workflow_handle(key).execute_update(RawSessionWorkflow.post_message, "hello")


async def post_until_taken(load: Load, session_id: str, content: str, retried: list[str]) -> str:
    """Posts a message as the API asks a client to: a 503 is retried with the same client_message_id."""
    body = {"content": content, "client_message_id": uuid.uuid4().hex}
    path = f"/api/sessions/{session_id}/messages/"
    return await _post_retried(load, path, body, lambda status, _: status == 201, lambda: retried.append(session_id))


async def end_sessions(load: Load, ids: list[str]) -> None:
    """Ends the sessions, ENDING at a time; a 503 is retried after its Retry-After, and a retry's 409 (ended) means
    the attempt before it ended the session."""
    pending = iter(ids)

    async def end() -> None:
        path = f"/api/sessions/{next(pending)}/end/"
        await _post_retried(load, path, {}, lambda status, retries: status == 200 or (retries and status == 409))

    await fan_out(len(ids), ENDING, end)


async def _post_retried(
    load: Load, path: str, body: dict, done: Callable[[int, int], bool], on_retry: Callable[[], object] = lambda: None
) -> str:
    """POSTs to the API until `done(status, retries so far)`; a 503 is retried after its Retry-After, anything else
    is an error."""
    retries = 0
    async with asyncio.timeout(120):
        while True:
            async with load.http["api"].post(path, json=body) as response:
                if done(response.status, retries):
                    return await response.text()
                if response.status != 503:
                    raise RuntimeError(f"POST {path}: {response.status} {(await response.text())[:200]}")
                retries += 1
                on_retry()
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


async def fan_out(n: int, concurrency: int, one: Callable[[], Awaitable[object]]) -> float:
    """Runs `one` n times on `concurrency` clients at once; returns the elapsed seconds."""
    counter = itertools.count()

    async def client() -> None:
        while next(counter) < n:
            await one()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(concurrency, n))))
    return time.perf_counter() - t0


async def interleaved(
    n: int, call: Callable[[str, int], Awaitable[object]], spacing: float = 0.0, sides: tuple[str, ...] = SIDES
) -> dict[str, list[float]]:
    """call(side, i) n times for each side, one of each in turn, the order alternating; their times in ms. With
    `spacing`, each call comes that many seconds after the one before ended (the machine idle in between)."""
    samples: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(n):
        for side in sides[:: 1 if i % 2 == 0 else -1]:
            if spacing:
                await asyncio.sleep(spacing)
            t0 = time.perf_counter()
            await call(side, i)
            samples[side].append(1000 * (time.perf_counter() - t0))
    return samples


def p95(values: list[float]) -> float:
    return sorted(values)[math.ceil(0.95 * len(values)) - 1]  # nearest rank


def record_latencies(results: Results, key: str, samples: dict[str, list[float]]) -> None:
    for side, values in samples.items():
        results.figures[f"{key}_p50_{side}"] = statistics.median(values)
        results.figures[f"{key}_p95_{side}"] = p95(values)
