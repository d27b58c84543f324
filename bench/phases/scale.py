"""Line 5: sessions held open by the one worker, level by level: its RSS, then message p50 over random sessions.

The sessions the earlier phases left open count; only the extra ones are started, with the raw Temporal client.
"""

import random
import statistics
import time

from bench.load import Load, fan_out
from bench.phases import message
from bench.procs import log
from bench.results import OPEN_WINDOW, Config

SETUP_CONCURRENCY = 64  # raw-client starts at once while opening sessions
SIDES = ("api", "raw")  # the two workers holding sessions (the peer's sessions are the project worker's)


class Scale:
    def __init__(self, load: Load, config: Config) -> None:
        self.load, self.config = load, config
        self.rng = random.Random(1)  # which open sessions the messages go to
        self.spent: dict[str, dict[str, float]] = {side: {} for side in SIDES}  # CPU of opening sessions
        self.opened = dict.fromkeys(SIDES, 0)

    async def open_more(self, side: str, need: int) -> None:
        """Starts `need` more sessions of one side, OPEN_WINDOW at a time, each batch written before the next."""
        with self.load.charge(self.spent[side]):
            for done in range(0, need, OPEN_WINDOW):
                batch = min(OPEN_WINDOW, need - done)
                await fan_out(batch, SETUP_CONCURRENCY, lambda: self.load.start(side, by_client=True))
                await self.load.wait_rows(side, self.load.rows[side])
            await self.load.quiesce()
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
        f[f"rss_{level}_api"], f[f"rss_{level}_raw"] = load.rig.worker.rss_mb(), load.rig.raw_worker.rss_mb()
        f[f"threads_{level}_api"] = load.rig.worker.threads()
        found = await message.samples(load, self.config.level_messages, lambda ids, _: self.rng.choice(ids), SIDES)
        f[f"msg_{level}_api"], f[f"msg_{level}_raw"] = statistics.median(found["api"]), statistics.median(found["raw"])
        for side in (s for s in SIDES if self.opened[s]):
            cpu = {k: 1000 * v / self.opened[side] for k, v in self.spent[side].items()}
            load.results.cpu[f"5 open a session (raw client), per session, {side}"] = cpu
        log(
            f"level {level:,}: worker RSS {f[f'rss_{level}_api']:.0f} MB (raw {f[f'rss_{level}_raw']:.0f} MB), "
            f"message p50 {f[f'msg_{level}_api']:.1f} ms (raw {f[f'msg_{level}_raw']:.1f})"
        )
