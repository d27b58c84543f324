"""The project's names the bench uses, imported here only, so that a move in the project changes this file alone.

Nothing here imports Django at import time: the raw worker imports this module too, and its process stays Django-free.
"""

from chat.types import ChatMessageData, EventType, SessionOptions
from chat.workflows import DB_RETRY, ChatSessionWorkflow, workflow_id_for

__all__ = [
    "DB_RETRY",
    "ChatMessageData",
    "ChatSessionWorkflow",
    "EventType",
    "SessionOptions",
    "worker_defaults",
    "workflow_id_for",
]


def worker_defaults() -> dict[str, int]:
    """The project worker's default slots, activity threads and sticky cache, which the raw worker is given too."""
    from temporal_integration.worker import WorkerOptions  # on call: it imports Django, which the raw worker must not

    options = WorkerOptions(task_queue="")
    keys = ("max_concurrent_activities", "activity_threads", "max_concurrent_workflow_tasks", "max_cached_workflows")
    return {key: getattr(options, key) for key in keys}
