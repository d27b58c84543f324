"""The assistant's turn end to end: the API under the Procfile's web server, the project's worker, the project's
database, and a real local OpenAI-compatible server (devtools/model_server.py) that streams and fails as scripted.

Clients follow replies on the session's event stream (SSE) over real HTTP.
"""

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import httpx
import psutil
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from temporalio.client import Client

from chat import selectors
from chat.models import ChatMessage
from devtools.model_server import DropAfter, Fail, Hang, Reply
from devtools.processes import DevServer, free_port, wait_for
from tests.conftest import TEST_MODEL, Chat, WorkerProcess, reply_stored, reply_text, subscribed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def test_a_message_is_answered_by_the_model_and_the_reply_streams_as_it_is_written(web, assistant_model):
    chat = web()
    assistant_model.script(Reply("alpha beta gamma delta epsilon zeta", chunk_delay=0.15))
    chat.start("s1")
    subscribed(chat, "s1")
    following = chat.follow_in_background("s1", reply_stored(2))

    posted = chat.say("s1", "hello there")
    events = following.result(60)

    assert (posted["seq"], posted["reply_seq"]) == (1, 2)
    assert next(e.type for e in events) == "message"
    assert events[0].data["content"] == "hello there"
    deltas = [e for e in events if e.type == "delta"]
    assert len(deltas) >= 3  # written in steps, not all at once
    assert deltas[-1].at - deltas[0].at > 0.3
    final = events[-1].data
    assert (final["role"], final["content"], final["status"]) == (
        "assistant",
        "alpha beta gamma delta epsilon zeta",
        "complete",
    )
    assert reply_text(events, 2) == final["content"]
    stored = ChatMessage.objects.get(seq=2)
    assert (stored.model, stored.tokens_in > 0, stored.tokens_out) == ("test-model", True, 6)
    request = assistant_model.requests[0]
    assert (request.model, request.last_user_text, request.stream) == ("test-model", "hello there", True)
    assert len({e.id for e in events}) == len(events)


def test_a_message_event_carries_the_same_json_as_the_messages_endpoint(web, assistant_model):
    chat = web()
    chat.start("wire")
    subscribed(chat, "wire")

    chat.say("wire", "hello")
    events = chat.follow("wire", reply_stored(2))
    listed = chat.get("sessions/wire/messages/").json()["results"]

    streamed = {e.data["seq"]: e.data for e in events if e.type == "message"}
    assert streamed == {message["seq"]: message for message in listed}
    assert [message["role"] for message in listed] == ["user", "assistant"]


