"""Line 4: the message round trip, an API post, a peer post and a raw update in turn, over 10 open sessions of each
kind; each web process's CPU per message it served."""

from collections.abc import Callable

from bench.load import Load, interleaved, record_latencies
from bench.phases.spaced import WEB
from bench.results import Config


async def samples(
    load: Load, n: int, pick: Callable[[list[str], int], str], sides: tuple[str, ...] | None = None
) -> dict[str, list[float]]:
    """n messages of each side, to the open sessions `pick` chooses, after 3 of each that are not counted."""
    sides = sides or load.sides
    for i in range(3):
        for side in sides:
            await load.message(side, pick(load.open[side], i))
    return await interleaved(n, lambda side, i: load.message(side, pick(load.open[side], i)), sides=sides)


async def round_trip(load: Load, config: Config) -> None:
    for _ in range(10):
        for side in load.sides:
            await load.start(side)
    await load.drain()
    spent: dict[str, float] = {}
    with load.charge(spent):  # over the 10 newest of each side
        found = await samples(load, config.messages, lambda ids, i: ids[len(ids) - 10 + i % 10])
    per_message = {k: 1000 * v / (config.messages + 3) for k, v in spent.items()}
    load.results.cpu["4 one message of each side"] = per_message
    for side, name in WEB.items():  # each web server serves only its own side's messages
        if name in per_message:
            load.results.figures[f"webcpu_msg_{side}"] = per_message[name]
    record_latencies(load.results, "msg", found)
