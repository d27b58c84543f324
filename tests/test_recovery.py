"""A crashed worker's cost: how soon the sessions it held answer again, with the project's worker and web processes.

The bounds asserted here are the product's recovery guarantees (docs/reliability.md), measured from the moment the
restarted worker polls, or from the kill where another worker was already running.
"""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from chat.models import ChatMessage
from devtools.model_server import Hang, Reply
from devtools.processes import wait_for
from tests.conftest import SSE, TEST_MODEL, Chat, WorkerProcess, reply_stored, reply_text, subscribed
from tests.test_faults import database_write_lock

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
WORDS = " ".join(f"w{n}" for n in range(12))


@pytest.fixture
def model_env(assistant_model) -> dict[str, str]:
    """A worker process's environment for the scripted model server."""
    return {"CHAT_ASSISTANT_MODEL": TEST_MODEL, "OPENAI_BASE_URL": assistant_model.url, "OPENAI_API_KEY": "test-key"}


def mid_reply(chat: Chat, assistant_model, session_id: str, replies: int = 1) -> list[SSE]:
    """Starts a session whose first reply hangs after five words; the model's next `replies` answers (the retried
    attempt's among them) write the same words. Returns the session's events up to those five words."""
    # Slow enough that a client following the retried attempt sees its reset before the stored reply compacts it.
    assistant_model.script(Hang(after_chunks=5, text=WORDS), *[Reply(WORDS, chunk_delay=0.03)] * replies)
    chat.start(session_id)
    subscribed(chat, session_id)
    chat.say(session_id, "go on")
    return chat.follow(session_id, lambda events: reply_text(events, 2).split() == WORDS.split()[:5])


def resets(events: list[SSE]) -> list[dict]:
    return [e.data for e in events if e.type == "reset"]


def test_a_killed_and_restarted_worker_answers_every_session_it_held_within_3_seconds_with_no_503(
    web, assistant_model, model_env, dev_server, tmp_path
):
    queue = f"test-{uuid.uuid4()}"
    first = WorkerProcess(dev_server.address, log=tmp_path / "first.log", task_queue=queue, **model_env)
    chat = web(TEMPORAL_TASK_QUEUE=queue)
    idle = ["idle-1", "idle-2", "storing"]
    for session_id in idle:
        chat.start(session_id, content="hello")
    wait_for(lambda: ChatMessage.objects.filter(role="assistant").count() == len(idle), what="the first replies")
    # The idle sessions' next replies may reach the model before the retried attempt does.
    before = mid_reply(chat, assistant_model, "writing", replies=len(idle) + 1)
    held = [*idle, "writing"]
    pool = ThreadPoolExecutor(len(held) + 2)
    # One session's message is being stored when the worker dies (its write waits on the lock).
    with database_write_lock():
        in_flight = pool.submit(chat.post, "sessions/storing/messages/", {"content": "in flight"})
        wait_for(lambda: "store_message session_id=storing seq=3" in first.output(), what="the write in flight")
        first.kill()
    following = pool.submit(chat.follow, "writing", reply_stored(2), before[-1].id)
    second = WorkerProcess(dev_server.address, log=tmp_path / "second.log", task_queue=queue, **model_env)
    try:
        second.wait_ready()
        restarted = time.monotonic()

        def post(session_id: str) -> tuple[int, float]:
            response = chat.post(f"sessions/{session_id}/messages/", {"content": "still there?"})
            return response.status_code, time.monotonic() - restarted

        answers = dict(zip(held, pool.map(post, held), strict=True))
        after = following.result()
        in_flight.result()
    finally:
        pool.shutdown()
        assert second.terminate() == 0

    assert {session_id: status for session_id, (status, _) in answers.items()} == dict.fromkeys(held, 201)
    slow = {session_id: f"{seconds:.2f}s" for session_id, (_, seconds) in answers.items() if seconds >= 3.0}
    assert not slow, f"answered later than 3 s after the restart: {slow}"
    assert resets(before + after) == [{"turn": 2, "attempt": 2}]
    assert after[-1].data["content"] == WORDS


def test_two_workers_one_killed_mid_reply_the_other_completes_it_within_5_seconds_after_one_reset(
    web, assistant_model, model_env, dev_server, tmp_path
):
    queue = f"test-{uuid.uuid4()}"
    workers = [
        WorkerProcess(dev_server.address, log=tmp_path / f"worker-{n}.log", task_queue=queue, **model_env)
        for n in (1, 2)
    ]
    chat_pool = ThreadPoolExecutor(1)
    try:
        for worker in workers:
            worker.wait_ready()
        # The server notices a missed heartbeat up to a second late and retries a second after: within 5 s of the
        # kill, the turn's heartbeat timeout can be 2 s at most.
        chat = web(TEMPORAL_TASK_QUEUE=queue, CHAT_TURN_HEARTBEAT_TIMEOUT="2")
        before = mid_reply(chat, assistant_model, "shared")
        started = "model step session_id=shared reply_seq=2 step=0 attempt=1"
        killed = next(worker for worker in workers if started in worker.output())
        survivor = next(worker for worker in workers if worker is not killed)
        killed.kill()
        killed_at = time.monotonic()
        following = chat_pool.submit(chat.follow, "shared", reply_stored(2), before[-1].id)
        posted = chat.post("sessions/shared/messages/", {"content": "still there?"})
        posted_in = time.monotonic() - killed_at
        after = following.result()
    finally:
        chat_pool.shutdown()
        for worker in workers:
            if worker.process.poll() is None:
                assert worker.terminate() == 0

    assert (posted.status_code, posted.json()["seq"]) == (201, 3)
    assert posted_in < 3.0
    assert after[-1].at - killed_at < 5.0
    assert resets(before + after) == [{"turn": 2, "attempt": 2}]
    assert after[-1].data["content"] == WORDS
    assert "model step session_id=shared reply_seq=2 step=0 attempt=2" in survivor.output()
    assert list(ChatMessage.objects.filter(seq=2).values_list("role", "content")) == [("assistant", WORDS)]
