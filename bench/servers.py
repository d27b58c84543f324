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
from bench.report import table
from bench.results import CONCURRENCY, Config, Results
from bench.run import load_average

DEFAULTS = {"BENCH_SCALE": "small", "BENCH_SEQ": "60", "BENCH_BURST": "120", "BENCH_ROUNDS": "2"}
HEADER = ["server", "start p50 API / raw (ms)", "ratio", "start p95 API (ms)", "throughput API / raw (starts/s)"]
HEADER += ["ratio", "server CPU per start (ms)"]
INTRO = """# Web server candidates (`make bench-servers`)

Written by `python -m bench.servers`; see [benchmarks.md](benchmarks.md) for what each column measures (its lines 1
and 2) and for why the project ships gunicorn with gthread workers. Each candidate ran {config.seq} sequential starts
and {config.rounds} x {config.burst} starts from {concurrency} clients, each beside the raw SDK's in the same minutes,
against one Temporal dev server and one project worker; server CPU counts the server's master and workers. Load
average before the run {before}, after {after}; wall time {wall:.0f} s; {date}.
"""


async def measure(rig: Rig, web: WebServer, config: Config) -> list[str]:
    """The server's row: start latency and start throughput, each beside the raw SDK's."""
    results = Results()
    async with Load(rig, web, results) as load:
        log(f"{web.kind}: start latency and throughput ...")
        await start.warm_up(load)
        await start.latency(load, config)
        await start.throughput(load, config)
    f, cpu = results.figures, results.cpu["2 start + row written, per session, api"]["web server"]
    p50, tput = [f"{f[f'{key}_api'] / f[f'{key}_raw']:.2f}x" for key in ("start_p50", "start_tput")]
    p50s, p95 = f"{f['start_p50_api']:.1f} / {f['start_p50_raw']:.1f}", f"{f['start_p95_api']:.1f}"
    return [web.kind, p50s, p50, p95, f"{f['start_tput_api']:.0f} / {f['start_tput_raw']:.0f}", tput, f"{cpu:.1f}"]


def main() -> int:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    kinds = os.environ.get("BENCH_SERVERS", ",".join(SERVERS)).split(",")
    config, found, started, before = Config.from_env(), [], time.monotonic(), load_average()
    with Rig.started("bench-servers") as rig:
        for kind in kinds:
            with WebServer(kind, rig.env, rig.tmp) as web:
                found.append(asyncio.run(measure(rig, web, config)))
    print(text := table(HEADER, found))
    date, wall = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.monotonic() - started
    intro = INTRO.format(
        config=config, concurrency=CONCURRENCY, before=before, after=load_average(), wall=wall, date=date
    )
    commands = "".join(f"- {k}: `{SERVERS[k].format(host='HOST', port='PORT').removeprefix('-m ')}`\n" for k in kinds)
    out = Path(config.out_dir) / "benchmarks-servers.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{intro}\nThe commands (`bench/procs.py`):\n\n{commands}\n{text}\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
