"""Line 4: the message round trip, an API post and a raw update in turn, over 10 open sessions of each kind."""

from collections.abc import Callable

from bench.load import Load, interleaved, record_latencies
from bench.results import Config


async def samples(load: Load, n: int, pick: Callable[[list[str], int], str]) -> tuple[list[float], list[float]]:
    """n messages of each side, to the open sessions `pick` chooses, after 3 of each that are not counted."""
    api_ids, raw_ids = load.open["api"], load.open["raw"]
    for i in range(3):
        await load.api_message(pick(api_ids, i), -i)
        await load.raw_message(pick(raw_ids, i), -i)
    return await interleaved(
        n, lambda i: load.api_message(pick(api_ids, i), i), lambda i: load.raw_message(pick(raw_ids, i), i)
    )


async def round_trip(load: Load, config: Config) -> None:
    for i in range(10):
        await load.api_start()
        await load.raw_start(f"msg-{i}")
    await load.drain()
    spent: dict[str, float] = {}
    with load.charge(spent):  # over the 10 newest of each side
        api, raw = await samples(load, config.messages, lambda ids, i: ids[len(ids) - 10 + i % 10])
    per_pair = {k: 1000 * v / (config.messages + 3) for k, v in spent.items()}
    load.results.cpu["4 one API message + one raw update, per pair"] = per_pair
    record_latencies(load.results, "msg", api, raw)
