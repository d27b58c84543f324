"""Which web server the project ships: each candidate under the `make bench` start workloads, beside the raw SDK.

    make bench-servers        # BENCH_SERVERS=gunicorn-gthread,uvicorn to pick; BENCH_SEQ, BENCH_BURST, BENCH_ROUNDS

One Temporal dev server, one project worker and one raw worker serve every candidate in turn (bench.procs.SERVERS);
each gets the start-latency and start-throughput measurements, their raw-SDK halves taken again in the same minutes.
Prints the table and writes docs/benchmarks-servers.md.
"""

import asyncio
import os
import time
from pathlib import Path

from bench.load import Load
from bench.phases import start
from bench.procs import SERVERS, Rig, WebServer, log
from bench.results import CONCURRENCY, Config, Results

DEFAULTS = {"BENCH_SCALE": "small", "BENCH_SEQ": "60", "BENCH_BURST": "120", "BENCH_ROUNDS": "2"}


async def measure(rig: Rig, web: WebServer, config: Config) -> Results:
    results = Results()
    async with Load(rig, web, results, prefix=f"{web.kind}-") as load:
        await start.warm_up(load)
        log(f"{web.kind}: start latency ...")
        await start.latency(load, config)
        log(f"{web.kind}: start throughput ...")
        await start.throughput(load, config)
    return results


def table(found: dict[str, Results]) -> str:
    lines = [
        "| server | start p50 API / raw (ms) | ratio | start p95 API (ms) | throughput API / raw (starts/s) | ratio "
        "| server CPU per start (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, r in found.items():
        f = r.figures
        cpu = r.cpu["2 start + row written, per session, api"]["web server"]
        lines.append(
            f"| {kind} | {f['start_p50_api']:.1f} / {f['start_p50_raw']:.1f} "
            f"| {f['start_p50_api'] / f['start_p50_raw']:.2f}x | {f['start_p95_api']:.1f} "
            f"| {f['start_tput_api']:.0f} / {f['start_tput_raw']:.0f} "
            f"| {f['start_tput_api'] / f['start_tput_raw']:.2f}x | {cpu:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    kinds = os.environ.get("BENCH_SERVERS", ",".join(SERVERS)).split(",")
    config, found = Config.from_env(), {}
    started, load_before = time.monotonic(), os.getloadavg()
    with Rig.started("bench-servers") as rig:
        for kind in kinds:
            with WebServer(kind, rig.env, rig.tmp) as web:
                found[kind] = asyncio.run(measure(rig, web, config))
    wall = time.monotonic() - started
    text = table(found)
    print(text)
    out = Path(config.out_dir) / "benchmarks-servers.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    commands = "".join(
        f"| {k} | `{SERVERS[k].format(host='HOST', port='PORT').removeprefix('-m ')}` |\n" for k in kinds
    )
    out.write_text(
        "# Web server candidates (`make bench-servers`)\n\n"
        "Written by `python -m bench.servers`; see [benchmarks.md](benchmarks.md) for what each column measures "
        "(its lines 1 and 2) and for why the project ships gunicorn with gthread workers. Each candidate ran "
        f"{config.seq} sequential starts and {config.rounds} x {config.burst} starts from {CONCURRENCY} clients, "
        "each beside the raw SDK's in the same minutes, against one Temporal dev server and one project worker; "
        "server CPU counts the server's master and workers. Load average before the run "
        f"{' / '.join(f'{x:.2f}' for x in load_before)}, after {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"wall time {wall:.0f} s; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
        f"| server | command (see `bench/procs.py`) |\n|---|---|\n{commands}\n{text}\n"
    )
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
