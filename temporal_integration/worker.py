"""Builds and runs the worker that hosts the workflows and activities that settings name."""

import asyncio
import logging
import signal
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from temporal_integration.client import TemporalUnavailable, connect
from temporal_integration.conf import get_config
from temporal_integration.connections import DjangoConnections
from temporal_integration.schedules import ScheduleBuilder, ensure_schedules

logger = logging.getLogger(__name__)
T = TypeVar("T")


def hosted(setting: str, paths: tuple[str, ...], *, required: bool = True) -> list[Any]:
    """Imports what a setting names (dotted paths); a wrong path fails start-up naming the setting."""
    if required and not paths:
        raise ImproperlyConfigured(f"{setting} names nothing for the worker to host.")
    try:
        return [import_string(path) for path in paths]
    except ImportError as exc:
        raise ImproperlyConfigured(f"{setting}: {exc}") from exc


@dataclass(frozen=True)
class WorkerOptions:
    task_queue: str
    # Activities at once. The assistant's turns are async and hold their slot while they wait on the model: leave
    # room beyond them for the short database activities that store messages.
    max_concurrent_activities: int = 100
    # Threads for the sync (database) activities, each keeping its connection; more of them at once wait their turn.
    activity_threads: int = 20
    max_concurrent_workflow_tasks: int = 100
    # Sessions kept in memory between their workflow tasks; this bounds the worker's RSS. A session's next task after
    # it has left the cache replays its history first, which costs the worker's CPU in proportion to the turns of its
    # run: the cache should hold the sessions active at once, which the worker's CPU already bounds to a few hundred.
    max_cached_workflows: int = 500
    graceful_shutdown_timeout: timedelta = timedelta(seconds=10)
    # How often a running activity's heartbeats reach the server at most. A cancel reaches the activity with a
    # heartbeat's answer, so this bounds how long a user's Stop takes (the SDK's default is 80% of the heartbeat
    # timeout: seconds).
    max_heartbeat_throttle_interval: timedelta = timedelta(seconds=0.5)
    # How long a session's next task waits for the worker that has it cached before any worker may take it from the
    # shared queue (replaying its history). A killed worker's sessions are silent for this long.
    sticky_queue_schedule_to_start_timeout: timedelta = timedelta(seconds=1)
    connect_timeout: float | None = None  # None: wait for the server for as long as it takes
    metrics_port: int | None = None  # serve the SDK's Prometheus metrics on 0.0.0.0:<port>/metrics


@dataclass(frozen=True)
class Hosted:
    workflows: list[type]
    activities: list[Callable[..., Any]]
    schedules: list[ScheduleBuilder] = field(default_factory=list)

    @classmethod
    def from_settings(cls) -> "Hosted":
        config = get_config()
        return cls(
            hosted("TEMPORAL_WORKFLOWS", config.workflows),
            hosted("TEMPORAL_ACTIVITIES", config.activities),
            hosted("TEMPORAL_SCHEDULES", config.schedules, required=False),
        )


def workflow_runner(workflows: list[type]) -> SandboxedWorkflowRunner:
    """The workflow sandbox, with the workflows' modules, and the modules they take names from, passed through.

    By default the sandbox imports a workflow's module afresh for every workflow instance: a session held in the
    worker's cache would carry its own copy of the module's code and classes. Passed through, every instance uses the
    worker's one import. The sandbox still refuses I/O builtins (open) and restricted imports (Django) to workflow
    code, but no longer sees a nondeterministic call made through the module's own globals (datetime.now(),
    random): the tests' workers and the replay tests run the workflows in the full sandbox, which does.
    """
    names: set[str] = set()
    for workflow in workflows:
        module = sys.modules[workflow.__module__]
        names.add(module.__name__)
        # The types its arguments and results decode to are looked up by their module inside the sandbox.
        for value in vars(module).values():
            name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
            if isinstance(name, str):
                names.add(name)
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*names))


