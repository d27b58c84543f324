"""Where the time goes: the bench's processes under py-spy while one workload runs.

    .venv/bin/pip install py-spy==0.4.3      # not in requirements.txt: only this script needs it
    .venv/bin/python -m bench.profile start  # sequential POST /api/sessions/ (gunicorn and the worker sampled)
    .venv/bin/python -m bench.profile message  # sequential message posts
    .venv/bin/python -m bench.profile open   # 1,000 sessions opened with the raw client (the worker sampled)

Prints, per sampled process, the functions holding the most CPU samples (inclusive, idle threads excluded), and
keeps py-spy's raw stacks and the processes' logs in the temp dir it names. BENCH_PROFILE_N sets the workload size.
"""

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from temporalio.client import Client

from bench.run import CONCURRENCY, Bench, Config, http_session, log

PY_SPY = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
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
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if "(" in f]
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; inclusive, project/library frames:"]
    shown = [(f, c) for f, c in inclusive.most_common() if INTERESTING.search(f)][:top]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in shown]
    lines.append("  own time (top 15):")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(15)]
    return "\n".join(lines)


class Profiled:
    def __init__(self, name: str, pid: int, out: Path) -> None:
        self.name = name
        self.raw = out / f"{name}.pyspy.txt"
        self.process = subprocess.Popen(
            [PY_SPY, "record", "--pid", str(pid), "--subprocesses", "--rate", "250", "--format", "raw",
             "--output", str(self.raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)


async def workload(bench: Bench, kind: str, n: int) -> float:
    bench.client = await Client.connect(bench.address)
    async with http_session(bench.web.url, bench.token) as bench.http:
        await bench.warm_up()
        sessions = []
        if kind == "message":
            sessions = [await bench.api_start() for _ in range(10)]
            await bench.drain()
        targets = {"start": [bench.web.pid, bench.worker.pid], "message": [bench.web.pid, bench.worker.pid],
                   "open": [bench.worker.pid]}[kind]  # fmt: skip
        names = {bench.web.pid: "gunicorn", bench.worker.pid: "worker"}
        spies = [Profiled(f"{kind}-{names[p]}", p, bench.tmp) for p in targets]
        await asyncio.sleep(1)
        t0 = time.monotonic()
        if kind == "start":
            for _ in range(n):
                await bench.api_start()
        elif kind == "message":
            for i in range(n):
                await bench.api_message(sessions[i % len(sessions)], i)
        else:
            await bench.fan_out(n, CONCURRENCY, lambda i: bench.project_start_raw_client(f"prof-open-{i}"))
        await bench.drain()
        elapsed = time.monotonic() - t0
        for spy in spies:
            spy.stop()
        for spy in spies:
            print(f"\n== {spy.name} ({n} operations in {elapsed:.1f} s)\n{summarize(spy.raw)}")
        return elapsed


def main() -> int:
    if not PY_SPY:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy==0.4.3")
    kind = sys.argv[1] if len(sys.argv) > 1 else "start"
    n = int(os.environ.get("BENCH_PROFILE_N", "1000" if kind == "open" else "300"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    bench = Bench(Config.from_env(), tmp)
    log(f"profiling {kind} x{n}; stacks and logs in {tmp}")
    try:
        bench.start_processes()
        asyncio.run(workload(bench, kind, n))
    finally:
        bench.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
