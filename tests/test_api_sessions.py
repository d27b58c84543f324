"""The session's life through the REST API: messages, detail, end, and the reads."""

import uuid

import pytest
from rest_framework.test import APIClient

from chat.models import ChatMessage, ChatSession
from devtools.processes import free_port, wait_for
from tests.conftest import token_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice() -> APIClient:
    return token_client("alice")


@pytest.fixture
def bob() -> APIClient:
    return token_client("bob")


def start(api: APIClient, session_id: str) -> str:
    response = api.post("/api/sessions/", {"session_id": session_id}, format="json")
    assert response.status_code == 202, response.content
    return session_id


def post(api: APIClient, session_id: str, content: object):
    return api.post(f"/api/sessions/{session_id}/messages/", {"content": content}, format="json")


def test_start_three_messages_each_answered_detail_end_then_409(alice, worker):
    session_id = start(alice, "flow")

    posted = [post(alice, session_id, text) for text in ["hello", "how are you?", "bye"]]
    detail = wait_for(lambda: answered(alice, session_id), what="the three replies")

    assert [r.status_code for r in posted] == [201, 201, 201]
    assert [(r.json()["seq"], r.json()["reply_seq"], r.json()["content"]) for r in posted] == [
        (1, 2, "hello"),
        (3, 4, "how are you?"),
        (5, 6, "bye"),
    ]
    assert (detail["status"], detail["message_count"]) == ("active", 6)
    assert detail["live"]["status"] == "active"
    assert detail["live"]["started_at"] == detail["started_at"]  # the record carries the workflow's start
    assert (detail["live"]["message_count"], detail["live"]["writing_reply"]) == (6, None)
    assert detail["live"]["last_activity_at"] == detail["last_activity_at"]  # the last reply's
    assert detail["temporal_ui_url"].endswith("/workflows/chat-session-flow")

    ended = alice.post(f"/api/sessions/{session_id}/end/")

    assert ended.status_code == 200
    assert (ended.json()["status"], ended.json()["message_count"]) == ("ended", 6)
    after = post(alice, session_id, "anyone?")
    assert after.status_code == 409
    assert after.json() == {"detail": "Session 'flow' has ended. Start a new session to go on."}
    assert alice.post(f"/api/sessions/{session_id}/end/").status_code == 409
    session = wait_for(
        lambda: ChatSession.objects.filter(session_id=session_id, status="ended").first(), what="the end to be recorded"
    )
    assert session.ended_at.isoformat().replace("+00:00", "Z") == ended.json()["ended_at"]
    assert (session.message_count, session.ended_by, session.ended_at is not None) == (6, alice.user, True)
    listed = alice.get(f"/api/sessions/{session_id}/messages/").json()["results"]
    assert [(m["seq"], m["role"]) for m in listed] == [(n, "user" if n % 2 else "assistant") for n in range(1, 7)]
    assert [m["content"] for m in listed if m["role"] == "user"] == ["hello", "how are you?", "bye"]
    assert all(m["model"] == "demo" and m["status"] == "complete" for m in listed if m["role"] == "assistant")
    assert alice.get(f"/api/sessions/{session_id}/").json()["live"] is None


def answered(client, session_id: str) -> dict | None:
    """The session's detail once no reply is pending, else None."""
    detail = client.get(f"/api/sessions/{session_id}/").json()
    live = detail["live"]
    return (
        detail if live and live["replies_pending"] == 0 and detail["message_count"] == live["message_count"] else None
    )


def test_a_message_right_after_start_is_accepted_before_the_record_exists(alice, worker):
    # The record is written by the workflow's first activity; the API must not answer 404 meanwhile.
    session_id = start(alice, "eager")

    response = post(alice, session_id, "first words")

    assert response.status_code == 201
    assert response.json()["seq"] == 1


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        ("", "content: must not be empty."),
        ("   \n", "content: must not be empty."),
        ("x" * 4001, "content: must be at most 4000 characters."),
        (42, "content: must be a string."),
        (None, "content: This field may not be null."),
        ("nul\x00byte", "content: Null characters are not allowed."),
        ("lone \\ud800 surrogate", "content: must be valid Unicode text."),
    ],
)
def test_a_bad_message_answers_400_and_stores_nothing(alice, worker, content, detail):
    session_id = start(alice, f"bad-{uuid.uuid4().hex}")

    if isinstance(content, str) and "\\ud800" in content:  # JSON text: Python can't encode the string itself
        body = '{"content": "' + content + '"}'
        response = alice.post(f"/api/sessions/{session_id}/messages/", body, content_type="application/json")
    else:
        response = post(alice, session_id, content)

    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert not ChatMessage.objects.exists()


