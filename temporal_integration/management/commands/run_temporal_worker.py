import argparse
import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from temporal_integration.client import TemporalUnavailable
from temporal_integration.conf import get_config
from temporal_integration.worker import WorkerOptions, run

DEFAULTS = WorkerOptions(task_queue="")


def _positive(cast: type, *, zero: bool = False) -> Callable[[str], float]:
    def parse(value: str) -> float:
        number = cast(value)
        if number < 0 or (number == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'at least 0' if zero else 'greater than 0'}, got {value}")
        return number

    return parse


class Command(BaseCommand):
    help = (
        "Runs a Temporal worker hosting the workflows and activities named by TEMPORAL_WORKFLOWS and "
        "TEMPORAL_ACTIVITIES; SIGINT or SIGTERM drains it and exits 0."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--task-queue", help="Task queue to poll (default: TEMPORAL_TASK_QUEUE).")
        parser.add_argument(
            "--max-concurrent-activities",
            type=_positive(int),
            default=DEFAULTS.max_concurrent_activities,
            help="Activities run at once, the assistant's turns included (default %(default)s).",
        )
        parser.add_argument(
            "--activity-threads",
            type=_positive(int),
            default=DEFAULTS.activity_threads,
            help="Threads for the database activities, each with its own DB connection (default %(default)s).",
        )
        parser.add_argument(
            "--max-concurrent-workflow-tasks",
            type=_positive(int),
            default=DEFAULTS.max_concurrent_workflow_tasks,
            help="Workflow tasks processed at once (default %(default)s).",
        )
        parser.add_argument(
            "--max-cached-workflows",
            type=_positive(int, zero=True),
            default=DEFAULTS.max_cached_workflows,
            help="Workflows kept in memory between their tasks; bounds the worker's memory (default %(default)s, "
            "about 85 KB each for a chat session; 0 replays every task from history).",
        )
        parser.add_argument(
            "--graceful-shutdown-timeout",
            type=_positive(float),
            default=DEFAULTS.graceful_shutdown_timeout.total_seconds(),
            help="Seconds in-flight activities get to finish on shutdown (default %(default)g).",
        )
        parser.add_argument(
            "--sticky-queue-schedule-to-start-timeout",
            type=_positive(float),
            default=DEFAULTS.sticky_queue_schedule_to_start_timeout.total_seconds(),
            help="Seconds a session's task waits for the worker that holds it before another worker replays it; "
            "bounds the silence of a killed worker's sessions (default %(default)g).",
        )
        parser.add_argument(
            "--connect-timeout",
            type=_positive(float),
            default=DEFAULTS.connect_timeout,
            help="Give up after this many seconds without a server (default: keep waiting).",
        )
        parser.add_argument(
            "--metrics-port",
            type=_positive(int),
            default=DEFAULTS.metrics_port,
            help="Serve the SDK's Prometheus metrics on this port at /metrics (default: off).",
        )

    def handle(self, *args: object, **options: object) -> None:
        worker_options = WorkerOptions(
            task_queue=options["task_queue"] or get_config().task_queue,
            max_concurrent_activities=options["max_concurrent_activities"],
            activity_threads=options["activity_threads"],
            max_concurrent_workflow_tasks=options["max_concurrent_workflow_tasks"],
            max_cached_workflows=options["max_cached_workflows"],
            graceful_shutdown_timeout=timedelta(seconds=options["graceful_shutdown_timeout"]),
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=options["sticky_queue_schedule_to_start_timeout"]),
            connect_timeout=options["connect_timeout"],
            metrics_port=options["metrics_port"],
        )
        try:
            run(worker_options)
        except TemporalUnavailable as exc:
            raise CommandError(f"{exc} Start it with `make temporal`, or set TEMPORAL_ADDRESS.") from exc
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc

    def run_from_argv(self, argv: list[str]) -> None:
        # As a process of its own, leave without interpreter finalization, whatever the exit code: the SDK's
        # native threads may still call into Python while it runs, which aborts the process (exit -6, seen
        # after both a clean drain and a CommandError). call_command() doesn't come through here.
        try:
            super().run_from_argv(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
