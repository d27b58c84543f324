import json
import sys
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.urls import resolve
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from chat.models import ChatSession
from chat.types import EventType
from devtools.processes import free_port, wait_for
from temporal_integration.conf import temporal_settings
from tests.conftest import temporal_cli

URL = "/api/sessions/"
pytestmark = pytest.mark.django_db(transaction=True)  # the worker's activity threads see only committed rows


@pytest.fixture
def user():
    return get_user_model().objects.create_user("alice", password="pw")


@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def describe(workflow_id: str, address: str) -> dict | None:
    result = temporal_cli("workflow", "describe", "-w", workflow_id, "-o", "json", address=address)
    return json.loads(result.stdout) if result.returncode == 0 else None


def status_of(workflow_id: str, address: str) -> str | None:
    described = describe(workflow_id, address)
    return described and described["workflowExecutionInfo"]["status"].removeprefix("WORKFLOW_EXECUTION_STATUS_")


def test_start_answers_202_and_the_workflow_writes_the_record(api, user, worker, dev_server, settings):
    response = api.post(URL, {"session_id": "chat-1"}, format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["session_id"] == "chat-1"
    assert body["user_id"] == str(user.pk)
    assert body["workflow_id"] == "chat-session-chat-1"
    assert body["status"] == "active"
    assert body["temporal_ui_url"] == (
        f"{temporal_settings.TEMPORAL_UI_URL}/namespaces/default/workflows/chat-session-chat-1"
    )
    assert wait_for(lambda: status_of("chat-session-chat-1", dev_server.address) == "RUNNING", what="the workflow")
    described = describe("chat-session-chat-1", dev_server.address)
    assert described["workflowExecutionInfo"]["type"]["name"] == "ChatSessionWorkflow"
    assert described["workflowExecutionInfo"]["execution"]["runId"] == body["run_id"]

    session = wait_for(lambda: ChatSession.objects.filter(session_id="chat-1").first(), what="the session record")
    assert (session.user, session.workflow_id, session.run_id) == (user, "chat-session-chat-1", body["run_id"])


def test_start_without_session_id_generates_one(api, worker, dev_server):
    response = api.post(URL, {}, format="json")

    assert response.status_code == 202
    session_id = response.json()["session_id"]
    assert len(session_id) == 32
    wait_for(lambda: ChatSession.objects.filter(session_id=session_id).exists(), what="the session record")


def test_the_admin_lists_the_session_to_staff(api, worker, client):
    session_id = api.post(URL, {}, format="json").json()["session_id"]
    wait_for(lambda: ChatSession.objects.filter(session_id=session_id).exists(), what="the session record")
    staff = get_user_model().objects.create_user("staff", password="pw", is_staff=True, is_superuser=True)
    client.force_login(staff)

    page = client.get("/admin/chat/chatsession/")

    assert page.status_code == 200
    html = page.content.decode()
    assert session_id in html
    assert f'/workflows/chat-session-{session_id}"' in html  # the link into the Temporal Web UI


def test_the_admin_refuses_non_staff(client, user):
    client.force_login(user)

    assert client.get("/admin/chat/chatsession/").status_code == 302


def test_start_without_credentials_answers_401():
    response = APIClient().post(URL, {}, format="json")

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_start_with_a_wrong_token_answers_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")

    assert client.post(URL, {}, format="json").status_code == 401


def test_a_token_is_read_with_its_user_in_one_query_and_stops_working_once_revoked_or_its_user_deactivated(
    user, api, django_assert_num_queries
):
    with django_assert_num_queries(2):  # the token with its user, then the empty page's count
        listed = api.get(URL)
    assert listed.status_code == 200, listed.content

    user.is_active = False
    user.save()
    deactivated = api.get(URL)
    user.is_active = True
    user.save()
    Token.objects.filter(user=user).delete()
    revoked = api.get(URL)

    assert (deactivated.status_code, deactivated.json()) == (401, {"detail": "User inactive or deleted."})
    assert (revoked.status_code, revoked.json()) == (401, {"detail": "Invalid token."})


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ('{"session_id": "has space"}', "session_id: must be 1 to 64 letters, digits, '_' or '-'."),
        ('{"session_id": "../etc"}', "session_id: must be 1 to 64 letters, digits, '_' or '-'."),
        ('{"session_id": "x' + "y" * 64 + '"}', "session_id: must be 1 to 64 letters, digits, '_' or '-'."),
        ('{"session_id": ""}', "session_id: must be 1 to 64 letters, digits, '_' or '-'."),
        ('{"session_id": 5}', "session_id: must be a string."),
        ('{"session_id": null}', "session_id: This field may not be null."),
        ('{"session_id": "ok", "user_id": "2"}', "Unknown fields: user_id."),
        ("[1, 2]", "Invalid data. Expected a dictionary, but got list."),
        ('{"session_id": ', "JSON parse error - Expecting value: line 1 column 16 (char 15)"),
    ],
)
def test_bad_input_answers_400_with_a_detail_and_starts_nothing(api, dev_server, body, detail):
    response = api.post(URL, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert not ChatSession.objects.exists()
    assert status_of("chat-session-ok", dev_server.address) is None


def test_a_form_body_answers_415(api):
    response = api.post(URL, "session_id=a", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert "detail" in response.json()


def test_starting_a_session_id_twice_answers_409(api, worker):
    assert api.post(URL, {"session_id": "twice"}, format="json").status_code == 202

    response = api.post(URL, {"session_id": "twice"}, format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": "Session 'twice' already exists. Choose another session_id, or omit it."}


def test_a_session_id_whose_workflow_closed_answers_409_even_without_its_record(api, worker, dev_server):
    assert api.post(URL, {"session_id": "closed"}, format="json").status_code == 202
    wait_for(lambda: api.post(f"{URL}closed/end/").status_code == 200, what="the session to end")
    wait_for(lambda: status_of("chat-session-closed", dev_server.address) == "COMPLETED", what="completion")
    ChatSession.objects.filter(session_id="closed").delete()

    response = api.post(URL, {"session_id": "closed"}, format="json")

    assert response.status_code == 409


def test_start_while_temporal_is_unreachable_answers_503(api, temporal_address):
    temporal_address(f"127.0.0.1:{free_port()}")

    response = api.post(URL, {"session_id": "offline"}, format="json")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["detail"].startswith("Temporal at 127.0.0.1:")
    assert response.json()["detail"].endswith("is unavailable (Failed client connect). Try again shortly.")
    assert not ChatSession.objects.exists()


def test_with_the_user_search_attribute_on_the_web_ui_can_list_one_users_sessions(api, user, worker, dev_server,
                                                                                   settings):  # fmt: skip
    settings.TEMPORAL_USER_SEARCH_ATTRIBUTE = "ChatUserId"
    assert api.post(URL, {"session_id": "searchable"}, format="json").status_code == 202

    def listed() -> list[str]:
        query = f'ChatUserId="{user.pk}"'
        result = temporal_cli("workflow", "list", "--query", query, "-o", "json", address=dev_server.address)
        return [w["execution"]["workflowId"] for w in json.loads(result.stdout or "[]")]

    assert wait_for(lambda: "chat-session-searchable" in listed(), what="the workflow in the user's list")


def test_a_namespace_without_the_search_attribute_still_starts_sessions(api, dev_server, settings, caplog):
    # No worker here: a worker would register the attribute itself (see test_worker_command.py).
    settings.TEMPORAL_USER_SEARCH_ATTRIBUTE = f"NeverRegistered{uuid.uuid4().hex[:8]}"

    response = api.post(URL, {"session_id": "unsearchable"}, format="json")

    assert response.status_code == 202
    assert f"without search attribute {settings.TEMPORAL_USER_SEARCH_ATTRIBUTE}" in caplog.text


def test_the_content_pattern_knows_every_whitespace_character_in_unicode():
    # chat.serializers scans only up to WHITESPACE_LIMIT for whitespace, to import quickly; nothing may lie beyond.
    from chat.serializers import WHITESPACE_LIMIT

    beyond = [hex(c) for c in range(WHITESPACE_LIMIT + 1, sys.maxunicode + 1) if chr(c).isspace()]
    assert beyond == []


def test_the_schema_documents_the_event_stream_its_events_resume_header_and_errors(api):
    schema = api.get("/api/schema/?format=json").json()

    operation = schema["paths"]["/api/sessions/{session_id}/events/"]["get"]
    parameters = {(p["in"], p["name"]) for p in operation["parameters"]}
    responses = operation["responses"]
    assert resolve("/api/sessions/any-session/events/").url_name == "session-events"
    assert list(responses["200"]["content"]) == ["text/event-stream"]
    assert {("header", "Last-Event-ID"), ("query", "after"), ("path", "session_id")} <= parameters
    assert all(f"- `{event_type}`: " in operation["description"] for event_type in EventType)
    for status in ("400", "401", "404"):
        body = responses[status]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert "detail" in schema["components"]["schemas"][body]["required"]
