"""Lines 1-3: start latency (sequential), start throughput and end to end (32 clients at once)."""

import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.load import SIDES, Load, fan_out, interleaved, record_latencies
from bench.results import CONCURRENCY, Config


async def warm_up(load: Load) -> None:
    for i in range(5):
        await load.api_start()
        await load.raw_start(f"warm-{i}")
    await load.drain()


async def latency(load: Load, config: Config) -> None:
    """Sequential starts, one API start and one raw start in turn."""
    api, raw = await interleaved(config.seq, lambda _: load.api_start(), lambda i: load.raw_start(f"lat-{i}"))
    record_latencies(load.results, "start", api, raw)
    await load.drain()


async def alternate(load: Load, config: Config, key: str, label: str, first: str,
                    burst: Callable[[str, int], Awaitable[float]]) -> None:  # fmt: skip
    """Runs burst(side, round) for both sides in each round, the order alternating from `first`, letting the
    machine settle after each; records the sessions per second and the CPU per session of each side."""
    elapsed, spent = dict.fromkeys(SIDES, 0.0), {side: {} for side in SIDES}
    order = [first, *(s for s in SIDES if s != first)]
    for round_ in range(config.rounds):
        for side in order if round_ % 2 == 0 else order[::-1]:
            with load.charge(spent[side]):
                elapsed[side] += await burst(side, round_)
            await load.quiesce()
    total = config.burst * config.rounds
    for side in order:
        load.results.figures[f"{key}_{side}"] = total / elapsed[side]
        load.results.cpu[f"{label}, per session, {side}"] = {k: 1000 * v / total for k, v in spent[side].items()}


async def throughput(load: Load, config: Config) -> None:
    """Bursts of starts; each side's rows written before the next burst, its backlog counted in its CPU."""

    async def burst(side: str, round_: int) -> float:
        if side == "api":
            took = await fan_out(config.burst, CONCURRENCY, lambda _: load.api_start())
        else:
            took = await fan_out(config.burst, CONCURRENCY, lambda i: load.raw_start(f"tp{round_}-{i}"))
        await load.drain()  # the backlog of one side must not slow the other
        return took

    await alternate(load, config, "start_tput", "2 start + row written", "api", burst)


async def end_to_end(load: Load, config: Config) -> None:
    """API POSTs until every ChatSession row is written, against raw start -> activity -> completed."""

    async def burst(side: str, round_: int) -> float:
        if side == "api":
            t0 = time.monotonic()
            rows = asyncio.create_task(load.wait_rows("api", load.rows["api"] + config.burst))
            await fan_out(config.burst, CONCURRENCY, lambda _: load.api_start())
            return await rows - t0

        async def one(i: int) -> None:
            await (await load.raw_start(f"e2e{round_}-{i}", stay_open=False)).result()

        return await fan_out(config.burst, CONCURRENCY, one)

    await alternate(load, config, "e2e_tput", "3 end to end", "raw", burst)