def build_worker(client: Client, options: WorkerOptions, hosting: Hosted, executor: ThreadPoolExecutor) -> Worker:
    # The SDK warns when the executor has fewer threads than there are activity slots: here on purpose (the slots
    # beyond the threads are for async activities, which need none).
    warnings.filterwarnings("ignore", "Worker max_concurrent_activities is", UserWarning)
    return Worker(
        client,
        task_queue=options.task_queue,
        workflows=hosting.workflows,
        workflow_runner=workflow_runner(hosting.workflows),
        activities=hosting.activities,
        interceptors=[DjangoConnections()],
        # Sync activities (the ORM is sync) run on these threads; one thread per activity slot.
        activity_executor=executor,
        max_concurrent_activities=options.max_concurrent_activities,
        max_concurrent_workflow_tasks=options.max_concurrent_workflow_tasks,
        max_cached_workflows=options.max_cached_workflows,
        graceful_shutdown_timeout=options.graceful_shutdown_timeout,
        max_heartbeat_throttle_interval=options.max_heartbeat_throttle_interval,
        sticky_queue_schedule_to_start_timeout=options.sticky_queue_schedule_to_start_timeout,
    )


def _runtime(options: WorkerOptions) -> Runtime | None:
    if options.metrics_port is None:
        return None
    metrics = PrometheusConfig(bind_address=f"0.0.0.0:{options.metrics_port}")
    return Runtime(telemetry=TelemetryConfig(metrics=metrics, global_tags={"task_queue": options.task_queue}))


async def connect_with_backoff(
    stop: asyncio.Event, connect_timeout: float | None, runtime: Runtime | None = None
) -> Client | None:
    """Connects, retrying with backoff while the server is unreachable; None if stopped meanwhile."""
    deadline = None if connect_timeout is None else time.monotonic() + connect_timeout
    delay = 0.5
    while True:
        try:
            return await connect(runtime=runtime)
        except TemporalUnavailable as exc:
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            logger.warning("%s Retrying in %.1fs.", exc, delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return None
        except TimeoutError:
            delay = min(delay * 2, 10.0)


async def ensure_search_attribute(client: Client) -> None:
    """Registers the user-id search attribute if configured and missing (the dev server's flag doesn't, on an
    existing database). Where the worker may not (Temporal Cloud, a locked-down cluster), it says so and goes on."""
    name = get_config().user_search_attribute
    if not name:
        return
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        if name not in listed.custom_attributes:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace, search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD}
                )
            )
            logger.info("registered search attribute %s (Keyword) in namespace %s", name, client.namespace)
    except RPCError as exc:
        logger.warning("could not check or register search attribute %s: %s; register it yourself", name, exc.message)


async def run_worker(options: WorkerOptions, stop: asyncio.Event) -> None:
    """Runs the worker until `stop` is set, then drains in-flight tasks within the grace period."""
    hosting = Hosted.from_settings()  # a wrong dotted path fails before any connect
    runtime = _runtime(options)
    if runtime:
        logger.info("Prometheus metrics on http://0.0.0.0:%d/metrics", options.metrics_port)
    client = await connect_with_backoff(stop, options.connect_timeout, runtime)
    if client is None:
        return
    await ensure_search_attribute(client)
    await ensure_schedules(client, hosting.schedules, options.task_queue)
    threads = min(options.activity_threads, options.max_concurrent_activities)
    with ThreadPoolExecutor(threads, thread_name_prefix="activity") as executor:
        worker = build_worker(client, options, hosting, executor)
        running = asyncio.create_task(worker.run())
        stopping = asyncio.create_task(stop.wait())
        logger.info("worker polling task queue %r on %s", options.task_queue, client.service_client.config.target_host)
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            logger.info("stopping: draining in-flight tasks for up to %s", options.graceful_shutdown_timeout)
            await worker.shutdown()
        stopping.cancel()
        await running  # re-raises a fatal worker error
    logger.info("worker stopped")


def run(options: WorkerOptions) -> None:
    """Runs the worker in this thread until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def request_stop(signum: int, frame: object) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(stop.set)

        # Plain handlers rather than loop.add_signal_handler, which asyncio removes when the loop closes: the
        # second signal of a Ctrl-C under a process manager (SIGINT, then its SIGTERM) must not kill the exit.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, request_stop)
        await run_worker(options, stop)

    try:
        asyncio.run(main())
    finally:
        # The worker is done; Python's shutdown resets handlers to SIG_DFL (but keeps SIG_IGN), and a late
        # signal during that teardown would still end the process with -15 instead of its own exit code.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
