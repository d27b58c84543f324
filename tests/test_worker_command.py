"""`manage.py run_temporal_worker` as a real process, as `make run` and deployments start it."""

import asyncio
import signal
import urllib.request
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from temporalio.client import Client

from chat.models import ChatSession
from chat.types import SessionState
from chat.workflows import ChatSessionWorkflow, workflow_id_for
from devtools.processes import DevServer, free_port, wait_for
from temporal_integration.management.commands import run_temporal_worker
from temporal_integration.worker import WorkerOptions
from tests.conftest import WorkerProcess, temporal_cli, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def run_session(address: str, task_queue: str, user_id: str, session_id: str) -> SessionState:
    """Starts a session, posts one message, waits for the (demo model's) reply, ends it, returns its final state."""

    async def run() -> SessionState:
        client = await Client.connect(address)
        handle = await client.start_workflow(
            ChatSessionWorkflow.run, args=[user_id, session_id], id=workflow_id_for(session_id), task_queue=task_queue
        )
        await handle.execute_update(ChatSessionWorkflow.post_message, "hello")
        await wait_until(lambda: handle.query(ChatSessionWorkflow.get_state), lambda s: s.replies_pending == 0)
        await handle.execute_update(ChatSessionWorkflow.end_session)
        return await handle.result()

    return asyncio.run(asyncio.wait_for(run(), 30))


@pytest.fixture
def user():
    return get_user_model().objects.create_user("alice")


def test_worker_runs_a_session_to_completion_and_exits_0_on_sigterm(dev_server, user, tmp_path):
    worker = WorkerProcess(dev_server.address, log=tmp_path / "worker.log")
    try:
        final = run_session(dev_server.address, worker.task_queue, str(user.pk), "sub-1")

        assert (final.status, final.message_count) == ("ended", 2)
        session = ChatSession.objects.get(session_id="sub-1")
        assert (session.user, session.status, session.message_count) == (user, "ended", 2)
        assert list(session.messages.values_list("role", "status", "model")) == [
            ("user", "complete", ""),
            ("assistant", "complete", "demo"),
        ]
    finally:
        exit_code = worker.terminate()
    assert exit_code == 0, worker.output()
    assert "worker stopped" in worker.output()
    assert "Traceback" not in worker.output()


@pytest.mark.temporal  # starts a dev server of its own, late
def test_worker_waits_for_a_server_that_starts_later(user, tmp_path):
    port = free_port()
    worker = WorkerProcess(f"127.0.0.1:{port}", log=tmp_path / "worker.log")
    server = None
    try:
        wait_for(lambda: "Retrying in" in worker.output(), what="the worker's retry log line")
        assert worker.process.poll() is None
        server = DevServer(port=port).wait_ready()

        assert run_session(server.address, worker.task_queue, str(user.pk), "late-1").status == "ended"
    finally:
        exit_code = worker.terminate()
        if server:
            server.stop()
    assert exit_code == 0, worker.output()
    assert "Traceback" not in worker.output()


def test_worker_gives_up_with_a_clear_error_after_its_connect_timeout(tmp_path):
    worker = WorkerProcess(f"127.0.0.1:{free_port()}", "--connect-timeout", "1", log=tmp_path / "worker.log")

    assert worker.process.wait(30) == 1
    output = worker.output()
    assert "CommandError: Temporal at 127.0.0.1:" in output
    assert "Start it with `make temporal`, or set TEMPORAL_ADDRESS." in output
    assert "Traceback" not in output


def test_worker_sigterm_while_waiting_for_the_server_exits_0(tmp_path):
    worker = WorkerProcess(f"127.0.0.1:{free_port()}", log=tmp_path / "worker.log")
    wait_for(lambda: "Retrying in" in worker.output(), what="the worker's retry log line")

    assert worker.terminate() == 0
    assert "Traceback" not in worker.output()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-concurrent-activities", "0", "must be greater than 0, got 0"),
        ("--max-cached-workflows", "-1", "must be at least 0, got -1"),
        ("--sticky-queue-schedule-to-start-timeout", "0", "must be greater than 0, got 0"),
    ],
)
def test_worker_rejects_a_bad_option(tmp_path, option, value, message):
    worker = WorkerProcess("127.0.0.1:1", option, value, log=tmp_path / "worker.log")

    assert worker.process.wait(30) == 2
    assert message in worker.output()


def test_the_sticky_queue_timeout_flag_sets_the_workers_option(monkeypatch):
    started: list[WorkerOptions] = []
    monkeypatch.setattr(run_temporal_worker, "run", started.append)

    call_command("run_temporal_worker", "--sticky-queue-schedule-to-start-timeout", "2.5")

    assert started[0].sticky_queue_schedule_to_start_timeout == timedelta(seconds=2.5)


def test_worker_without_a_sticky_cache_replays_every_turn_and_still_completes(dev_server, user, tmp_path):
    # --max-cached-workflows 0: each workflow task rebuilds the session from its history, so a replay that
    # diverged from the first run would fail the session here.
    worker = WorkerProcess(dev_server.address, "--max-cached-workflows", "0", log=tmp_path / "worker.log")
    try:
        final = run_session(dev_server.address, worker.task_queue, str(user.pk), f"nocache-{uuid.uuid4().hex}")
    finally:
        exit_code = worker.terminate()
    assert (final.status, final.message_count) == ("ended", 2)
    assert exit_code == 0, worker.output()
    assert "Nondeterminism" not in worker.output()


def test_worker_exits_0_when_a_second_signal_arrives_during_shutdown(dev_server, tmp_path):
    worker = WorkerProcess(dev_server.address, log=tmp_path / "worker.log")
    wait_for(lambda: "worker polling" in worker.output(), what="the worker to poll")

    worker.process.send_signal(signal.SIGINT)  # Ctrl-C in the terminal...
    wait_for(lambda: "worker stopped" in worker.output(), what="the worker to stop")
    worker.process.send_signal(signal.SIGTERM)  # ...then the process manager's SIGTERM

    assert worker.process.wait(30) == 0, worker.output()


def test_worker_serves_prometheus_metrics_on_the_given_port(dev_server, user, tmp_path):
    port = free_port()
    worker = WorkerProcess(dev_server.address, "--metrics-port", str(port), log=tmp_path / "worker.log")
    try:
        run_session(dev_server.address, worker.task_queue, str(user.pk), "metered")
        metrics = wait_for(lambda: scrape(port), what="the metrics endpoint")
    finally:
        assert worker.terminate() == 0
    assert "temporal_workflow_completed" in metrics
    assert f'task_queue="{worker.task_queue}"' in metrics


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_worker_registers_the_configured_search_attribute_when_missing(dev_server, tmp_path):
    name = f"ChatTest{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(dev_server.address, log=tmp_path / "worker.log", TEMPORAL_USER_SEARCH_ATTRIBUTE=name)
    try:
        wait_for(lambda: "worker polling" in worker.output(), what="the worker to start")
    finally:
        assert worker.terminate() == 0
    assert f"registered search attribute {name} (Keyword)" in worker.output()
    listed = temporal_cli("operator", "search-attribute", "list", address=dev_server.address).stdout
    assert name in listed
