"""The baseline's worker: `python -m bench.raw_worker OPTIONS_JSON`, no Django in the process.

OPTIONS_JSON, from bench.procs: the server's address, the database's URL and SQLite busy timeout, and the Worker's
options, the slots and sticky cache taken from the project worker's defaults. SIGTERM or SIGINT stops it.
"""

import asyncio
import json
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from bench.raw_activities import RawActivities, RawDB
from bench.raw_workflows import RawSessionWorkflow


async def main(address: str, database_url: str, busy_timeout: float, worker: dict) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    client = await Client.connect(address)
    activities = RawActivities(RawDB(database_url, busy_timeout))
    # One thread per activity slot, as the project's worker has.
    with ThreadPoolExecutor(worker["max_concurrent_activities"], thread_name_prefix="activity") as executor:
        async with Worker(
            client,
            workflows=[RawSessionWorkflow],
            activities=[activities.raw_log_session_start, activities.raw_persist_message],
            activity_executor=executor,
            **worker,
        ):
            print(f"raw worker polling task queue {worker['task_queue']!r}", flush=True)
            await stop.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(main(**json.loads(sys.argv[1])))
        code = 0
    except BaseException as exc:  # reported, then a hard exit: the SDK's native threads may outlive finalization
        print(f"raw worker failed: {exc!r}", file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    os._exit(code)
