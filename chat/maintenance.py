"""The chat app's Temporal Schedules, which the worker creates or updates as it starts (TEMPORAL_SCHEDULES)."""

from datetime import timedelta

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from chat.conf import chat_settings
from chat.types import EventRetention
from chat.workflows import ChatMaintenanceWorkflow

EVENT_RETENTION_SCHEDULE = "chat-event-retention"
EVENT_RETENTION_EVERY = timedelta(hours=1)


def event_retention_schedule(task_queue: str) -> tuple[str, Schedule]:
    """Every hour, the events of sessions that ended more than CHAT_EVENT_RETENTION seconds ago go."""
    action = ScheduleActionStartWorkflow(
        ChatMaintenanceWorkflow.run,
        EventRetention(chat_settings.CHAT_EVENT_RETENTION),
        id=EVENT_RETENTION_SCHEDULE,
        task_queue=task_queue,
        # a run that no worker takes (its task queue renamed since) must not hold off the next ones: SKIP below
        execution_timeout=EVENT_RETENTION_EVERY - timedelta(minutes=5),
    )
    spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=EVENT_RETENTION_EVERY)])
    return EVENT_RETENTION_SCHEDULE, Schedule(action, spec, policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP))
