"""Both sides' clients on one rig (the API over HTTP, the raw SDK over gRPC), and the tools every phase measures with.

Samples of the two sides are interleaved or alternated, so that the shared machine's noise falls on both.
"""

import asyncio
import contextlib
import itertools
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Self

import aiohttp
from temporalio.client import Client, WorkflowHandle

from bench.procs import Rig, WebServer, cpu_seconds
from bench.project import ChatSessionWorkflow, SessionOptions, workflow_id_for
from bench.raw_activities import RawDB
from bench.raw_workflows import RawSessionWorkflow
from bench.results import CONCURRENCY, Results

SIDES = ("api", "raw")
TABLES = {"api": "chat_chatsession", "raw": "bench_raw_session"}


class Load:
    """Starts and messages sessions of either side, counting the rows each should have written and what stays open."""

    def __init__(self, rig: Rig, web: WebServer, results: Results, prefix: str = "") -> None:
        self.rig, self.web, self.results = rig, web, results
        self.prefix = prefix  # of the raw workflow ids, when one rig measures the same phases again
        self.db = RawDB(rig.database_url, rig.setup["busy_timeout"])
        self.open: dict[str, list[str]] = {"api": [], "raw": []}  # session ids (API), workflow ids (raw)

    async def __aenter__(self) -> Self:
        self.client = await Client.connect(self.rig.address)
        # aiohttp, not httpx: on this machine httpx spent 4x the CPU per request (2.7 against 0.6 ms, measured side
        # by side), CPU taken from the two cores the measured processes share. Idle connections are dropped after
        # 1 s, before gunicorn's 2 s keep-alive closes them under a request.
        self.http = aiohttp.ClientSession(
            self.web.url,
            connector=aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=1),
            headers={"Authorization": f"Token {self.rig.setup['token']}"},
            timeout=aiohttp.ClientTimeout(60),
        )
        self.rows = {side: await self.count(side) for side in SIDES}  # expected once every start is written
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    def cpu(self) -> dict[str, float]:
        rig, own = self.rig, os.times()
        pids = {"temporal": rig.temporal, "worker": rig.worker, "raw worker": rig.raw_worker, "web server": self.web}
        return {name: cpu_seconds(p.pid) for name, p in pids.items()} | {"bench client": own.user + own.system}

    @contextlib.contextmanager
    def charge(self, spent: dict[str, float]) -> Iterator[None]:
        """Adds the CPU seconds each process spends in the block to `spent`."""
        before = self.cpu()
        yield
        for name, seconds in self.cpu().items():
            spent[name] = spent.get(name, 0.0) + seconds - before[name]

    async def count(self, side: str) -> int:
        return (await asyncio.to_thread(self.db.query, f"SELECT COUNT(*) FROM {TABLES[side]}"))[0]

    async def wait_rows(self, side: str, expected: int, limit: float = 600) -> float:
        """Polls until the side's table holds `expected` rows; returns the monotonic time it was first seen."""
        deadline = time.monotonic() + limit
        while (found := await self.count(side)) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{TABLES[side]} has {found} rows, expected {expected}")
            self.rig.check_alive()
            self.web.check_alive()
            await asyncio.sleep(0.02)
        return time.monotonic()

    async def drain(self) -> None:
        for side in SIDES:
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

    async def post(self, url: str, body: dict) -> tuple[int, str]:
        """One POST: (status, body); retried once if the connection broke before an answer (counted as an error)."""

        async def once() -> tuple[int, str]:
            async with self.http.post(url, json=body) as response:
                return response.status, await response.text()

        try:
            return await once()
        except aiohttp.ClientConnectionError as exc:
            self.results.error(f"{type(exc).__name__} on {url.split('/')[-2]} POST, retried")
            return await once()

    async def api_start(self) -> str:
        """POST /api/sessions/ with no session id, as the README's clients do: the server generates one."""
        status, text = await self.post("/api/sessions/", {})
        if status != 202:
            self.results.error(f"POST /api/sessions/ answered {status}")
            raise RuntimeError(f"start: {status} {text[:200]}")
        session_id = json.loads(text)["session_id"]
        self.rows["api"] += 1
        self.open["api"].append(session_id)
        return session_id

    async def api_start_raw_client(self, session_id: str) -> None:
        """A project session started as chat.services.session_start starts it, minus the HTTP and Django."""
        await self.client.start_workflow(
            ChatSessionWorkflow.run, args=[self.rig.setup["user_id"], session_id, SessionOptions(), None],
            id=workflow_id_for(session_id), task_queue=self.rig.env["TEMPORAL_TASK_QUEUE"],
        )  # fmt: skip
        self.rows["api"] += 1
        self.open["api"].append(session_id)

    async def raw_start(self, name: str, stay_open: bool = True) -> WorkflowHandle:
        session_id = self.prefix + name
        handle = await self.client.start_workflow(
            RawSessionWorkflow.run, args=[self.rig.setup["user_id"], session_id, stay_open], id=f"raw-{session_id}",
            task_queue=self.rig.raw_options["worker"]["task_queue"],
        )  # fmt: skip
        self.rows["raw"] += 1
        if stay_open:
            self.open["raw"].append(handle.id)
        return handle

    async def api_message(self, session_id: str, n: int) -> None:
        status, text = await self.post(f"/api/sessions/{session_id}/messages/", {"content": f"message {n}"})
        if status != 201:
            self.results.error(f"POST messages answered {status}")
            raise RuntimeError(f"message to {session_id}: {status} {text[:200]}")

    async def raw_message(self, workflow_id: str, n: int) -> None:
        await self.client.get_workflow_handle(workflow_id).execute_update(
            RawSessionWorkflow.post_message, f"message {n}"
        )


async def fan_out(n: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> float:
    """Runs one(0..n-1) on `concurrency` clients at once; returns the elapsed seconds."""
    counter = itertools.count()

    async def client() -> None:
        while (i := next(counter)) < n:
            await one(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(concurrency, n))))
    return time.perf_counter() - t0


async def interleaved(
    n: int, api: Callable[[int], Awaitable[object]], raw: Callable[[int], Awaitable[object]]
) -> tuple[list[float], list[float]]:
    """n sequential calls of each side, one of each in turn, the order alternating; their times in ms."""
    samples: dict[str, list[float]] = {"api": [], "raw": []}
    for i in range(n):
        for side, call in [("api", api), ("raw", raw)][:: 1 if i % 2 == 0 else -1]:
            t0 = time.perf_counter()
            await call(i)
            samples[side].append(1000 * (time.perf_counter() - t0))
    return samples["api"], samples["raw"]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def record_latencies(results: Results, key: str, api: list[float], raw: list[float]) -> None:
    for side, samples in (("api", api), ("raw", raw)):
        results.figures[f"{key}_p50_{side}"] = statistics.median(samples)
        results.figures[f"{key}_p95_{side}"] = pct(samples, 95)
