"""Where the time goes: py-spy flame graphs of the web server and the project's worker while one phase runs.

    .venv/bin/python -m bench.profile start    # line 1: sequential starts, API and raw in turn
    .venv/bin/python -m bench.profile message  # line 4: the message round trip
    .venv/bin/python -m bench.profile open     # line 5: 1,000 sessions opened with the raw client, held by the worker
    .venv/bin/python -m bench.profile turns    # line 8: turns streaming at once (the worker's CPU per turn)

The phase runs at its `make bench` size (BENCH_SCALE and the other knobs apply); the flame graphs (SVG, for a
browser) are written beside the processes' logs, in the temp dir named at the end.
"""

import argparse
import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from bench.load import Load
from bench.phases import message, start, streams
from bench.phases.scale import Scale
from bench.procs import Rig, WebServer, log
from bench.results import Config, Results

PY_SPY = str(Path(sys.executable).parent / "py-spy")
PHASES = {
    "start": start.latency,
    "message": message.round_trip,
    "open": lambda load, config: Scale(load, config).level(1000),
    "turns": streams.turns_at_once,
}


async def profile(rig: Rig, web: WebServer, phase: str, fmt: str, gil: bool) -> None:
    async with Load(rig, web, Results()) as load:
        await start.warm_up(load)
        spies = []
        for name, process in (("web-server", web), ("worker", rig.worker)):
            args = ["record", "--pid", str(process.pid), "--subprocesses", "--rate", "250", "--nonblocking"]
            args += ["--gil"] if gil else []
            suffix = "svg" if fmt == "flamegraph" else "txt"
            out = ["--format", fmt, "--output", str(rig.tmp / f"{phase}-{name}.{suffix}")]
            spies.append(await asyncio.create_subprocess_exec(PY_SPY, *args, *out, stdout=subprocess.DEVNULL))
        await asyncio.sleep(1)  # for py-spy to attach
        await PHASES[phase](load, Config.from_env())
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            await spy.wait()
    log(f"profiles ({fmt}) in {rig.tmp}: {phase}-web-server.*, {phase}-worker.*")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("phase", nargs="?", choices=list(PHASES), default="start")
    parser.add_argument("--format", choices=["flamegraph", "raw"], default="flamegraph", help="raw: collapsed stacks")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="only samples of threads holding the GIL: where the CPU goes, without the time threads wait for it",
    )
    args = parser.parse_args()
    with Rig.started("bench-profile", keep_logs=True) as rig, WebServer("uvicorn", rig.env, rig.tmp) as web:
        asyncio.run(profile(rig, web, args.phase, args.format, args.gil))


if __name__ == "__main__":
    main()
