"""The bench: starts its own Temporal dev server, workers and gunicorn, measures, prints, writes docs/benchmarks.*.

Every figure of the project's path (HTTP -> gunicorn -> Django -> Temporal -> worker -> ORM) is measured in the same
run as the same figure of a raw-SDK baseline (bench.raw_workflows on bench.raw_worker: the same database work, no
Django), interleaved or alternated so that the machine's noise falls on both; the targets are ratios.
"""

import asyncio
import dataclasses
import itertools
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from temporalio.client import Client, WorkflowHandle

from bench import procs
from bench.raw_workflows import RawSessionWorkflow
from bench.rawdb import RawDB, count_rows, create_tables
from chat.types import SessionOptions
from chat.workflows import ChatSessionWorkflow, workflow_id_for

CONCURRENCY = 32  # clients at once in the throughput measurements, as in tests/test_load.py
SETUP_CONCURRENCY = 64  # raw-client starts at once while opening sessions for the scale levels
OPEN_WINDOW = 100  # sessions started but not yet written, at most, while opening them for the scale levels
PROFILES = {
    # samples per side: sequential latencies, sessions per throughput burst (x rounds), messages, scale levels
    "full": {"seq": 100, "burst": 150, "rounds": 2, "messages": 100, "levels": [10, 1000, 10000], "level_messages": 60},
    "small": {"seq": 40, "burst": 100, "rounds": 1, "messages": 40, "levels": [10, 500], "level_messages": 30},
}


