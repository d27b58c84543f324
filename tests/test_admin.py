"""The admin as an operations console: badges, live workflow state, and ending sessions through Temporal."""

import re
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from chat.models import ChatSession, ChatToolCall
from devtools.processes import free_port, wait_for
from tests.conftest import token_client

pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = "/admin/chat/chatsession/"


@pytest.fixture
def owner() -> APIClient:
    return token_client("dora")


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("ops", password="pw"))
    return client


def started(owner: APIClient, session_id: str, messages: int = 0) -> ChatSession:
    assert owner.post("/api/sessions/", {"session_id": session_id}, format="json").status_code == 202
    for n in range(messages):  # each answered before the next
        url = f"/api/sessions/{session_id}/messages/?wait=true"
        assert owner.post(url, {"content": f"m{n}"}, format="json").status_code == 201
    return wait_for(lambda: ChatSession.objects.filter(session_id=session_id).first(), what="the record")


def test_the_list_shows_status_badges_and_message_counts(owner, staff, worker):
    started(owner, "badge", messages=2)

    html = staff.get(CHANGELIST).content.decode()

    assert ">Active</span>" in html
    assert '<td class="field-message_count">4</td>' in html  # two messages, two replies


def test_search_finds_sessions_by_user_and_by_session_id(owner, staff, worker):
    started(owner, "findme")

    assert "findme" in staff.get(CHANGELIST, {"q": "dora"}).content.decode()
    assert "findme" in staff.get(CHANGELIST, {"q": "findme"}).content.decode()
    assert "findme" not in staff.get(CHANGELIST, {"q": "nobody"}).content.decode()


def test_the_detail_page_shows_the_live_workflow_state(owner, staff, worker):
    session = started(owner, "live", messages=3)

    html = staff.get(f"{CHANGELIST}{session.pk}/change/").content.decode()

    assert "workflow RUNNING · 6 messages" in html
    assert len(re.findall(r'field-model">\s*<p>demo</p>', html)) == 3  # each reply, with its model
    assert len(re.findall(r'field-reply">\s*<p>Complete</p>', html)) == 3
    assert html.count(">Active</span>") == html.count("<label>Status:</label>") == 1  # the status, once
    assert "m2" in html  # the inline messages


def test_the_detail_page_notes_when_temporal_is_down_instead_of_failing(owner, staff, worker, temporal_address):
    session = started(owner, "down")
    temporal_address(f"127.0.0.1:{free_port()}")

    page = staff.get(f"{CHANGELIST}{session.pk}/change/")

    assert page.status_code == 200
    assert "Temporal is unreachable, so this shows the stored record only." in page.content.decode()


def test_the_end_action_ends_the_selected_sessions_through_their_workflows(owner, staff, worker):
    sessions = [started(owner, f"end-{n}") for n in range(2)]
    owner.post("/api/sessions/end-1/end/")

    response = staff.post(
        CHANGELIST, {"action": "end_sessions", "_selected_action": [s.pk for s in sessions]}, follow=True
    )

    assert "Ended 1 session(s); 1 had already ended." in response.content.decode()
    wait_for(lambda: not ChatSession.objects.filter(status="active").exists(), what="both records to show the end")
    assert owner.post("/api/sessions/end-0/messages/", {"content": "hi"}, format="json").status_code == 409


def test_ending_from_the_admin_records_and_logs_the_staff_member_who_did_it(owner, staff, worker, caplog):
    session = started(owner, "ended-by-staff")

    staff.post(CHANGELIST, {"action": "end_sessions", "_selected_action": [session.pk]})

    record = wait_for(lambda: ChatSession.objects.filter(pk=session.pk, status="ended").first(), what="the end")
    assert record.ended_by.username == "ops"
    assert "session ended session_id=ended-by-staff user_id=" in caplog.text
    assert "ended_by=ops" in caplog.text


@pytest.fixture
def viewer(client):
    """A staff member who may only view sessions."""
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_chatsession"))
    client.force_login(user)
    return client


def test_a_view_only_staff_member_neither_sees_nor_can_post_the_end_action(owner, viewer, worker):
    session = started(owner, "not-yours-to-end")

    page = viewer.get(CHANGELIST).content.decode()
    posted = viewer.post(CHANGELIST, {"action": "end_sessions", "_selected_action": [session.pk]}, follow=True)

    assert "not-yours-to-end" in page
    assert "end_sessions" not in page
    assert posted.status_code == 200
    assert (
        owner.post("/api/sessions/not-yours-to-end/messages/", {"content": "still open"}, format="json").status_code
        == 201
    )
    assert ChatSession.objects.get(pk=session.pk).status == "active"


def test_the_detail_page_lists_the_sessions_tool_calls_read_only(owner, staff):
    session = ChatSession.objects.create(session_id="tools", user=owner.user, workflow_id="wf", run_id="run")
    call = {"session": session, "reply_seq": 2, "step": 0}
    ChatToolCall.objects.create(
        **call,
        call_id="c0",
        index=0,
        name="search_chats",
        arguments='{"query": "pasta"}',
        status="done",
        result="r" * 300,
    )
    ChatToolCall.objects.create(
        **call,
        call_id="c1",
        index=1,
        name="send_email",
        arguments='{"subject": "S", "body": "B"}',
        status="denied",
        result="The user declined.",
        needs_approval=True,
        decided_by=get_user_model().objects.get(username="ops"),
        decided_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
    )

    html = staff.get(f"{CHANGELIST}{session.pk}/change/").content.decode()

    assert "Tool calls" in html
    assert html.index("search_chats") < html.index("send_email")
    assert "{&quot;query&quot;: &quot;pasta&quot;}" in html
    assert "{&quot;subject&quot;: &quot;S&quot;, &quot;body&quot;: &quot;B&quot;}" in html
    assert "r" * 199 + "…" in html  # the result, shortened
    assert "r" * 201 not in html
    assert re.search(r'field-status">\s*<p>Denied</p>', html)
    assert re.search(r'field-needs_approval">\s*<p><img [^>]*alt="True"', html)
    assert re.search(r'field-decided_by">\s*<p><a [^>]*>ops</a>', html)
    assert "Dec. 1, 2026, 9:30 a.m." in html
    assert "The user declined." in html
    assert 'name="tool_calls-0-name"' not in html  # nothing to edit
