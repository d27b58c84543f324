"""Django's database connection hygiene for activities, which run outside Django's request cycle."""

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

T = TypeVar("T")


class DjangoConnections(Interceptor):
    """Gives sync activities Django's connection hygiene around each attempt.

    Activity threads live outside Django's request cycle: nothing else closes their expired connections, and a
    connection broken by a database restart would otherwise fail every later attempt on that thread.
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _DjangoConnectionsInbound(next)


class _DjangoConnectionsInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if input.executor is not None and not inspect.iscoroutinefunction(input.fn):
            input = dataclasses.replace(input, fn=_with_fresh_connections(input.fn))
        return await super().execute_activity(input)


def _with_fresh_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return run


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Runs sync (ORM) code from an async activity, on a thread, with the same connection hygiene as a sync
    activity gets."""
    return await sync_to_async(_with_fresh_connections(fn), thread_sensitive=False)(*args, **kwargs)
