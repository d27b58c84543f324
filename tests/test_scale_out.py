"""Two web processes (the Procfile's, as production runs them) behind one database, one event log and one worker: a
stream on either process carries what was posted through the other, and a client may resume on either."""

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from devtools.model_server import Reply
from devtools.processes import WebServer
from tests.conftest import SSE, Chat, app_env, reply_stored, reply_text, subscribed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

WORDS = " ".join(f"w{n}" for n in range(30))


def shows_the_reply_once(events: list[SSE]) -> bool:
    """Every event once, the reply's text as written in order and never twice, then the whole reply stored (its
    last deltas may have been compacted into that message by the time a stream reads them)."""
    ids = [event.id for event in events]
    return len(ids) == len(set(ids)) and WORDS.startswith(reply_text(events, 2)) and events[-1].data["content"] == WORDS


@pytest.fixture
def two_webs(worker, dev_server, assistant_model, settings, tmp_path: Path) -> Iterator[tuple[Chat, Chat]]:
    """One user's clients on two web processes of their own, A and B, on this test's task queue."""
    env = app_env(dev_server.address, settings.TEMPORAL_TASK_QUEUE)
    token = Token.objects.create(user=get_user_model().objects.create_user("two-webs")).key
    with contextlib.ExitStack() as servers:
        a, b = (servers.enter_context(WebServer(env, tmp_path / f"web-{n}.log", name=f"web-{n}")) for n in "ab")
        yield Chat(a.url, token, a.pid), Chat(b.url, token, b.pid)


def test_a_stream_on_one_web_process_carries_a_message_posted_through_the_other(two_webs, assistant_model):
    a, b = two_webs
    assistant_model.script(Reply(WORDS, chunk_delay=0.02))
    b.start("scale-out-across")
    subscribed(a, "scale-out-across")
    following = a.follow_in_background("scale-out-across", reply_stored(2))

    posted = b.say("scale-out-across", "posted through b")
    events = following.result(60)

    assert events[0].type == "message"
    assert (events[0].data["seq"], events[0].data["content"]) == (posted["seq"], "posted through b")
    assert shows_the_reply_once(events)
    assert reply_text(events, 2)  # streamed, not only stored


def test_a_client_that_resumes_on_the_other_web_process_misses_nothing_and_sees_nothing_twice(
    two_webs, assistant_model
):
    a, b = two_webs
    assistant_model.script(Reply(WORDS, chunk_delay=0.05))
    a.start("scale-out-resume")
    subscribed(a, "scale-out-resume")
    a.say("scale-out-resume", "count")

    before = a.follow("scale-out-resume", lambda events: sum(e.type == "delta" for e in events) >= 3)
    after = b.follow("scale-out-resume", reply_stored(2), last_event_id=before[-1].id)

    assert shows_the_reply_once(before + after)


def test_a_web_process_killed_mid_reply_its_client_resumes_on_the_other_and_misses_nothing(two_webs, assistant_model):
    a, b = two_webs
    assistant_model.script(Reply(WORDS, chunk_delay=0.05))
    a.start("scale-out-killed")
    subscribed(a, "scale-out-killed")
    a.say("scale-out-killed", "count")
    server_a = psutil.Process(a.pid)
    processes = [server_a, *server_a.children(recursive=True)]

    def kill_a(events: list[SSE]) -> bool:
        if sum(e.type == "delta" for e in events) < 3:
            return False
        for process in processes:
            process.kill()
        return True

    before = a.follow("scale-out-killed", kill_a)
    killed_at = time.monotonic()
    assert psutil.wait_procs(processes, timeout=10)[1] == []  # none alive
    after = b.follow("scale-out-killed", reply_stored(2), last_event_id=before[-1].id)

    assert shows_the_reply_once(before + after)
    assert after[0].at - killed_at < 5