def test_a_message_with_unknown_fields_answers_400(alice, worker):
    session_id = start(alice, "extra")

    response = alice.post(f"/api/sessions/{session_id}/messages/", {"content": "hi", "seq": 9}, format="json")

    assert response.status_code == 400
    assert response.json()["detail"] == "Unknown fields: seq."


def test_unicode_and_control_characters_are_stored_as_sent(alice, worker):
    session_id = start(alice, "unicode")
    content = "héllo 👋 مرحبا\ttab\r\nnewline \u202e"

    response = post(alice, session_id, content)

    assert response.status_code == 201
    # The user's message, seq 1: the demo model's reply (seq 2) may be stored already.
    assert ChatMessage.objects.get(session__session_id=session_id, seq=1).content == content


def test_another_users_session_is_404_everywhere(alice, bob, worker):
    session_id = start(alice, "private")
    wait_for(lambda: ChatSession.objects.filter(session_id=session_id).exists(), what="the record")

    answers = [
        bob.get(f"/api/sessions/{session_id}/"),
        bob.get(f"/api/sessions/{session_id}/messages/"),
        post(bob, session_id, "let me in"),
        bob.post(f"/api/sessions/{session_id}/end/"),
    ]

    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert {a.json()["detail"] for a in answers} == {"Session 'private' not found."}
    assert ChatSession.objects.get(session_id=session_id).status == "active"
    assert not ChatMessage.objects.exists()


def test_another_users_fresh_session_is_404_before_its_record_exists(alice, bob, worker):
    session_id = start(alice, "fresh-private")

    assert post(bob, session_id, "let me in").status_code == 404


def test_an_unknown_session_is_404(alice, dev_server):
    assert alice.get("/api/sessions/nope/").status_code == 404
    assert post(alice, "nope", "hi").status_code == 404
    assert alice.post("/api/sessions/nope/end/").status_code == 404


def test_the_list_holds_only_the_callers_sessions_newest_first(alice, bob, worker):
    for session_id in ["a1", "a2"]:
        start(alice, session_id)
    start(bob, "b1")
    wait_for(lambda: ChatSession.objects.count() == 3, what="three records")

    page = alice.get("/api/sessions/").json()

    assert page["count"] == 2
    assert [s["session_id"] for s in page["results"]] == ["a2", "a1"]


def test_posting_while_temporal_is_unreachable_answers_503_and_stores_nothing(alice, worker, temporal_address):
    session_id = start(alice, "offline-post")
    wait_for(lambda: ChatSession.objects.filter(session_id=session_id).exists(), what="the record")
    temporal_address(f"127.0.0.1:{free_port()}")

    response = post(alice, session_id, "hello?")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "is unavailable" in response.json()["detail"]
    assert not ChatMessage.objects.exists()


def test_detail_while_temporal_is_unreachable_shows_the_record_without_live_state(alice, worker, temporal_address):
    session_id = start(alice, "offline-detail")
    wait_for(lambda: ChatSession.objects.filter(session_id=session_id).exists(), what="the record")
    temporal_address(f"127.0.0.1:{free_port()}")

    response = alice.get(f"/api/sessions/{session_id}/")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["live"]) == ("active", None)


def test_healthz_reports_each_dependency(client, dev_server, temporal_address):
    healthy = client.get("/healthz")
    assert healthy.status_code == 200
    assert healthy.json() == {"status": "ok", "database": "ok", "temporal": "ok"}

    temporal_address(f"127.0.0.1:{free_port()}")
    down = client.get("/healthz")

    assert down.status_code == 503
    assert (down.json()["status"], down.json()["database"]) == ("unavailable", "ok")
    assert down.json()["temporal"].startswith("unavailable: Temporal at 127.0.0.1:")