def http_session(url: str, token: str) -> aiohttp.ClientSession:
    """The load generator's HTTP client. aiohttp, not httpx: on this machine httpx spent 4x the CPU per request
    (2.7 against 0.6 ms, measured side by side), CPU taken from the two cores the measured processes share."""
    # Idle connections are dropped after 1 s, before gunicorn's 2 s keep-alive closes them under a request.
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=1)
    return aiohttp.ClientSession(
        url, connector=connector, headers={"Authorization": f"Token {token}"}, timeout=aiohttp.ClientTimeout(60)
    )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Config:
    scale: str
    seq: int
    burst: int
    rounds: int
    messages: int
    levels: list[int]
    level_messages: int
    scale_raw_max: int
    out_dir: Path
    keep_tmp: bool

    @classmethod
    def from_env(cls) -> "Config":
        scale = os.environ.get("BENCH_SCALE", "full")
        if scale not in PROFILES:
            raise SystemExit(f"BENCH_SCALE={scale!r}: use one of {', '.join(PROFILES)}")
        p = dict(PROFILES[scale])
        for key in ("seq", "burst", "rounds", "messages", "level_messages"):
            if f"BENCH_{key.upper()}" in os.environ:
                p[key] = int(os.environ[f"BENCH_{key.upper()}"])
        if os.environ.get("BENCH_LEVELS"):
            p["levels"] = sorted(int(n) for n in os.environ["BENCH_LEVELS"].split(","))
        return cls(
            scale=scale,
            **p,
            scale_raw_max=int(os.environ.get("BENCH_SCALE_RAW_MAX", "100")),
            out_dir=Path(os.environ.get("BENCH_OUT_DIR", procs.REPO / "docs")),
            keep_tmp=os.environ.get("BENCH_KEEP_TMP", "0") == "1",
        )


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Results:
    figures: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> process -> CPU ms per operation
    errors: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def set(self, key: str, value: float) -> None:
        self.figures[key] = value

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Bench:
    def __init__(self, config: Config, tmp: Path) -> None:
        self.config = config
        self.tmp = tmp
        self.results = Results()
        self.run = uuid.uuid4().hex[:6]
        self.round = ""  # a prefix for the raw workflow ids, when one run measures the same phases again
        self.queue = f"bench-{self.run}"
        self.raw_queue = f"bench-raw-{self.run}"
        self.stack: list[Callable[[], None]] = []  # stops, last started first
        self.open_project: list[str] = []  # session ids of open ChatSessionWorkflows
        self.open_raw: list[str] = []  # workflow ids of open RawSessionWorkflows
        self.project_rows = 0  # ChatSession rows expected so far
        self.raw_rows = 0
        self.rng = random.Random(1)  # which open sessions the scale levels' messages go to
        self.opened = {"api": 0, "raw": 0}  # sessions started with the raw client for the scale levels
        self.scale_cpu: dict[str, dict[str, float]] = {}

    # --- processes -------------------------------------------------------------------------------------------

    def start_processes(self, web: bool = True) -> None:
        t0 = time.monotonic()
        self.database = procs.Database(self.tmp)
        self.stack.append(self.database.drop)
        self.raw_db = RawDB(self.database.url)
        log(f"database: {self.database.engine} ({self.database.url})")
        temporal, self.address = procs.temporal_server(self.tmp)
        self.temporal = temporal
        self.stack.append(temporal.stop)
        log(f"temporal dev server pid {temporal.pid} on {self.address}")
        self.env = procs.django_env(self.database.url, self.address, self.queue)
        self.user_id, self.token = procs.prepare_database(self.env)
        create_tables(self.raw_db)
        self.start_workers()
        if web:
            self.start_web(os.environ.get("BENCH_SERVER", "gunicorn-gthread"))
        log(f"worker pid {self.worker.pid}; raw worker pid {self.raw_worker.pid}")
        self.results.timings["start-up"] = time.monotonic() - t0

    def start_web(self, kind: str) -> None:
        self.web = procs.WebServer(self.env, self.tmp, kind)
        self.stack.append(self.web.stop)
        log(f"{kind} pid {self.web.pid} on {self.web.url}")

    def start_workers(self) -> None:
        self.worker = procs.project_worker(self.env, self.tmp)
        self.raw_worker = procs.raw_worker(self.address, self.raw_queue, self.database.url, self.tmp)
        worker, raw_worker = self.worker, self.raw_worker
        self.stack.append(worker.stop)
        self.stack.append(raw_worker.stop)

    def stop_all(self) -> None:
        while self.stack:
            stop = self.stack.pop()
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                log(f"while stopping: {exc!r}")

    def check_alive(self) -> None:
        for process in (self.temporal, self.worker, self.raw_worker, self.web.process):
            process.check_alive()

    # --- helpers -----------------------------------------------------------------------------------------------

    def cpu_snapshot(self) -> dict[str, float]:
        own = os.times()
        return {
            "temporal": procs.cpu_seconds(self.temporal.pid),
            "worker": procs.cpu_seconds(self.worker.pid),
            "raw worker": procs.cpu_seconds(self.raw_worker.pid),
            "web server": procs.cpu_seconds(self.web.pid),
            "bench client": own.user + own.system,
        }

    def add_cpu(self, spent: dict[str, dict[str, float]], side: str, before: dict[str, float]) -> None:
        after = self.cpu_snapshot()
        into = spent.setdefault(side, dict.fromkeys(before, 0.0))
        for k in before:
            into[k] += after[k] - before[k]

    async def count(self, table: str) -> int:
        return await asyncio.to_thread(count_rows, self.raw_db, table)

    async def wait_rows(self, table: str, expected: int, limit: float = 600) -> float:
        """Polls until `table` holds `expected` rows; returns the monotonic time it was first seen."""
        deadline = time.monotonic() + limit
        while True:
            if await self.count(table) >= expected:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{table} has {await self.count(table)} rows, expected {expected}")
            self.check_alive()
            await asyncio.sleep(0.02)

    async def drain(self) -> None:
        await self.wait_rows("chat_chatsession", self.project_rows)
        await self.wait_rows("bench_raw_session", self.raw_rows)
        await self.quiesce()

    async def quiesce(self, limit: float = 60) -> None:
        """Waits until the workers and the server are idle (under 5% of a core over 0.5 s)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = self.cpu_snapshot()
            await asyncio.sleep(0.5)
            after = self.cpu_snapshot()
            if all(after[k] - before[k] < 0.025 for k in ("worker", "raw worker", "temporal")):
                return

    async def post(self, url: str, body: dict) -> tuple[int, str, bool]:
        """One POST: (status, body, retried). Retried once if the connection broke before an answer (counted
        among the errors)."""

        async def once() -> tuple[int, str]:
            async with self.http.post(url, json=body) as response:
                return response.status, await response.text()

        try:
            return *await once(), False
        except aiohttp.ClientConnectionError as exc:
            self.results.error(f"{type(exc).__name__} on {url.split('/')[-2]} POST, retried")
            return *await once(), True

    async def api_start(self, session_id: str | None = None) -> str:
        """POST /api/sessions/; without a session id, as the README's clients do, the server generates one."""
        status, text, retried = await self.post("/api/sessions/", {"session_id": session_id} if session_id else {})
        if retried and status == 409 and session_id:  # the first try had landed
            status = 202
        if status != 202:
            self.results.error(f"POST /api/sessions/ answered {status}")
            raise RuntimeError(f"start {session_id}: {status} {text[:200]}")
        session_id = json.loads(text)["session_id"]
        self.project_rows += 1
        self.open_project.append(session_id)
        return session_id

    async def raw_start(self, session_id: str, stay_open: bool = True) -> WorkflowHandle:
        session_id = self.round + session_id
        handle = await self.client.start_workflow(
            RawSessionWorkflow.run, args=[self.user_id, session_id, stay_open], id=f"raw-{session_id}",
            task_queue=self.raw_queue,
        )  # fmt: skip
        self.raw_rows += 1
        if stay_open:
            self.open_raw.append(handle.id)
        return handle

    async def project_start_raw_client(self, session_id: str) -> None:
        """A project session started as chat.services.session_start starts it, minus the HTTP and Django."""
        await self.client.start_workflow(
            ChatSessionWorkflow.run, args=[self.user_id, session_id, SessionOptions(), None],
            id=workflow_id_for(session_id), task_queue=self.queue,
        )  # fmt: skip
        self.project_rows += 1
        self.open_project.append(session_id)

    async def api_message(self, session_id: str, n: int) -> None:
        status, text, _ = await self.post(f"/api/sessions/{session_id}/messages/", {"content": f"message {n}"})
        if status != 201:
            self.results.error(f"POST messages answered {status}")
            raise RuntimeError(f"message to {session_id}: {status} {text[:200]}")

    async def raw_message(self, workflow_id: str, n: int) -> None:
        await self.client.get_workflow_handle(workflow_id).execute_update(
            RawSessionWorkflow.post_message, f"message {n}"
        )

    @staticmethod
    async def timed(call: Awaitable[object]) -> float:
        t0 = time.perf_counter()
        await call
        return 1000 * (time.perf_counter() - t0)

    @staticmethod
    async def fan_out(n: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> float:
        """Runs one(0..n-1) on `concurrency` clients at once; returns the elapsed seconds."""
        counter = itertools.count()

        async def client() -> None:
            while (i := next(counter)) < n:
                await one(i)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(min(concurrency, n))))
        return time.perf_counter() - t0

    # --- measurements ------------------------------------------------------------------------------------------

    async def warm_up(self) -> None:
        for i in range(5):
            await self.api_start()
            await self.raw_start(f"warm-{i}")
        await self.drain()

    async def m1_start_latency(self) -> None:
        """Sequential starts, one API start and one raw start in turn (their order alternating)."""
        api, raw = [], []
        for i in range(self.config.seq):
            calls = [(api, self.api_start), (raw, lambda i=i: self.raw_start(f"lat-{i}"))]
            for samples, call in calls if i % 2 == 0 else calls[::-1]:
                samples.append(await self.timed(call()))
        r = self.results
        r.set("start_p50_api", statistics.median(api))
        r.set("start_p50_raw", statistics.median(raw))
        r.set("start_p95_api", pct(api, 95))
        r.set("start_p95_raw", pct(raw, 95))
        await self.drain()

    async def alternate(
        self, first: str, one_side: Callable[[str, int], Awaitable[float]]
    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """Runs one_side(side, round_) for both sides in each round, the order alternating from `first`; adds up the
        seconds it returns and the CPU each side cost, and lets the machine settle after each."""
        elapsed = {"api": 0.0, "raw": 0.0}
        cpu_spent: dict[str, dict[str, float]] = {}
        second = "raw" if first == "api" else "api"
        for round_ in range(self.config.rounds):
            for side in [first, second] if round_ % 2 == 0 else [second, first]:
                before = self.cpu_snapshot()
                elapsed[side] += await one_side(side, round_)
                self.add_cpu(cpu_spent, side, before)
                await self.quiesce()
        return elapsed, cpu_spent

    def record_rates(
        self, key: str, label: str, elapsed: dict[str, float], cpu_spent: dict[str, dict[str, float]]
    ) -> None:
        total = self.config.burst * self.config.rounds
        for side in ("api", "raw"):
            self.results.set(f"{key}_{side}", total / elapsed[side])
        for side, spent in cpu_spent.items():
            self.results.cpu[f"{label}, per session, {side}"] = {k: 1000 * v / total for k, v in spent.items()}

    async def m2_start_throughput(self) -> None:
        """Bursts of starts from 32 clients, API and raw alternating by round; each side drained before the next."""
        n = self.config.burst

        async def burst(side: str, round_: int) -> float:
            if side == "api":
                took = await self.fan_out(n, CONCURRENCY, lambda _: self.api_start())
            else:
                took = await self.fan_out(n, CONCURRENCY, lambda i: self.raw_start(f"tp{round_}-{i}"))
            await self.drain()  # the backlog of one side must not slow the other; its CPU counts
            return took

        self.record_rates("start_tput", "2 start + row written", *await self.alternate("api", burst))

    async def m3_end_to_end(self) -> None:
        """32 clients: API POST until every ChatSession row is written, vs raw start -> activity -> completed."""
        n = self.config.burst

        async def burst(side: str, round_: int) -> float:
            if side == "api":
                t0 = time.monotonic()
                rows = asyncio.create_task(self.wait_rows("chat_chatsession", self.project_rows + n))
                await self.fan_out(n, CONCURRENCY, lambda _: self.api_start())
                return await rows - t0

            async def one(i: int) -> None:
                handle = await self.raw_start(f"e2e{round_}-{i}", stay_open=False)
                await handle.result()

            return await self.fan_out(n, CONCURRENCY, one)

        self.record_rates("e2e_tput", "3 end to end", *await self.alternate("raw", burst))

    async def m4_messages(self) -> None:
        """Sequential messages, an API post and a raw update in turn, over 10 open sessions of each kind."""
        sessions = [await self.api_start() for _ in range(10)]
        raw_ids = [(await self.raw_start(f"msg-{i}")).id for i in range(10)]
        await self.drain()
        before = self.cpu_snapshot()
        api, raw = await self.message_samples(sessions, raw_ids, self.config.messages)
        after = self.cpu_snapshot()
        self.results.cpu["4 one API message + one raw update, per pair"] = {
            k: 1000 * (after[k] - before[k]) / (self.config.messages + 3) for k in before
        }
        r = self.results
        r.set("msg_p50_api", statistics.median(api))
        r.set("msg_p50_raw", statistics.median(raw))
        r.set("msg_p95_api", pct(api, 95))
        r.set("msg_p95_raw", pct(raw, 95))

    async def message_samples(
        self, project: list[str], raw_ids: list[str], n: int, pick: Callable[[list[str], int], str] | None = None
    ) -> tuple[list[float], list[float]]:
        pick = pick or (lambda items, i: items[i % len(items)])
        for i in range(3):  # warm-up, not counted
            await self.api_message(pick(project, i), -i)
            await self.raw_message(pick(raw_ids, i), -i)
        api, raw = [], []
        for i in range(n):
            calls = [
                (api, lambda i=i: self.api_message(pick(project, i), i)),
                (raw, lambda i=i: self.raw_message(pick(raw_ids, i), i)),
            ]
            for samples, call in calls if i % 2 == 0 else calls[::-1]:
                samples.append(await self.timed(call()))
        return api, raw

    async def open_sessions(self, n: int, table: str, start: Callable[[int], Awaitable[object]]) -> None:
        """Starts n sessions quickly, but with at most OPEN_WINDOW of them not yet written: a backlog larger than
        the sticky cache (1,000) would evict sessions between their first and second workflow task and make the
        worker replay them, a cost of the set-up, not of holding sessions open."""
        written = await self.count(table)
        base = written
        done = False
        progress = asyncio.Condition()

        async def watch() -> None:
            nonlocal written
            while not done:
                count = await self.count(table)
                async with progress:
                    written = count
                    progress.notify_all()
                await asyncio.sleep(0.05)

        async def one(i: int) -> None:
            async with progress:
                await progress.wait_for(lambda: base + i - written < OPEN_WINDOW)
            await start(i)

        watcher = asyncio.create_task(watch())
        try:
            await self.fan_out(n, SETUP_CONCURRENCY, one)
        finally:
            done = True
            await watcher
        await self.drain()

    async def open_more(self, side: str, need: int, table: str, start: Callable[[str], Awaitable[object]]) -> None:
        """Opens `need` more sessions of one side for the scale levels (none if need <= 0), counting their CPU."""
        if need <= 0:
            return
        before = self.cpu_snapshot()
        first = len(self.open_project if side == "api" else self.open_raw)  # names not yet used
        await self.open_sessions(need, table, lambda i: start(f"open-{first + i}"))
        self.add_cpu(self.scale_cpu, side, before)
        self.opened[side] += need

    async def scale_level(self, level: int) -> None:
        """Sessions held open by the one worker, `level` of them: its RSS, then message p50 over random sessions.

        The sessions the earlier phases left open count; only the extra ones are started, with the raw client.
        """
        t1 = time.monotonic()
        await self.open_more("api", level - len(self.open_project), "chat_chatsession", self.project_start_raw_client)
        # Raw sessions up to BENCH_SCALE_RAW_MAX only (default 100): every session opened costs ~60 ms of CPU
        # between the server and a worker, and the 10,000 project sessions already take most of the budget.
        raw_need = max(10, min(level, self.config.scale_raw_max)) - len(self.open_raw)
        await self.open_more("raw", raw_need, "bench_raw_session", self.raw_start)
        await self.quiesce()
        self.results.set(f"open_{level}", len(self.open_project))
        self.results.set(f"raw_open_{level}", len(self.open_raw))
        self.results.timings[f"5 scale: open {level:,}"] = time.monotonic() - t1
        self.results.set(f"rss_{level}_api", procs.proc_status(self.worker.pid, "VmRSS") / 1024)
        self.results.set(f"threads_{level}_api", procs.proc_status(self.worker.pid, "Threads"))
        self.results.set(f"rss_{level}_raw", procs.proc_status(self.raw_worker.pid, "VmRSS") / 1024)
        api, raw = await self.message_samples(
            self.open_project, self.open_raw, self.config.level_messages, pick=lambda items, _: self.rng.choice(items)
        )
        self.results.set(f"msg_{level}_api", statistics.median(api))
        self.results.set(f"msg_{level}_raw", statistics.median(raw))
        self.results.set(f"msg95_{level}_api", pct(api, 95))
        await self.quiesce()
        self.results.set(f"rss_{level}_api_after", procs.proc_status(self.worker.pid, "VmRSS") / 1024)
        self.results.set(f"rss_{level}_raw_after", procs.proc_status(self.raw_worker.pid, "VmRSS") / 1024)
        for side, spent in self.scale_cpu.items():
            self.results.cpu[f"5 open a session (raw client), per session, {side}"] = {
                k: 1000 * v / max(1, self.opened[side]) for k, v in spent.items()
            }
        f = self.results.figures
        log(f"level {level:,}: worker RSS {f[f'rss_{level}_api']:.0f} MB (raw {f[f'rss_{level}_raw']:.0f} MB), "
            f"message p50 {f[f'msg_{level}_api']:.1f} ms (raw {f[f'msg_{level}_raw']:.1f})")  # fmt: skip

    def measure_connections(self) -> None:
        """What CONN_MAX_AGE=0 costs: a new connection per request and per activity, Django's and a plain one."""
        samples = []
        for _ in range(30):
            t0 = time.perf_counter()
            with self.raw_db.connection() as conn:
                conn.one("SELECT 1")
            samples.append(1000 * (time.perf_counter() - t0))
        self.results.set("connect_raw_ms", statistics.median(samples))
        script = (
            "import time, statistics\nfrom django.db import connection\ns=[]\n"
            "for _ in range(30):\n t=time.perf_counter(); connection.ensure_connection()\n"
            " connection.cursor().execute('SELECT 1'); connection.close(); s.append(1000*(time.perf_counter()-t))\n"
            "print(statistics.median(s))"
        )
        self.results.set("connect_django_ms", float(procs.manage(self.env, "shell", "-c", script).split()[-1]))

    # --- the run -----------------------------------------------------------------------------------------------

    async def measure(self) -> None:
        self.client = await Client.connect(self.address)
        async with http_session(self.web.url, self.token) as self.http:
            # The lowest scale level first, on the fresh worker; the higher ones last, keeping the sessions the
            # phases in between left open (so fewer have to be started for them).
            first, *rest = self.config.levels
            phases = [
                ("warm-up", self.warm_up),
                (f"5 scale, {first:,} open", lambda: self.scale_level(first)),
                ("1 start latency", self.m1_start_latency),
                ("2 start throughput", self.m2_start_throughput),
                ("3 end to end", self.m3_end_to_end),
                ("4 message round trip", self.m4_messages),
                *((f"5 scale, {n:,} open", lambda n=n: self.scale_level(n)) for n in rest),
            ]
            for name, phase in phases:
                log(f"phase {name} ...")
                t0 = time.monotonic()
                await phase()
                self.results.timings[name] = time.monotonic() - t0
                self.check_alive()
        self.measure_connections()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    from bench import report

    # SIGTERM (make's, a CI's, a developer's kill) unwinds like Ctrl-C, so every child process is still stopped.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    config = Config.from_env()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    bench = Bench(config, tmp)
    log(f"scale {config.scale}: logs in {tmp}")
    load_before = os.getloadavg()
    try:
        bench.start_processes()
        asyncio.run(bench.measure())
    except BaseException:
        log(f"failed; the processes' logs are in {tmp}")
        config.keep_tmp = True
        raise
    finally:
        bench.stop_all()
        if not config.keep_tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    wall = time.monotonic() - started
    facts = report.machine_facts(bench.database.engine, load_before, bench.web.kind)
    facts["load average at the end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = report.rows(bench.results, config)
    print(report.table([*rows, report.wall_row(wall)]))
    print(f"\nwall time {wall:.0f} s; phases: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in bench.results.timings.items()))  # fmt: skip
    if bench.results.errors:
        print("errors:", bench.results.errors)
    if os.environ.get("BENCH_RESULTS_JSON"):  # for `python -m bench.report FILE`, which writes the docs again
        saved = {"config": dataclasses.asdict(config), "results": dataclasses.asdict(bench.results)}
        saved |= {"facts": facts, "wall": wall}
        Path(os.environ["BENCH_RESULTS_JSON"]).write_text(json.dumps(saved, default=str, indent=1))
    report.write(config, bench.results, rows, facts, wall)
    log(f"wrote {config.out_dir / 'benchmarks.md'} and {config.out_dir / 'benchmarks.png'}")
    return 0
