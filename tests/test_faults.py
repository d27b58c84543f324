"""Faults against real processes: killed workers, a restarted Temporal server, a database refusing writes.

Each test asserts that nothing is lost and nothing is written twice.
"""

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from temporalio.client import Client

from chat.models import ChatMessage, ChatSession
from chat.types import SessionOptions
from chat.workflows import ChatSessionWorkflow, workflow_id_for
from devtools.processes import DevServer, WebServer, free_port, wait_for
from temporal_integration.conf import temporal_settings
from tests.conftest import WorkerProcess, app_env, database_url, token_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]
ACTIVITY_TIMEOUT = 2  # seconds: how soon Temporal retries an attempt (or a workflow task) whose worker died


@pytest.fixture
def queue(settings) -> str:
    """A task queue of the test's own for the API's sessions, with short activity timeouts."""
    settings.TEMPORAL_TASK_QUEUE = f"test-{uuid.uuid4()}"
    settings.CHAT_ACTIVITY_TIMEOUT = ACTIVITY_TIMEOUT
    return settings.TEMPORAL_TASK_QUEUE


@pytest.fixture
def api() -> APIClient:
    return token_client("carol")


@contextmanager
def database_write_lock() -> Iterator[None]:
    """Holds the chat tables' write lock from a connection of its own: the worker's writes wait, or fail."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        lock = sqlite3.connect(db["NAME"], isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()
    else:
        lock = psycopg.connect(
            host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"]
        )
        lock.execute("LOCK TABLE chat_chatsession, chat_chatmessage IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            lock.rollback()
            lock.close()


class Background:
    """An async call to Temporal on a thread of its own, with its own client; the test goes on meanwhile."""

    def __init__(self, address: str, call: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        async def run() -> None:
            self.result = await call(await Client.connect(address))

        def main() -> None:
            try:
                asyncio.run(asyncio.wait_for(run(), 120))
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(130)
        if self.error:
            raise self.error
        return self.result


def post_update(workflow_id: str, content: str) -> Any:
    """A raw post_message update, waiting as long as it takes (the API's own call gives up after its timeout)."""
    return lambda client: client.get_workflow_handle(workflow_id).execute_update(
        ChatSessionWorkflow.post_message, content
    )


def post(api: APIClient, session_id: str, content: str):
    return api.post(f"/api/sessions/{session_id}/messages/", {"content": content}, format="json")


def post_once(api: APIClient, session_id: str, content: str, client_message_id: str) -> dict | None:
    """One idempotent post; the stored message, or None on a 503 (safe to call again)."""
    response = api.post(
        f"/api/sessions/{session_id}/messages/",
        {"content": content, "client_message_id": client_message_id},
        format="json",
    )
    assert response.status_code in (201, 503), response.content
    return response.json() if response.status_code == 201 else None


def test_a_worker_killed_during_log_session_start_is_replaced_and_the_record_written_once(
    api, dev_server, queue, temporal_address, tmp_path
):
    temporal_address(dev_server.address)
    first = WorkerProcess(dev_server.address, log=tmp_path / "first.log", task_queue=queue)
    with database_write_lock():
        assert api.post("/api/sessions/", {"session_id": "crash-start"}, format="json").status_code == 202
        wait_for(lambda: "log_session_start user_id" in first.output(), what="the activity to start")
        first.kill()
    second = WorkerProcess(dev_server.address, log=tmp_path / "second.log", task_queue=queue)
    try:
        wait_for(lambda: ChatSession.objects.filter(session_id="crash-start").exists(), what="the record")
        # The session's workflow was cached on the dead worker: until Temporal gives up on that worker's sticky
        # queue, a post may answer 503. Retrying with one client_message_id is safe.
        posted = wait_for(lambda: post_once(api, "crash-start", "after the crash", "retry-1"),
                          what="a post to be answered")  # fmt: skip
        assert posted["seq"] == 1
    finally:
        assert second.terminate() == 0
    assert ChatSession.objects.filter(session_id="crash-start").count() == 1
    assert "session_id=crash-start workflow_id=chat-session-crash-start attempt=2" in second.output()


def test_a_worker_killed_during_store_message_is_replaced_and_the_message_stored_once(
    api, dev_server, queue, temporal_address, tmp_path
):
    temporal_address(dev_server.address)
    first = WorkerProcess(dev_server.address, log=tmp_path / "first.log", task_queue=queue)
    assert api.post("/api/sessions/", {"session_id": "crash-message"}, format="json").status_code == 202
    wait_for(lambda: ChatSession.objects.filter(session_id="crash-message").exists(), what="the record")
    handle_id = workflow_id_for("crash-message")
    with database_write_lock():
        update = Background(dev_server.address, post_update(handle_id, "written while the worker dies"))
        wait_for(lambda: "store_message session_id=crash-message seq=1" in first.output(), what="the activity")
        first.kill()
    second = WorkerProcess(dev_server.address, log=tmp_path / "second.log", task_queue=queue)
    try:
        stored = update.join()
    finally:
        assert second.terminate() == 0
    assert stored.seq == 1
    assert list(ChatMessage.objects.filter(role="user").values_list("seq", "content")) == [
        (1, "written while the worker dies")
    ]
    assert "store_message session_id=crash-message seq=1 attempt=2" in second.output()


@pytest.mark.temporal  # starts (and restarts) a dev server of its own
def test_a_restarted_temporal_server_keeps_open_sessions(api, queue, temporal_address, settings, tmp_path):
    port = free_port()
    server = DevServer(port=port, db_filename=str(tmp_path / "temporal.db")).wait_ready()
    temporal_address(server.address)
    worker = WorkerProcess(server.address, log=tmp_path / "worker.log", task_queue=queue)
    try:
        assert api.post("/api/sessions/", {"session_id": "survivor"}, format="json").status_code == 202
        assert [post(api, "survivor", t).json()["seq"] for t in ["one", "two"]] == [1, 3]
        wait_for(lambda: ChatMessage.objects.filter(role="assistant").count() == 2, what="both replies")

        server.process.kill()
        server.process.wait()
        started = time.monotonic()
        down = post(api, "survivor", "while the server is down")
        waited = time.monotonic() - started
        health = api.get("/healthz")

        assert down.status_code == 503, down.content
        assert down["Retry-After"] == "5"
        assert waited < 3 * temporal_settings.TEMPORAL_RPC_TIMEOUT  # bounded, not hanging: a deadline, not a timing
        assert (health.status_code, health.json()["database"]) == (503, "ok")
        assert health.json()["temporal"].startswith("unavailable")

        server = DevServer(port=port, db_filename=str(tmp_path / "temporal.db")).wait_ready()
        live = wait_for(lambda: api.get("/api/sessions/survivor/").json()["live"], timeout=60, what="the workflow")
        assert (live["status"], live["message_count"]) == ("active", 4)
        third = post(api, "survivor", "three")
        assert (third.status_code, third.json().get("seq")) == (201, 5), third.content
    finally:
        worker.terminate()
        server.stop()
    assert list(ChatMessage.objects.filter(role="user").order_by("seq").values_list("seq", "content")) == [
        (1, "one"),
        (3, "two"),
        (5, "three"),
    ]


def test_activities_retry_while_the_database_refuses_writes_and_write_once(api, dev_server, queue, temporal_address,
                                                                            tmp_path):  # fmt: skip
    temporal_address(dev_server.address)
    # The worker gives up on a lock quickly, so its attempts fail (and are retried) while the lock is held.
    if connection.vendor == "sqlite":
        env = {"SQLITE_BUSY_TIMEOUT": "0.2"}
    else:
        env = {"DATABASE_URL": database_url() + "?options=-c%20lock_timeout%3D200"}
    worker = WorkerProcess(dev_server.address, log=tmp_path / "worker.log", task_queue=queue, **env)
    try:
        with database_write_lock():
            assert api.post("/api/sessions/", {"session_id": "db-down"}, format="json").status_code == 202
            handle_id = workflow_id_for("db-down")
            updates = [Background(dev_server.address, post_update(handle_id, f"m{n}")) for n in range(3)]
            wait_for(lambda: "session_id=db-down workflow_id=chat-session-db-down attempt=3" in worker.output(),
                     what="failed attempts to be retried")  # fmt: skip
            assert not ChatSession.objects.filter(session_id="db-down").exists()
        results = [update.join() for update in updates]
        wait_for(lambda: ChatMessage.objects.count() == 6, what="the three replies")
    finally:
        assert worker.terminate() == 0
    assert sorted(r.seq for r in results) == [1, 3, 5]
    assert ChatSession.objects.filter(session_id="db-down").count() == 1
    assert sorted(ChatMessage.objects.values_list("seq", flat=True)) == [1, 2, 3, 4, 5, 6]
    assert ChatSession.objects.get(session_id="db-down").message_count == 6


def test_two_workers_one_killed_mid_load_every_session_completes(api, dev_server, queue, tmp_path):
    user_id = str(api.user.pk)
    workers = [WorkerProcess(dev_server.address, log=tmp_path / f"w{n}.log", task_queue=queue) for n in range(2)]
    sessions = [f"load-{n}" for n in range(20)]

    async def one_session(client: Client, session_id: str) -> Any:
        # Short timeouts for the killed worker's activities and workflow tasks: the sessions' default activity timeout
        # and Temporal's workflow task timeout, 10 s each, are what the sessions it held would otherwise sit out.
        handle = await client.start_workflow(
            ChatSessionWorkflow.run,
            args=[user_id, session_id, SessionOptions(activity_timeout_seconds=ACTIVITY_TIMEOUT), None],
            id=workflow_id_for(session_id),
            task_queue=queue,
            task_timeout=timedelta(seconds=ACTIVITY_TIMEOUT),
        )
        for n in range(3):
            await handle.execute_update(ChatSessionWorkflow.post_message, f"{session_id}/{n}")
        await handle.execute_update(ChatSessionWorkflow.end_session)
        return await handle.result()

    async def load(client: Client) -> list:
        return await asyncio.gather(*(one_session(client, s) for s in sessions))

    try:
        run = Background(dev_server.address, load)
        wait_for(lambda: ChatMessage.objects.filter(role="user").count() >= 15, what="the load to be under way")
        workers[0].kill()
        finals = run.join()
    finally:
        assert workers[1].terminate() == 0
    # Each message took a seq and its reply the next; the end stops the reply being written and drops the rest.
    assert [(f.status, f.message_count) for f in finals] == [("ended", 6)] * 20
    for session in ChatSession.objects.filter(session_id__in=sessions):
        assert session.status == "ended"
        users = session.messages.filter(role="user").values_list("seq", "content")
        assert list(users) == [(2 * n + 1, f"{session}/{n}") for n in range(3)]
        assert set(session.messages.filter(role="assistant").values_list("seq", flat=True)) <= {2, 4, 6}
    assert ChatSession.objects.filter(session_id__in=sessions).count() == 20


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs a database server that can drop its clients' connections"
)
def test_kept_connections_that_the_database_dropped_are_replaced_before_the_next_request_and_activity(
    dev_server, tmp_path
):
    # Activity threads keep their connections (DATABASE_CONN_MAX_AGE); a database restart or failover drops them
    # all. The health check must replace each one before use: no error answer, no retried activity. (The web process
    # under ASGI opens one per request, which a drop can't catch out.)
    queue = f"dropped-{uuid.uuid4()}"
    env = app_env(dev_server.address, queue)
    key = Token.objects.create(user=get_user_model().objects.create_user("dropped")).key
    session_id = f"dropped-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(dev_server.address, log=tmp_path / "worker.log", task_queue=queue)
    web = WebServer(env, tmp_path / "web.log")
    try:
        api = httpx.Client(base_url=f"{web.url}/api", headers={"Authorization": f"Token {key}"}, timeout=30)
        assert api.post("/sessions/", json={"session_id": session_id}).status_code == 202
        before = api.post(f"/sessions/{session_id}/messages/", json={"content": "before"}, params={"wait": "true"})
        assert before.status_code == 201, before.text  # answered: no activity is running when the connections go

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            dropped = cursor.fetchone()[0]

        after = api.post(f"/sessions/{session_id}/messages/", json={"content": "after"}, params={"wait": "true"})
        record = api.get(f"/sessions/{session_id}/")
    finally:
        web.stop()
        exit_code = worker.terminate()

    assert dropped >= 1, "the worker should have kept its activity threads' connections"
    assert (after.status_code, after.json()["seq"], after.json()["status"]) == (201, 4, "complete"), after.text
    assert (record.status_code, record.json()["message_count"]) == (200, 4), record.text
    users = ChatMessage.objects.filter(session__session_id=session_id, role="user").values_list("content", flat=True)
    assert list(users) == ["before", "after"]
    assert exit_code == 0
    assert "attempt=2" not in worker.output(), worker.output()