def test_the_schema_documents_every_status_of_the_contract(client):
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert statuses("/api/sessions/", "post") >= {"202", "400", "401", "409", "503"}
    assert statuses("/api/sessions/", "get") >= {"200", "401"}
    assert statuses("/api/sessions/{session_id}/", "get") >= {"200", "401", "404"}
    assert statuses("/api/sessions/{session_id}/messages/", "post") >= {"201", "400", "401", "404", "409", "503"}
    assert statuses("/api/sessions/{session_id}/messages/", "get") >= {"200", "401", "404"}
    assert statuses("/api/sessions/{session_id}/end/", "post") >= {"200", "401", "404", "409", "503"}


def test_the_docs_page_serves_its_assets_locally(client):
    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower()


def test_a_retried_post_with_the_same_client_message_id_is_stored_once(alice, worker):
    session_id = start(alice, "idempotent")
    body = {"content": "only once", "client_message_id": "c-1"}

    first = alice.post(f"/api/sessions/{session_id}/messages/", body, format="json")
    again = alice.post(f"/api/sessions/{session_id}/messages/", body, format="json")
    other = alice.post(f"/api/sessions/{session_id}/messages/", {**body, "client_message_id": "c-2"}, format="json")

    assert (first.status_code, again.status_code, other.status_code) == (201, 201, 201)
    assert again.json() == first.json()
    assert (first.json()["seq"], other.json()["seq"]) == (1, 3)
    assert list(ChatMessage.objects.filter(role="user").values_list("seq", flat=True).order_by("seq")) == [1, 3]


def test_a_post_to_a_fresh_session_whose_worker_is_not_up_answers_503_not_500(alice, dev_server, settings):
    settings.TEMPORAL_TASK_QUEUE = f"nobody-polls-{uuid.uuid4()}"  # no worker: the ownership query can't be answered
    settings.TEMPORAL_RPC_TIMEOUT = 1
    session_id = start(alice, "no-worker")

    response = post(alice, session_id, "hello?")

    assert response.status_code == 503
    assert "is unavailable" in response.json()["detail"]


def test_a_chat_is_titled_by_its_first_message_and_renamed_by_its_owner_only(alice, bob, worker):
    session_id = start(alice, "to-rename")
    post(alice, session_id, "  A first message\nthat runs over " + "many words " * 10)
    titled = wait_until_titled(alice, session_id)
    renamed = alice.patch(f"/api/sessions/{session_id}/", {"title": "  Pasta plans "}, format="json")
    listed = alice.get("/api/sessions/").json()["results"]
    refused = [
        alice.patch(f"/api/sessions/{session_id}/", body, format="json")
        for body in ({"title": ""}, {"title": "x" * 201}, {"title": 5}, {"name": "x"})
    ]
    intruder = bob.patch(f"/api/sessions/{session_id}/", {"title": "mine"}, format="json")
    unchanged = alice.patch(f"/api/sessions/{session_id}/", {}, format="json")
    alice.post(f"/api/sessions/{session_id}/end/")
    after_end = alice.patch(f"/api/sessions/{session_id}/", {"title": "Ended, renamed"}, format="json")

    assert titled == "A first message that runs over many words many words many w…"
    assert (renamed.status_code, renamed.json()["title"]) == (200, "Pasta plans")
    assert [s["title"] for s in listed if s["session_id"] == session_id] == ["Pasta plans"]
    assert [r.status_code for r in refused] == [400, 400, 400, 400]
    assert refused[0].json()["errors"]["title"] == ["must not be empty."]
    assert intruder.status_code == 404
    assert (unchanged.status_code, unchanged.json()["title"]) == (200, "Pasta plans")  # nothing to change
    assert (after_end.status_code, after_end.json()["title"]) == (200, "Ended, renamed")


def wait_until_titled(api: APIClient, session_id: str) -> str:
    return wait_for(lambda: api.get(f"/api/sessions/{session_id}/").json()["title"], timeout=10, what="a title")
