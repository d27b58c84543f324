"""The baseline's worker: `python -m bench.raw_worker ADDRESS TASK_QUEUE DATABASE_URL`, no Django in the process.

Configured as the project's worker is: 20 activity slots on a 20-thread pool, 100 workflow-task slots, the SDK's
default sandbox and sticky cache (max_cached_workflows=1000). SIGTERM or SIGINT stops it.
"""

import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from bench import raw_activities
from bench.raw_workflows import RawSessionWorkflow
from bench.rawdb import RawDB

MAX_CONCURRENT_ACTIVITIES = 20
MAX_CONCURRENT_WORKFLOW_TASKS = 100


async def main(address: str, task_queue: str, database_url: str) -> None:
    raw_activities.DB = RawDB(database_url, keep=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    client = await Client.connect(address)
    with ThreadPoolExecutor(MAX_CONCURRENT_ACTIVITIES, thread_name_prefix="activity") as executor:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[RawSessionWorkflow],
            activities=[raw_activities.raw_log_session_start, raw_activities.raw_persist_message],
            activity_executor=executor,
            max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
            max_concurrent_workflow_tasks=MAX_CONCURRENT_WORKFLOW_TASKS,
        )
        async with worker:
            print(f"raw worker polling task queue {task_queue!r}", flush=True)
            await stop.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(main(*sys.argv[1:4]))
        code = 0
    except BaseException as exc:  # reported, then a hard exit: the SDK's native threads may outlive finalization
        print(f"raw worker failed: {exc!r}", file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    os._exit(code)
