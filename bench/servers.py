"""Which web server the project ships: each candidate under the same start workloads, beside the raw SDK.

    make bench-servers        # BENCH_SERVERS=gunicorn-gthread,uvicorn to pick; BENCH_SEQ, BENCH_BURST, BENCH_ROUNDS

One Temporal dev server, one project worker and one raw worker serve every candidate in turn (bench.procs.SERVERS);
each candidate gets the `make bench` start-latency and start-throughput measurements, with their raw-SDK halves
taken again in the same minutes. Prints the table and writes docs/benchmarks-servers.md.
"""

import asyncio
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from temporalio.client import Client

from bench import procs
from bench.run import Bench, Config, Results, _interrupt, http_session, log

DEFAULTS = {"BENCH_SCALE": "small", "BENCH_SEQ": "60", "BENCH_BURST": "120", "BENCH_ROUNDS": "2"}


async def measure(bench: Bench, kinds: list[str]) -> dict[str, Results]:
    bench.client = await Client.connect(bench.address)
    found = {}
    for kind in kinds:
        bench.start_web(kind)
        bench.round = f"{kind}-"
        bench.results = Results()
        async with http_session(bench.web.url, bench.token) as bench.http:
            await bench.warm_up()
            log(f"{kind}: start latency ...")
            await bench.m1_start_latency()
            log(f"{kind}: start throughput ...")
            await bench.m2_start_throughput()
        found[kind] = bench.results
        bench.stack.remove(bench.web.stop)
        bench.web.stop()
    return found


def table(found: dict[str, Results]) -> str:
    lines = [
        "| server | start p50 API / raw (ms) | ratio | start p95 API (ms) | throughput API / raw (starts/s) | ratio "
        "| server CPU per start (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, r in found.items():
        f = r.figures
        cpu = r.cpu.get("2 start + row written, per session, api", {}).get("web server", float("nan"))
        lines.append(
            f"| {kind} | {f['start_p50_api']:.1f} / {f['start_p50_raw']:.1f} "
            f"| {f['start_p50_api'] / f['start_p50_raw']:.2f}x "
            f"| {f['start_p95_api']:.1f} | {f['start_tput_api']:.0f} / {f['start_tput_raw']:.0f} "
            f"| {f['start_tput_api'] / f['start_tput_raw']:.2f}x | {cpu:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind like Ctrl-C, so every child process is still stopped
        signal.signal(sig, _interrupt)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    kinds = os.environ.get("BENCH_SERVERS", ",".join(procs.SERVERS)).split(",")
    config = Config.from_env()
    tmp = Path(tempfile.mkdtemp(prefix="bench-servers-"))
    bench = Bench(config, tmp)
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        bench.start_processes(web=False)
        found = asyncio.run(measure(bench, kinds))
    finally:
        bench.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.monotonic() - started
    text = table(found)
    print(text)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    out = config.out_dir / "benchmarks-servers.md"
    out.write_text(
        "# Web server candidates (`make bench-servers`)\n\n"
        "Written by `python -m bench.servers`; see [benchmarks.md](benchmarks.md) for what each column measures "
        "(its lines 1 and 2) and for why the project ships gunicorn with gthread workers. Each candidate ran "
        f"{config.seq} sequential starts and {config.rounds} x {config.burst} starts from 32 clients, each beside "
        "the raw SDK's in the same minutes, against one Temporal dev server and one project worker; server CPU "
        "counts the server's master and workers. Load average before the run "
        f"{' / '.join(f'{x:.2f}' for x in load_before)}, after {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"wall time {wall:.0f} s; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
        "| server | command (see `bench/procs.py`) |\n|---|---|\n"
        + "".join(f"| {kind} | `{' '.join(procs.server_command(kind, 'HOST', 'PORT')[2:])}` |\n" for kind in kinds)
        + f"\n{text}\n"
    )
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
