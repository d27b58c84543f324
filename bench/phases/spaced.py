"""Lines 1b and 6: latency where the machine is idle before each request (starts spaced apart, with each web process's
CPU per start), and the first message riding on the start (update-with-start), for the API, its FastAPI peer and the
raw SDK."""

from bench.load import Load, interleaved, record_latencies
from bench.results import Config

# Between one request and the next: longer than a start's own work on the web side, so that no request waits on the one
# before (back to back, a start meets the previous session's workflow and activity work on the same 2 cores).
SPACING = 0.06
WEB = {"api": "web server", "fastapi": "fastapi peer"}


async def starts(load: Load, config: Config) -> None:
    """Sequential starts, SPACING apart; the web processes' CPU per start (each serves only its own side)."""
    before = {side: load.processes[name].cpu_seconds() for side, name in WEB.items()}
    samples = await interleaved(config.seq, lambda side, _: load.start(side), spacing=SPACING, sides=load.sides)
    for side, name in WEB.items():
        load.results.figures[f"webcpu_{side}"] = 1000 * (load.processes[name].cpu_seconds() - before[side]) / config.seq
    record_latencies(load.results, "spaced", samples)
    await load.drain()


async def first_message(load: Load, config: Config) -> None:
    """`POST /api/sessions/` with content on the API and the peer, against the raw client's
    execute_update_with_start_workflow of the same workflow (as chat.gateway calls it), SPACING apart."""

    async def first(side: str, _: int) -> None:
        if side == "raw":
            await load.start("api", by_client=True, content="hello")
        else:
            await load.start(side, content="hello")

    record_latencies(load.results, "first", await interleaved(config.seq, first, spacing=SPACING, sides=load.sides))
    await load.drain()
