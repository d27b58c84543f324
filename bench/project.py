"""The project's names the bench uses, imported here only, so that a move in the project changes this file alone.

Nothing here imports Django at import time: the raw worker imports this module too, and its process stays Django-free.
"""

from chat.types import SessionOptions
from chat.workflows import DB_RETRY, ChatSessionWorkflow, workflow_id_for

__all__ = ["DB_RETRY", "ChatSessionWorkflow", "SessionOptions", "worker_defaults", "workflow_id_for"]


def worker_defaults() -> dict[str, int]:
    """The project worker's default slots and sticky cache, which the raw worker is given too."""
    # Imported on call: temporal_integration.worker imports Django, which the raw worker's process must not load.
    from temporal_integration.worker import WorkerOptions

    options = WorkerOptions(task_queue="")
    return {
        "max_concurrent_activities": options.max_concurrent_activities,
        "max_concurrent_workflow_tasks": options.max_concurrent_workflow_tasks,
        "max_cached_workflows": options.max_cached_workflows,
    }