def test_the_first_message_rides_on_the_start_and_wait_true_answers_with_the_reply(web, assistant_model):
    chat = web()
    started = chat.start("s2", content="first words").json()

    answered = chat.post("sessions/s2/messages/", {"content": "and then?"}, wait="true")

    assert (started["message"]["seq"], started["message"]["reply_seq"]) == (1, 2)
    assert answered.status_code == 201
    assert (answered.json()["seq"], answered.json()["role"]) == (4, "assistant")
    assert answered.json()["content"] == "You said: and then?"
    messages = chat.get("sessions/s2/messages/").json()["results"]
    assert [(m["seq"], m["role"]) for m in messages] == [(1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]
    # The second turn's model call saw the first exchange.
    assert [m["role"] for m in assistant_model.requests[1].messages][-3:] == ["user", "assistant", "user"]


def test_a_500_then_success_resets_the_reply_and_stores_one_attempts_text(web, assistant_model):
    chat = web()
    assistant_model.script(DropAfter(3, text="wrong words that vanish", chunk_delay=0.1), Reply("right answer"))
    chat.start("s3")
    subscribed(chat, "s3")
    following = chat.follow_in_background("s3", reply_stored(2))

    chat.say("s3", "question")
    events = following.result(60)

    types = [e.type for e in events]
    assert "reset" in types
    first_reset = types.index("reset")
    assert any(e.type == "delta" and e.data["attempt"] == 1 for e in events[:first_reset])  # text that was dropped
    assert events[first_reset].data == {"turn": 2, "attempt": 2}
    assert reply_text(events, 2) == "right answer" == events[-1].data["content"]
    assert list(ChatMessage.objects.filter(role="assistant").values_list("content", flat=True)) == ["right answer"]


def test_a_provider_500_is_retried_after_a_reset(web, assistant_model):
    chat = web()
    assistant_model.script(Fail(500))
    chat.start("s3b")
    subscribed(chat, "s3b")
    following = chat.follow_in_background("s3b", reply_stored(2))

    chat.say("s3b", "question")
    events = following.result(60)

    assert [e.type for e in events if e.type in ("reset", "message")] == ["message", "reset", "message"]
    assert events[-1].data["content"] == "You said: question"
    assert assistant_model.outcomes == ["failed", "completed"]


def test_a_provider_429_is_retried_after_its_retry_after(web, assistant_model):
    chat = web()
    assistant_model.script(Fail(429, retry_after=3))
    chat.start("s4")

    chat.say("s4", "busy?")
    assistant_model.wait_for_requests(1, timeout=30)
    refused_at = time.monotonic()
    assistant_model.wait_for_requests(2, timeout=30)
    retried_after = time.monotonic() - refused_at

    assert retried_after >= 2.5  # Retry-After's 3 s, not the retry policy's 1 s (less the polling's slack)
    wait_for(lambda: ChatMessage.objects.filter(seq=2, status="complete").exists(), what="the reply")


def test_a_provider_down_past_the_retries_fails_the_turn_and_the_next_message_is_answered(web, assistant_model):
    chat = web(CHAT_TURN_ATTEMPTS="2")
    assistant_model.script(Fail(500), Fail(500))
    chat.start("s5")
    subscribed(chat, "s5")
    following = chat.follow_in_background("s5", lambda events: any(e.type == "turn_failed" for e in events))

    chat.say("s5", "are you there?")
    events = following.result(60)
    answered = chat.post("sessions/s5/messages/", {"content": "now?"}, wait="true")

    failed = next(e for e in events if e.type == "turn_failed")
    assert failed.data["turn"] == 2
    assert ChatMessage.objects.get(seq=1).content == "are you there?"  # the user's message is kept
    assert ChatMessage.objects.get(seq=2).status == "failed"
    assert (answered.status_code, answered.json()["content"]) == (201, "You said: now?")
    # The next turn's context still holds the earlier question, and not the failed reply.
    assert [m["content"] for m in assistant_model.requests[-1].messages if m["role"] != "system"] == [
        "are you there?",
        "now?",
    ]


def test_stop_keeps_what_was_written_and_the_session_stays_open(web, assistant_model):
    chat = web()
    assistant_model.script(Reply(" ".join(f"w{n}" for n in range(200)), chunk_delay=0.1))
    chat.start("s6")
    subscribed(chat, "s6")
    chat.say("s6", "talk")
    chat.follow("s6", lambda events: sum(e.type == "delta" for e in events) >= 2)

    stopped = chat.post("sessions/s6/stop/")
    stored = wait_for(lambda: ChatMessage.objects.filter(seq=2).first(), what="the stopped reply")
    events = chat.follow("s6", reply_stored(2))
    again = chat.post("sessions/s6/stop/")

    assert (stopped.status_code, stopped.json()) == (200, {"stopped": True})
    assert stored.status == "stopped"
    assert stored.content.startswith("w0 w1")
    assert len(stored.content.split()) < 200
    assert reply_text(events, 2) == stored.content
    assert again.json() == {"stopped": False}
    assert chat.post("sessions/s6/messages/", {"content": "short one"}, wait="true").json()["seq"] == 4


def test_a_client_that_reconnects_mid_reply_with_last_event_id_misses_nothing_and_sees_nothing_twice(
    web, assistant_model
):
    chat = web()
    assistant_model.script(Reply(" ".join(f"w{n}" for n in range(30)), chunk_delay=0.05))
    chat.start("s7")
    subscribed(chat, "s7")
    chat.say("s7", "count")

    before = chat.follow("s7", lambda events: sum(e.type == "delta" for e in events) >= 3)
    after = chat.follow("s7", reply_stored(2), last_event_id=before[-1].id)

    ids = [e.id for e in before + after]
    assert len(ids) == len(set(ids))
    reply = " ".join(f"w{n}" for n in range(30))
    assert after[-1].data["content"] == reply
    # In order and with no gap; once the reply is stored its deltas are compacted, and its message carries the rest.
    assert reply.startswith(reply_text(before + after, 2))


def test_another_users_event_stream_is_404_and_a_bad_last_event_id_is_400(web):
    alice = web()
    alice.start("s8")
    subscribed(alice, "s8")
    user = get_user_model().objects.create_user("bob")
    bob = Chat(alice.url, Token.objects.create(user=user).key, alice.pid)

    other = httpx.get(f"{alice.url}/api/sessions/s8/events/", headers=bob.headers(), timeout=10)
    anonymous = httpx.get(f"{alice.url}/api/sessions/s8/events/", timeout=10)
    bad = httpx.get(f"{alice.url}/api/sessions/s8/events/", headers=alice.headers(**{"Last-Event-ID": "x"}), timeout=10)

    assert (other.status_code, other.json()) == (404, {"detail": "Session 's8' not found."})
    assert anonymous.status_code == 401
    assert bad.status_code == 400
    assert "Last-Event-ID" in bad.json()["detail"]


def test_over_the_daily_token_budget_a_message_answers_429_before_any_model_call(web, assistant_model):
    chat = web(CHAT_USER_DAILY_TOKENS="5")
    chat.start("s9")
    chat.post("sessions/s9/messages/", {"content": "spend it"}, wait="true")

    refused = chat.post("sessions/s9/messages/", {"content": "more"})

    assert refused.status_code == 429
    assert (
        refused.json()["detail"] == "You have used today's 5 tokens of assistant replies. Try again after midnight UTC."
    )
    assert int(refused.headers["Retry-After"]) > 0
    assert len(assistant_model.requests) == 1
    assert not ChatMessage.objects.filter(content="more").exists()


def test_the_session_ended_event_closes_the_stream(web):
    chat = web()
    chat.start("s10")
    subscribed(chat, "s10")
    following = chat.follow_in_background("s10", lambda events: False)  # until the server ends the stream

    assert chat.post("sessions/s10/end/").status_code == 200
    events = following.result(30)

    assert events[-1].type == "session_ended"
    assert events[-1].data["status"] == "ended"


def test_two_clients_on_one_session_see_the_same_events(web, assistant_model):
    chat = web()
    chat.start("s11")
    subscribed(chat, "s11")
    chat.say("s11", "to both")

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: chat.follow("s11", reply_stored(2)), range(2))

    assert [e.type for e in first][:2] == ["message", "delta"]
    assert [e.id for e in first] == [e.id for e in second]


