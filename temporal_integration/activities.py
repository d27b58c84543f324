"""Activities: the only code here that touches the database.

Importing this module must not import Django: the workflow module imports it (passed
through the sandbox), and workflow code stays free of Django. The ORM is imported inside
each activity, which only ever runs in a worker where Django is set up.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from temporalio import activity
from temporalio.exceptions import ApplicationError

logger = logging.getLogger(__name__)


@contextmanager
def _orm() -> Iterator[None]:
    from django.db import close_old_connections

    # Worker threads live outside Django's request cycle: nothing else recycles their connections,
    # and a connection broken by a database restart would otherwise fail every later attempt.
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


@activity.defn
def log_session_start(user_id: str, session_id: str) -> str:
    """Writes the session's record; a retried attempt finds the row and never adds a second one."""
    from django.contrib.auth import get_user_model

    from chat.models import ChatSession

    info = activity.info()
    logger.info(
        "log_session_start user_id=%s session_id=%s workflow_id=%s attempt=%d",
        user_id,
        session_id,
        info.workflow_id,
        info.attempt,
    )
    with _orm():
        if not get_user_model().objects.filter(pk=user_id).exists():
            raise ApplicationError(f"user {user_id} does not exist", type="UnknownUser", non_retryable=True)
        ChatSession.objects.update_or_create(
            session_id=session_id,
            defaults={"user_id": user_id, "workflow_id": info.workflow_id, "run_id": info.workflow_run_id},
        )
    return f"session {session_id} started for user {user_id}"
