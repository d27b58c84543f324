"""`make bench`: the project's path (HTTP -> uvicorn -> Django -> Temporal -> worker -> ORM) beside a raw-SDK
baseline (bench.raw_workflows on bench.raw_worker: the same database work, no Django), every figure of both sides
in the same run, on processes of its own; prints the table of ratios and writes docs/benchmarks.md and .png."""

import asyncio
import dataclasses
import datetime
import json
import os
import platform
import sqlite3
import subprocess
import time
from importlib import metadata
from pathlib import Path

import psutil

from bench import project, report
from bench.load import Load
from bench.phases import connections, first_token, history, message, recovery, spaced, start, streams, waits
from bench.phases.scale import Scale
from bench.procs import PEER, Rig, WebServer, log
from bench.results import Config, Results
from devtools.processes import TEMPORAL_CLI


async def measure(rig: Rig, web: WebServer, peer: WebServer, config: Config, results: Results) -> None:
    async with Load(rig, web, results, peer) as load:
        scale = Scale(load, config)
        # The lowest scale level first, on the fresh worker; the higher ones last, keeping the sessions the phases
        # in between left open (so fewer have to be started for them).
        first, *rest = config.levels
        phases = [
            ("warm-up", lambda: start.warm_up(load)),
            (f"5 scale, {first:,} open", lambda: scale.level(first)),
            ("1 start latency", lambda: start.latency(load, config)),
            ("1b start latency, spaced", lambda: spaced.starts(load, config)),
            ("2 start throughput", lambda: start.throughput(load, config)),
            ("3 end to end", lambda: start.end_to_end(load, config)),
            ("4 message round trip", lambda: message.round_trip(load, config)),
            ("6 first message", lambda: spaced.first_message(load, config)),
            ("7 first token", lambda: first_token.measure(load, config)),
            ("8 idle streams", lambda: streams.idle(load, config)),
            ("8 turns at once", lambda: streams.turns_at_once(load, config)),
            ("9 history per turn", lambda: history.per_turn(load, config)),
            ("11 waits", lambda: waits.measure(load, config)),
            *((f"5 scale, {n:,} open", lambda n=n: scale.level(n)) for n in rest),
            # Last: it replaces the worker, whose sessions the phases before count on.
            ("10 worker SIGKILL", lambda: recovery.worker_killed(load, config)),
        ]
        only = [name.strip() for name in os.environ.get("BENCH_PHASES", "").split(",") if name.strip()]
        for name, phase in phases:
            if only and name != "warm-up" and not any(name.startswith(prefix) for prefix in only):
                continue
            log(f"phase {name} ...")
            t0 = time.monotonic()
            await phase()
            results.timings[name] = time.monotonic() - t0
            rig.check_alive()
            web.check_alive()
            peer.check_alive()
        connections.connect_cost(load)


def machine_facts(rig: Rig, web: WebServer, load_before: str) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")
    cli = subprocess.run([TEMPORAL_CLI, "--version"], capture_output=True, text=True, timeout=30).stdout
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": cpu,
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "kernel": platform.release(),
        "load average before the run (1/5/15 min)": load_before,
        "Python": platform.python_version(),
        "temporalio": metadata.version("temporalio"),
        "Temporal CLI (dev server)": cli.strip().removeprefix("temporal version "),
        "Django": metadata.version("Django"),
        "djangorestframework": metadata.version("djangorestframework"),
        "web server": f"{web.kind} ({metadata.version(web.kind.split('-')[0])})",
        "the peer": f"FastAPI {metadata.version('fastapi')} (Starlette {metadata.version('starlette')}) under uvicorn",
        "aiohttp (load client)": metadata.version("aiohttp"),
        "database": rig.engine + (f" (SQLite library {sqlite3.sqlite_version})" if rig.engine == "SQLite" else ""),
    }


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    config, results = Config.from_env(), Results()
    started, load_before = time.monotonic(), load_average()
    log(f"scale {config.scale}")
    with (
        Rig.started("bench", config.keep_tmp) as rig,
        WebServer(os.environ.get("BENCH_SERVER", "uvicorn"), rig.env, rig.tmp) as web,
        WebServer(
            "fastapi-peer", rig.env | {"BENCH_BUSY_TIMEOUT": str(rig.setup["busy_timeout"])}, rig.tmp, PEER
        ) as peer,
    ):
        log(f"{web.kind} pid {web.pid} on {web.url}; the FastAPI peer pid {peer.pid} on {peer.url}")
        results.timings["start-up"] = time.monotonic() - started
        asyncio.run(measure(rig, web, peer, config, results))
        results.facts = machine_facts(rig, web, load_before)
        results.settings = {**project.worker_defaults(), "conn_max_age": rig.setup["conn_max_age"]}
    results.wall = time.monotonic() - started
    if os.environ.get("BENCH_PHASES"):  # a part of the run: its figures, no report
        print(json.dumps(results.figures, indent=1), f"\nwall time {results.wall:.0f} s")
        return 0
    results.facts["load average at the end (1/5/15 min)"] = load_average()
    print(report.results_table(config, results))
    print(f"\nwall time {results.wall:.0f} s; phases: {', '.join(f'{k} {v:.0f}s' for k, v in results.timings.items())}")
    if os.environ.get("BENCH_RESULTS_JSON"):  # for `python -m bench.report FILE`, which writes the docs again
        saved = {"config": dataclasses.asdict(config), "results": dataclasses.asdict(results)}
        Path(os.environ["BENCH_RESULTS_JSON"]).write_text(json.dumps(saved, indent=1))
    report.write(config, results)
    log(f"wrote {config.out_dir}/benchmarks.md and {config.out_dir}/benchmarks.png")
    return 0
