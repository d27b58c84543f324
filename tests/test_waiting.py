"""POST .../messages/?wait=true: the reply in the answer, waited for on the event log without holding a thread."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from chat.models import ChatMessage
from devtools.model_server import Hang
from tests.conftest import Chat, subscribed, token_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def another_user(chat: Chat, username: str) -> Chat:
    user = get_user_model().objects.create_user(username)
    return Chat(chat.url, Token.objects.create(user=user).key, chat.pid)


def hanging_waits(chat: Chat, count: int, pool: ThreadPoolExecutor) -> list:
    """`count` new sessions, each with a message posted with ?wait=true whose reply the model holds back."""
    ids = [f"slow-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    for session_id in ids:
        chat.start(session_id)
        subscribed(chat, session_id)
    return [pool.submit(chat.post, f"sessions/{session_id}/messages/", {"content": "take your time"}, wait="true")
            for session_id in ids]  # fmt: skip


def test_one_users_slow_waits_leave_the_api_free_for_another_user(web, assistant_model):
    # Fewer pool threads than waits: a wait that held a thread would leave none for anyone else.
    alice = web(WEB_CONCURRENCY="1", WEB_THREADS="2")
    bob = another_user(alice, "bob")
    assistant_model.script(*[Hang()] * 6)
    with ThreadPoolExecutor(6) as pool:
        try:
            waits = hanging_waits(alice, 6, pool)
            assistant_model.wait_until(lambda server: len(server.requests) == 6, timeout=30, what="6 turns asking")

            listed = bob.get("sessions/")
            bob.start(f"bobs-{uuid.uuid4().hex[:8]}")

            assert listed.status_code == 200, listed.text
            assert not any(wait.done() for wait in waits)
        finally:
            assistant_model.release()
        answers = [wait.result(60) for wait in waits]
    assert {(a.status_code, a.json()["role"], a.json()["reply_seq"]) for a in answers} == {(201, "assistant", None)}


def test_a_wait_answers_with_the_stored_reply_in_the_messages_json(web, assistant_model):
    chat = web()
    chat.start("one")
    subscribed(chat, "one")

    answered = chat.post("sessions/one/messages/", {"content": "hello"}, wait="true")

    stored = chat.get("sessions/one/messages/").json()["results"][1]
    assert answered.status_code == 201, answered.text
    assert answered.json() == {**stored, "reply_seq": None}


def test_waits_past_the_per_user_limit_answer_429_and_store_nothing(web, assistant_model):
    chat = web(WEB_CONCURRENCY="1", CHAT_REPLY_WAITS_PER_USER="2")
    assistant_model.script(Hang(), Hang())
    chat.start("third")
    subscribed(chat, "third")
    with ThreadPoolExecutor(2) as pool:
        try:
            waits = hanging_waits(chat, 2, pool)
            assistant_model.wait_until(lambda server: len(server.requests) == 2, timeout=30, what="2 turns asking")

            refused = chat.post("sessions/third/messages/", {"content": "and this?"}, wait="true")

            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["detail"].startswith("You are already waiting for 2 replies.")
            assert not ChatMessage.objects.filter(session__session_id="third").exists()
        finally:
            assistant_model.release()
        assert [wait.result(60).status_code for wait in waits] == [201, 201]


@pytest.mark.parametrize("query", ["wait=null", "wait=1", "wait=", "wait=true&wait=true", "wait=false&wait=null"])
def test_wait_is_true_or_false_once(query):
    client = token_client("carol")

    response = client.post(f"/api/sessions/nope/messages/?{query}", {"content": "hi"}, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["errors"]["wait"][0].startswith("must be true or false.")


def test_a_malformed_session_id_on_the_loop_door_answers_json_404(web):
    chat = web()

    waited = chat.post("sessions/not%20an%20id/messages/", {"content": "hi"}, wait="true")
    streamed = chat.get("sessions/not%20an%20id/events/")

    assert [(r.status_code, r.headers["content-type"]) for r in (waited, streamed)] == [(404, "application/json")] * 2
    assert "detail" in waited.json()