LONG_REPLY = " ".join(f"word{n:04d}" for n in range(440))  # 3,959 characters


def history_bytes(dev_server, workflow_id: str) -> list[tuple[int, int]]:
    """(history bytes, messages posted) of each run of a session's workflow, first to last."""

    async def measure() -> list[tuple[int, int]]:
        client = await Client.connect(dev_server.address)
        runs = [run async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        sizes = []
        for run in sorted(runs, key=lambda run: run.start_time):
            history = await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
            posts = sum(e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events)
            sizes.append((sum(e.ByteSize() for e in history.events), posts))
        return sizes

    return asyncio.run(measure())


def test_a_long_session_continues_as_new_mid_conversation_with_the_right_context_and_flat_history(
    web, assistant_model, dev_server, settings
):
    settings.CHAT_ASSISTANT_CONTEXT_CHARS = 100_000  # the whole conversation fits: the context must be all of it
    chat = web(CHAT_MAX_MESSAGES_PER_RUN="3")
    assistant_model.script(*[Reply(LONG_REPLY, chunk_delay=0)] * 9)
    chat.start("long")

    for n in range(9):
        reply = chat.post("sessions/long/messages/", {"content": f"question {n}"}, wait="true")
        assert (reply.status_code, reply.json()["seq"]) == (201, 2 * n + 2), reply.text

    stored = list(ChatMessage.objects.order_by("seq").values_list("seq", "role", "content"))
    assert [seq for seq, _, _ in stored] == list(range(1, 19))
    assert [role for _, role, _ in stored] == ["user", "assistant"] * 9
    assert all(content == LONG_REPLY for _, role, content in stored if role == "assistant")
    # The turn after the last continue-as-new saw the whole conversation, in order, once.
    last_context = [(m["role"], m["content"]) for m in assistant_model.requests[-1].messages if m["role"] != "system"]
    assert last_context == [(role, content) for _, role, content in stored[:-1]]
    runs = history_bytes(dev_server, "chat-session-long")
    assert len(runs) >= 3
    per_turn = [size / posts for size, posts in runs if posts]
    # The replies' text never enters the history: a turn costs the same at the start and after 8 turns of 4,000
    # characters each (the first run also holds the session's start).
    assert per_turn[-1] <= per_turn[0] * 1.1, runs
    assert max(size for size, _ in runs) < 30_000, runs


def test_turns_waiting_on_the_model_leave_room_to_store_more_messages(web, assistant_model):
    chat = web()
    waiting = 25  # more turns than the worker has database activity threads (20)
    assistant_model.script(*[Hang()] * waiting)
    try:
        for n in range(waiting):
            chat.start(f"busy{n}", content="think it over")
        # Each turn holds an activity slot while it waits: with a slot per thread, 20 would wait and 5 queue.
        assistant_model.wait_until(lambda server: len(server.requests) == waiting, timeout=30, what="25 turns asking")
        response = chat.post("sessions/", {"session_id": "one-more", "content": "and me?"})
        assert (response.status_code, response.json()["message"]["seq"]) == (202, 1), response.text
    finally:
        assistant_model.release()
    assert ChatMessage.objects.filter(session__session_id="one-more", seq=1, role="user").exists()


def test_open_event_streams_hold_no_thread_each(web):
    chat = web()
    chat.start("crowd", content="hello")
    subscribed(chat, "crowd")
    server = psutil.Process(chat.pid)

    def threads() -> int:
        return sum(process.num_threads() for process in [server, *server.children(recursive=True)])

    async def hold(n: int) -> int:
        # aiohttp, which keeps each response's connection open while it is read (as a browser's EventSource does)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(chat.url, connector=connector, headers=chat.headers()) as http:
            streams = []
            for _ in range(n):
                streams.append(response := await http.get("/api/sessions/crowd/events/"))
                assert response.status == 200
                async for line in response.content:  # to its first event: subscribed, its backlog read
                    if line.startswith(b"event: message"):
                        break
            return threads()

    before = threads()
    during = asyncio.run(hold(60))
    # Django's ASGI handler kept a thread for each open stream (+60); what grows now is the processes' shared pools.
    assert during - before < 30, (before, during)


def test_a_worker_killed_mid_reply_is_replaced_and_the_stream_resumes_with_a_reset_within_5_seconds(
    web, assistant_model, dev_server, tmp_path
):
    queue = f"test-{uuid.uuid4()}"
    model = {"CHAT_ASSISTANT_MODEL": TEST_MODEL, "OPENAI_BASE_URL": assistant_model.url, "OPENAI_API_KEY": "test-key"}
    first = WorkerProcess(dev_server.address, log=tmp_path / "first.log", task_queue=queue, **model)
    chat = web(TEMPORAL_TASK_QUEUE=queue)
    words = " ".join(f"w{n}" for n in range(40))
    # The first attempt stops after 5 words and hangs: it is mid-reply whenever the second worker is ready (a reply
    # that merely ran slowly could finish first on a loaded machine: seen in CI).
    assistant_model.script(Hang(after_chunks=5, text=words), Reply(words, chunk_delay=0.02))
    chat.start("killed")
    subscribed(chat, "killed")
    chat.say("killed", "go on")
    # The five words may come as two to five deltas (the stream batches what was written between flushes).
    before = chat.follow("killed", lambda events: reply_text(events, 2).split() == words.split()[:5])
    second = WorkerProcess(dev_server.address, log=tmp_path / "second.log", task_queue=queue, **model)
    try:
        wait_for(lambda: "worker polling task queue" in second.output(), what="the second worker")
        first.kill()
        killed_at = time.monotonic()
        after = chat.follow("killed", reply_stored(2), last_event_id=before[-1].id)
    finally:
        assert second.terminate() == 0

    reset = next(e for e in after if e.type == "reset")
    assert reset.data == {"turn": 2, "attempt": 2}
    assert reset.at - killed_at < 5.0
    assert reply_text(before + after, 2) == words == after[-1].data["content"]
    assert list(ChatMessage.objects.filter(role="assistant").values_list("seq", "content")) == [(2, words)]
    assert "model step session_id=killed reply_seq=2 step=0 attempt=2" in second.output()


@pytest.mark.temporal  # restarts a dev server of its own
def test_temporal_restarted_mid_reply_the_reply_completes_once_and_the_session_goes_on(web, assistant_model, tmp_path):
    port = free_port()
    server = DevServer(port=port, db_filename=str(tmp_path / "temporal.db")).wait_ready()
    queue = f"test-{uuid.uuid4()}"
    model = {"CHAT_ASSISTANT_MODEL": TEST_MODEL, "OPENAI_BASE_URL": assistant_model.url, "OPENAI_API_KEY": "test-key"}
    worker = WorkerProcess(server.address, log=tmp_path / "worker.log", task_queue=queue, **model)
    chat = web(TEMPORAL_ADDRESS=server.address, TEMPORAL_TASK_QUEUE=queue)
    words = " ".join(f"w{n}" for n in range(40))
    assistant_model.script(Reply(words, chunk_delay=0.1), Reply(words, chunk_delay=0.02))
    try:
        chat.start("restarted")
        subscribed(chat, "restarted")
        chat.say("restarted", "keep going")
        before = chat.follow("restarted", lambda events: sum(e.type == "delta" for e in events) >= 3)
        server.process.kill()
        server.process.wait()
        server = DevServer(port=port, db_filename=str(tmp_path / "temporal.db")).wait_ready()
        after = chat.follow("restarted", reply_stored(2), last_event_id=before[-1].id, within=90)
        answered = chat.post("sessions/restarted/messages/", {"content": "still there?"}, wait="true")
    finally:
        assert worker.terminate() == 0
        server.stop()

    assert reply_text(before + after, 2) == words == after[-1].data["content"]
    assert list(ChatMessage.objects.filter(role="assistant", seq=2).values_list("status", flat=True)) == ["complete"]
    assert (answered.status_code, answered.json()["seq"]) == (201, 4)


def test_regenerate_answers_the_last_message_again_and_keeps_the_old_reply_marked_replaced(web, assistant_model):
    chat = web()
    # The new reply stops after its first word until released: it is being written for as long as the test needs.
    assistant_model.script(Reply("first answer"), Hang(after_chunks=1, text="second answer"))
    chat.start("regen-1", content="a question")
    subscribed(chat, "regen-1")
    chat.follow("regen-1", reply_stored(2))

    regenerated = chat.post("sessions/regen-1/regenerate/")
    busy = chat.post("sessions/regen-1/regenerate/")  # the new reply is being written
    # A page loaded now follows the stream from where it carries all of the new reply (its first words included).
    page = selectors.session_conversation(user=Token.objects.get(key=chat.token).user, session_id="regen-1")
    assistant_model.release()
    events = chat.follow("regen-1", reply_stored(3), last_event_id=page.after)
    then = chat.post("sessions/regen-1/messages/", {"content": "and then?"}, wait="true")
    listed = chat.get("sessions/regen-1/messages/").json()["results"]

    assert (regenerated.status_code, regenerated.json()) == (202, {"reply_seq": 3, "replaces": 2})
    assert busy.status_code == 409
    assert [(e.data["seq"], e.data["status"]) for e in events if e.type == "message"][-2:] == [
        (2, "replaced"),
        (3, "complete"),
    ]
    assert reply_text(events, 3) == "second answer"
    assert [(m["seq"], m["role"], m["content"], m["status"]) for m in listed[:3]] == [
        (1, "user", "a question", "complete"),
        (2, "assistant", "first answer", "replaced"),
        (3, "assistant", "second answer", "complete"),
    ]
    asked_again, asked_next = assistant_model.requests[1], assistant_model.requests[2]
    assert asked_again.last_user_text == "a question"
    assert "first answer" not in str(asked_again.messages)  # the model answers afresh
    assert "first answer" not in str(asked_next.messages)  # and never sees the replaced reply again
    assert "second answer" in str(asked_next.messages)
    assert (then.status_code, then.json()["seq"]) == (201, 5)
