"""The Temporal Schedules that settings name (TEMPORAL_SCHEDULES), created or brought up to date by the worker."""

import logging
from collections.abc import Callable

from temporalio.client import Client, Schedule, ScheduleAlreadyRunningError, ScheduleUpdate

logger = logging.getLogger(__name__)

# A dotted path in TEMPORAL_SCHEDULES names one of these: given the worker's task queue, the schedule's id and spec.
ScheduleBuilder = Callable[[str], tuple[str, Schedule]]


async def ensure_schedules(client: Client, builders: list[ScheduleBuilder], task_queue: str) -> None:
    """Creates each schedule, or updates it to what the code says now: any number of workers may run this."""
    for build in builders:
        schedule_id, schedule = build(task_queue)
        try:
            await client.create_schedule(schedule_id, schedule)
            logger.info("created schedule %s", schedule_id)
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle(schedule_id).update(lambda _, new=schedule: ScheduleUpdate(schedule=new))
            logger.info("updated schedule %s", schedule_id)
