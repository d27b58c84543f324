"""`manage.py runserver`: the project's ASGI application under uvicorn, with Django's autoreloader, so the event
stream streams in development as it does in production."""

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from devtools.model_server import Reply
from devtools.processes import MANAGE, WebServer, wait_for
from tests.conftest import Chat, app_env, reply_stored, subscribed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

RUNSERVER = f"{MANAGE} runserver {{host}}:{{port}}"


@pytest.fixture
def runserver(worker, dev_server, assistant_model, settings, tmp_path: Path) -> Iterator[Callable[..., WebServer]]:
    """Starts `manage.py runserver` on this test's task queue, ready once it answers /healthz."""
    servers: list[WebServer] = []

    def start(*args: str) -> WebServer:
        env = app_env(dev_server.address, settings.TEMPORAL_TASK_QUEUE)
        command = " ".join([RUNSERVER, *args])
        servers.append(WebServer(env, tmp_path / f"runserver-{len(servers)}.log", command=command, name="runserver"))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def chat_on(server: WebServer) -> Chat:
    user = get_user_model().objects.create_user(f"u{server.pid}")
    return Chat(server.url, Token.objects.create(user=user).key, server.pid)


def test_runserver_streams_the_reply_as_it_is_written_before_it_is_stored(runserver, assistant_model):
    chat = chat_on(runserver("--noreload"))
    slowly = Reply("one two three four five six seven eight nine ten", chunk_delay=0.2)
    # Twice: a step the machine stalls past its heartbeat timeout is retried, and the retry must write the same.
    assistant_model.script(slowly, slowly)
    chat.start("runserver-streams")
    subscribed(chat, "runserver-streams")
    following = chat.follow_in_background("runserver-streams", reply_stored(2))

    chat.say("runserver-streams", "write slowly")
    events = following.result(60)

    deltas = [e for e in events if e.type == "delta"]
    stored = events[-1]
    assert (stored.type, stored.data["content"]) == ("message", "one two three four five six seven eight nine ten")
    assert len(deltas) >= 3
    # A server that held the stream back would hand every event over at once, if at all.
    assert stored.at - deltas[0].at > 1.0
    assert deltas[-1].at - deltas[0].at > 0.5


def test_runserver_with_the_autoreloader_answers_and_sigterm_ends_it_and_its_server_process(runserver):
    server = runserver()
    children = psutil.Process(server.pid).children()

    assert server.healthy()
    assert [child.cmdline()[-2:] for child in children] == [["runserver", server.url.removeprefix("http://")]]
    assert "Watching for file changes with StatReloader" in server.output()
    assert f"Starting development server at {server.url}/" in server.output()
    assert server.terminate() == 0
    wait_for(lambda: not any(child.is_running() for child in children), timeout=10, what="the server process to end")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=lambda stop: stop.name)
def test_runserver_stops_within_seconds_with_an_event_stream_open(runserver, stop):
    server = runserver("--noreload")
    chat, session_id = chat_on(server), f"runserver-{stop.name}"
    chat.start(session_id)
    subscribed(chat, session_id)
    following = chat.follow_in_background(session_id, lambda events: False)
    wait_for(lambda: '/events/ HTTP/1.1" 200' in server.output(), timeout=10, what="the stream to open")

    server.process.send_signal(stop)

    assert server.process.wait(10) in (0, -signal.SIGTERM)
    wait_for(following.done, timeout=10, what="the stream to end")
