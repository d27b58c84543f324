"""Where the time goes: the bench's processes under py-spy while one workload runs.

    .venv/bin/python -m bench.profile start    # sequential POST /api/sessions/ (the web server and the worker sampled)
    .venv/bin/python -m bench.profile message  # sequential message posts (the same two)
    .venv/bin/python -m bench.profile open     # 1,000 sessions opened with the raw client (the worker sampled)

Prints, per sampled process, the functions holding the most CPU samples (inclusive, idle threads excluded), and
keeps py-spy's raw stacks and the processes' logs in the temp dir it names. BENCH_PROFILE_N sets the workload size.
"""

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.load import Load, fan_out
from bench.phases import start
from bench.procs import Rig, WebServer
from bench.results import CONCURRENCY, Results

PY_SPY = str(Path(sys.executable).parent / "py-spy")
INTERESTING = re.compile(
    r"[(/](chat|chatproject|temporal_integration|bench|temporalio|django|rest_framework|gunicorn|asgiref)/"
)


def summarize(raw: Path, top: int = 30) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if "(" in f]
        inclusive.update(dict.fromkeys(frames, int(count)))
        if frames:
            own[frames[-1]] += int(count)
    if not total:
        return "  (no samples)"
    shown = [(f, c) for f, c in inclusive.most_common() if INTERESTING.search(f)][:top]
    return "\n".join([f"  {total} samples; inclusive, project/library frames:",
                      *(f"  {100 * c / total:5.1f}%  {f}" for f, c in shown), "  own time (top 15):",
                      *(f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(15))])  # fmt: skip


async def workload(rig: Rig, web: WebServer, kind: str, n: int) -> None:
    async with Load(rig, web, Results()) as load:
        await start.warm_up(load)
        sessions = [await load.api_start() for _ in range(10)] if kind == "message" else []
        await load.drain()
        targets = {"worker": rig.worker.pid} if kind == "open" else {"gunicorn": web.pid, "worker": rig.worker.pid}
        spies = {name: await asyncio.create_subprocess_exec(
            PY_SPY, "record", "--pid", str(pid), "--subprocesses", "--rate", "250", "--format", "raw",
            "--output", str(rig.tmp / f"{kind}-{name}.pyspy.txt"), "--nonblocking",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ) for name, pid in targets.items()}  # fmt: skip
        await asyncio.sleep(1)
        t0 = time.monotonic()
        if kind == "start":
            for _ in range(n):
                await load.api_start()
        elif kind == "message":
            for i in range(n):
                await load.api_message(sessions[i % len(sessions)], i)
        else:
            await fan_out(n, CONCURRENCY, lambda i: load.api_start_raw_client(f"prof-open-{i}"))
        await load.drain()
        elapsed = time.monotonic() - t0
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            await spy.wait()
        for name in spies:
            print(f"\n== {kind}-{name} ({n} operations in {elapsed:.1f} s)")
            print(summarize(rig.tmp / f"{kind}-{name}.pyspy.txt"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("workload", nargs="?", choices=["start", "message", "open"], default="start")
    kind = parser.parse_args().workload
    if not Path(PY_SPY).exists():
        raise SystemExit("py-spy is not installed: make install")
    n = int(os.environ.get("BENCH_PROFILE_N", "1000" if kind == "open" else "300"))
    with Rig.started("bench-profile", keep_logs=True) as rig, WebServer("gunicorn-gthread", rig.env, rig.tmp) as web:
        asyncio.run(workload(rig, web, kind, n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
