"""Line 5: sessions held open by the one worker, level by level: its RSS, then message p50 over random sessions.

The sessions the earlier phases left open count; only the extra ones are started, with the raw Temporal client.
"""

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

from bench.load import SIDES, Load, fan_out, pct
from bench.phases import message
from bench.procs import log, proc_status
from bench.results import OPEN_WINDOW, Config

SETUP_CONCURRENCY = 64  # raw-client starts at once while opening sessions


class Scale:
    def __init__(self, load: Load, config: Config) -> None:
        self.load, self.config = load, config
        self.rng = random.Random(1)  # which open sessions the messages go to
        self.spent: dict[str, dict[str, float]] = {side: {} for side in SIDES}  # CPU of opening sessions
        self.opened = dict.fromkeys(SIDES, 0)

    async def open_more(self, side: str, need: int) -> None:
        """Starts `need` more sessions of one side quickly, with at most OPEN_WINDOW of them not yet written."""
        load = self.load
        start: Callable[[str], Awaitable[object]] = load.api_start_raw_client if side == "api" else load.raw_start
        first, base = len(load.open[side]), await load.count(side)
        written = base
        progress = asyncio.Condition()

        async def watch() -> None:
            nonlocal written
            while True:
                count = await load.count(side)
                async with progress:
                    written = count
                    progress.notify_all()
                await asyncio.sleep(0.05)

        async def one(i: int) -> None:
            async with progress:
                await progress.wait_for(lambda: base + i - written < OPEN_WINDOW)
            await start(f"open-{first + i}")

        with load.charge(self.spent[side]):
            watcher = asyncio.create_task(watch())
            try:
                await fan_out(need, SETUP_CONCURRENCY, one)
            finally:
                watcher.cancel()
            await load.drain()
        self.opened[side] += need

    async def level(self, level: int) -> None:
        load, f = self.load, self.load.results.figures
        t0 = time.monotonic()
        # Raw sessions up to BENCH_SCALE_RAW_MAX only (default 100): every session opened costs ~60 ms of CPU
        # between the server and a worker, and the 10,000 project sessions already take most of the budget.
        for side, want in (("api", level), ("raw", max(10, min(level, self.config.scale_raw_max)))):
            if (need := want - len(load.open[side])) > 0:
                await self.open_more(side, need)
        await load.quiesce()
        f[f"open_{level}"], f[f"raw_open_{level}"] = len(load.open["api"]), len(load.open["raw"])
        load.results.timings[f"5 scale: open {level:,}"] = time.monotonic() - t0
        self.record_rss(level, "")
        f[f"threads_{level}_api"] = proc_status(load.rig.worker.pid, "Threads")
        api, raw = await message.samples(load, self.config.level_messages, lambda ids, _: self.rng.choice(ids))
        f[f"msg_{level}_api"], f[f"msg_{level}_raw"] = statistics.median(api), statistics.median(raw)
        f[f"msg95_{level}_api"] = pct(api, 95)
        await load.quiesce()
        self.record_rss(level, "_after")
        for side in (s for s in SIDES if self.opened[s]):
            load.results.cpu[f"5 open a session (raw client), per session, {side}"] = {
                k: 1000 * v / max(1, self.opened[side]) for k, v in self.spent[side].items()
            }
        log(f"level {level:,}: worker RSS {f[f'rss_{level}_api']:.0f} MB (raw {f[f'rss_{level}_raw']:.0f} MB), "
            f"message p50 {f[f'msg_{level}_api']:.1f} ms (raw {f[f'msg_{level}_raw']:.1f})")  # fmt: skip

    def record_rss(self, level: int, suffix: str) -> None:
        for side, process in (("api", self.load.rig.worker), ("raw", self.load.rig.raw_worker)):
            self.load.results.figures[f"rss_{level}_{side}{suffix}"] = proc_status(process.pid, "VmRSS") / 1024
