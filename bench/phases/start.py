"""Lines 1-3: start latency (sequential), start throughput and end to end (32 clients at once)."""

import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.load import Load, fan_out, interleaved, record_latencies
from bench.results import CONCURRENCY, Config


async def warm_up(load: Load) -> None:
    for _ in range(5):
        for side in load.sides:
            await load.start(side)
    await load.drain()


async def latency(load: Load, config: Config) -> None:
    """Sequential starts, one API start and one raw start in turn."""
    samples = await interleaved(config.seq, lambda side, _: load.start(side), sides=load.sides)
    record_latencies(load.results, "start", samples)
    await load.drain()


async def alternate(
    load: Load, config: Config, key: str, label: str, first: str, burst: Callable[[str], Awaitable[float]]
) -> None:
    """Runs burst(side) for both sides in each round, the order alternating from `first`, letting the machine settle
    after each; records the sessions per second and the CPU per session of each side."""
    elapsed, spent = dict.fromkeys(load.sides, 0.0), {side: {} for side in load.sides}
    order = load.sides if first == load.sides[0] else load.sides[::-1]
    for round_ in range(config.rounds):
        for side in order[:: 1 if round_ % 2 == 0 else -1]:
            with load.charge(spent[side]):
                elapsed[side] += await burst(side)
            await load.quiesce()
    total = config.burst * config.rounds
    for side in load.sides:
        load.results.figures[f"{key}_{side}"] = total / elapsed[side]
        load.results.cpu[f"{label}, per session, {side}"] = {k: 1000 * v / total for k, v in spent[side].items()}


async def throughput(load: Load, config: Config) -> None:
    """Bursts of starts; each side's rows written before the next burst, its backlog counted in its CPU."""

    async def burst(side: str) -> float:
        took = await fan_out(config.burst, CONCURRENCY, lambda: load.start(side))
        await load.drain()  # the backlog of one side must not slow the other
        return took

    await alternate(load, config, "start_tput", "2 start + row written", "api", burst)


async def end_to_end(load: Load, config: Config) -> None:
    """API POSTs until every ChatSession row is written, against raw start -> activity -> completed."""

    async def raw_session() -> None:
        await load.client.get_workflow_handle(await load.start("raw", stay_open=False)).result()

    async def burst(side: str) -> float:
        if side == "raw":
            return await fan_out(config.burst, CONCURRENCY, raw_session)
        t0 = time.monotonic()
        rows = asyncio.create_task(load.wait_rows(side, load.rows[side] + config.burst))
        await fan_out(config.burst, CONCURRENCY, lambda: load.start(side))
        return await rows - t0

    await alternate(load, config, "e2e_tput", "3 end to end", "raw", burst)
