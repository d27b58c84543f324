import asyncio
import dataclasses
import threading

import pytest
from django.contrib.auth import get_user_model
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from chat.activities import log_session_start
from chat.events import get_event_log, publisher
from chat.models import ChatSession
from chat.types import Turn
from temporal_integration.connections import in_thread
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)  # activities run in autocommit, outside any test transaction


@pytest.fixture
def user():
    return get_user_model().objects.create_user("alice")


def test_log_session_start_writes_one_record_and_confirms(user):
    confirmation = ActivityEnvironment().run(log_session_start, str(user.pk), "s-1")

    assert confirmation == f"session s-1 started for user {user.pk}"
    session = ChatSession.objects.get()
    assert (session.session_id, session.user, session.status) == ("s-1", user, ChatSession.Status.ACTIVE)
    assert session.workflow_id == "test"  # ActivityEnvironment's default workflow info
    assert session.started_at is not None
    assert session.ended_at is None


def test_a_retried_log_session_start_keeps_one_record(user):
    env = ActivityEnvironment()
    env.run(log_session_start, str(user.pk), "s-1")
    first = ChatSession.objects.get()

    env.info = dataclasses.replace(env.info, attempt=2)
    env.run(log_session_start, str(user.pk), "s-1")

    assert ChatSession.objects.count() == 1
    assert ChatSession.objects.get().started_at == first.started_at


def test_log_session_start_for_an_unknown_user_fails_without_retry():
    with pytest.raises(ApplicationError, match="user 999 does not exist") as failure:
        ActivityEnvironment().run(log_session_start, "999", "s-1")

    assert failure.value.non_retryable
    assert not ChatSession.objects.exists()


def test_a_replys_first_words_reach_the_event_log_at_once_and_the_rest_in_batches(user, monkeypatch):
    """The first words are what a reader waits for (time to the first token); later ones wait for the next flush."""
    monkeypatch.setattr(publisher, "FLUSH_SECONDS", 60.0)  # a flush on the clock would not come within the test
    ChatSession.objects.create(session_id="s-1", user=user, workflow_id="wf", run_id="run")
    log = get_event_log()

    async def write_a_reply() -> list[list[str]]:
        stream = publisher.ReplyStream(Turn("s-1", 1, 2), attempt=1)
        await stream.start()
        stream.write("Hello")
        seen = [await wait_until(lambda: in_thread(deltas), bool, within=5)]
        stream.write(" world")
        stream.write("!")
        seen.append(await in_thread(deltas))
        await stream.close()
        seen.append(await in_thread(deltas))
        return seen

    def deltas() -> list[str]:
        return [event.data["text"] for event in log.read("s-1") if event.type == "delta"]

    first, meanwhile, closed = asyncio.run(ActivityEnvironment().run(write_a_reply))

    assert first == ["Hello"]
    assert meanwhile == ["Hello"]  # batched: not yet flushed
    assert closed == ["Hello", " world!"]


def test_a_reply_heartbeats_while_its_appends_wait(user, monkeypatch):
    """A turn is alive while the database is slow: its heartbeats do not wait for its appends (under 100 turns at
    once they waited longer than the heartbeat timeout, and the server retried turns that were alive)."""
    ChatSession.objects.create(session_id="s-1", user=user, workflow_id="wf", run_id="run")
    log = get_event_log()
    append = log.append
    released = threading.Event()

    def slow_append(*args: object, **kwargs: object) -> list[str]:
        released.wait(10)
        return append(*args, **kwargs)

    monkeypatch.setattr(log, "append", slow_append)
    env = ActivityEnvironment()
    beats: list[tuple] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    async def write_while_the_log_is_slow() -> int:
        stream = publisher.ReplyStream(Turn("s-1", 1, 2), attempt=1)
        await stream.start()
        stream.write("Hello")  # its append waits for `released`
        during = await wait_until(lambda: asyncio.sleep(0, len(beats)), lambda n: n >= 3, within=5)
        released.set()
        await stream.close()
        return during

    assert asyncio.run(env.run(write_while_the_log_is_slow)) >= 3
    assert [event.data["text"] for event in log.read("s-1") if event.type == "delta"] == ["Hello"]
