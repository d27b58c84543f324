"""A bounded event log and deletable chats: replies compacted once stored, ended sessions' events retired by a
Temporal Schedule (or Redis expiry), and a session deleted from the API or the admin."""

import asyncio
import contextlib
import uuid
from datetime import timedelta

import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone
from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment

from chat.activities import trim_event_log
from chat.conf import chat_settings
from chat.events import Event, get_event_log
from chat.maintenance import EVENT_RETENTION_EVERY, EVENT_RETENTION_SCHEDULE
from chat.models import ChatEvent, ChatMessage, ChatSession
from chat.projections import session_record_end
from chat.types import EventRetention, SessionEnd, SessionStatus
from devtools.processes import wait_for
from tests.conftest import reply_stored, subscribed, token_client
from tests.test_api import status_of

pytestmark = pytest.mark.django_db(transaction=True)
WEEK = 7 * 24 * 3600.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def answered(api, session_id: str) -> ChatSession:
    """Starts a session with one message and waits for its stored reply."""
    assert api.post("/api/sessions/", {"session_id": session_id}, format="json").status_code == 202
    wait_for(lambda: ChatSession.objects.filter(session_id=session_id).exists(), what="the record")
    posted = api.post(f"/api/sessions/{session_id}/messages/?wait=true", {"content": "hello"}, format="json")
    assert posted.status_code == 201, posted.content
    return ChatSession.objects.get(session_id=session_id)


def test_a_stored_reply_keeps_its_deltas_for_live_readers_until_the_next_message_then_only_its_message(
    web, assistant_model
):
    from devtools.model_server import Reply

    chat = web()
    session_id = new_id("compact")
    assistant_model.script(Reply("one two three four five six seven eight", chunk_delay=0.05))
    chat.start(session_id)
    subscribed(chat, session_id)
    following = chat.follow_in_background(session_id, reply_stored(2))
    chat.say(session_id, "count for me")
    seen = following.result(60)
    first_delta = next(e.id for e in seen if e.type == "delta")

    def stored() -> list[tuple[str, int | None]]:
        return [(e.type, e.data.get("seq")) for e in get_event_log().read(session_id)]

    assert [kind for kind, _ in stored()].count("delta") >= 2  # kept while the next message is not there
    chat.say(session_id, "and again")
    wait_for(lambda: ("message", 4) in stored(), what="the next exchange stored")
    assert chat.post(f"sessions/{session_id}/end/").status_code == 200

    assert stored() == [("message", 1), ("message", 2), ("message", 3), ("message", 4), ("session_ended", None)]
    resumed = chat.follow(session_id, reply_stored(4), last_event_id=first_delta)
    assert [(e.type, e.data["seq"]) for e in resumed] == [("message", 2), ("message", 3), ("message", 4)]
    assert resumed[0].data["content"] == "one two three four five six seven eight"


def ended_session(owner, ended_days_ago: float, *, status: str = SessionStatus.ENDED) -> str:
    session_id = new_id("retained")
    session = ChatSession.objects.create(session_id=session_id, user=owner, workflow_id="wf", run_id="run")
    get_event_log().append(session_id, [Event(session_id, "delta", {"turn": 2, "attempt": 1, "text": "x"})])
    if status != SessionStatus.ACTIVE:
        ended_at = timezone.now() - timedelta(days=ended_days_ago)
        session_record_end(end=SessionEnd(session_id, status, ended_at, 0, None))
        session.refresh_from_db()
    return session_id


def test_the_retention_activity_removes_the_events_of_sessions_ended_before_the_retention_only(settings):
    owner = get_user_model().objects.create_user("retention")
    old, recent = ended_session(owner, 8), ended_session(owner, 1)
    timed_out, active = (
        ended_session(owner, 30, status=SessionStatus.TIMED_OUT),
        ended_session(owner, 0, status="active"),
    )

    ActivityEnvironment().run(trim_event_log, EventRetention(WEEK))

    log = get_event_log()
    if chat_settings.CHAT_EVENT_LOG == "database":
        assert [bool(log.read(s)) for s in (old, recent, timed_out, active)] == [False, True, False, True]
    else:  # Redis: each ended session's keys expire by themselves, the retention after its end
        client = redis.Redis.from_url(chat_settings.CHAT_EVENT_LOG)
        ttls = [client.ttl(log.stream_key(s)) for s in (old, recent, timed_out, active)]
        assert all(0 < ttl <= WEEK for ttl in ttls[:3]), ttls
        assert ttls[3] == -1, ttls  # open: kept
    assert ChatSession.objects.count() == 4  # the records stay


def test_the_worker_keeps_the_retention_schedule_and_its_workflow_trims(worker, dev_server, settings):
    async def schedule_then_trigger() -> str:
        client = await Client.connect(dev_server.address)
        handle = client.get_schedule_handle(EVENT_RETENTION_SCHEDULE)
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the worker creates it, or points it at its own task queue, as it starts
            with contextlib.suppress(RPCError):
                described = await handle.describe()
                if described.schedule.action.task_queue == settings.TEMPORAL_TASK_QUEUE:
                    break
            assert asyncio.get_running_loop().time() < deadline, "the worker did not keep the schedule"
            await asyncio.sleep(0.05)
        # ALLOW_ALL: the schedule fires on the hour by itself, on the task queue of whichever test's worker then
        # held it; that run waits for a worker that is gone, and the schedule's own SKIP would skip this trigger
        await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
        # in production too a run can be left to no worker (a renamed task queue): it ends before the next is due
        assert described.schedule.action.execution_timeout < EVENT_RETENTION_EVERY
        return described.schedule.action.workflow

    owner = get_user_model().objects.create_user("scheduled")
    old = ended_session(owner, 30)

    assert asyncio.run(schedule_then_trigger()) == "ChatMaintenanceWorkflow"
    if chat_settings.CHAT_EVENT_LOG == "database":
        wait_for(lambda: not ChatEvent.objects.filter(session__session_id=old).exists(), what="the trim")


def test_deleting_a_session_ends_its_workflow_and_removes_its_messages_events_and_record(worker, dev_server):
    alice, bob = token_client("alice"), token_client("bob")
    session_id = new_id("deleted")
    answered(alice, session_id)

    refused = bob.delete(f"/api/sessions/{session_id}/")
    deleted = alice.delete(f"/api/sessions/{session_id}/")

    assert refused.status_code == 404
    assert deleted.status_code == 204
    assert not ChatSession.objects.filter(session_id=session_id).exists()
    assert not ChatMessage.objects.filter(session__session_id=session_id).exists()
    assert get_event_log().read(session_id) == []
    assert status_of(f"chat-session-{session_id}", dev_server.address) == "COMPLETED"
    assert alice.get(f"/api/sessions/{session_id}/").status_code == 404
    assert alice.delete(f"/api/sessions/{session_id}/").status_code == 404


def test_an_ended_session_is_deleted_without_asking_its_workflow_again(worker, dev_server):
    alice = token_client("alice")
    session_id = new_id("ended-then-deleted")
    answered(alice, session_id)
    assert alice.post(f"/api/sessions/{session_id}/end/").status_code == 200

    assert alice.delete(f"/api/sessions/{session_id}/").status_code == 204
    assert not ChatSession.objects.filter(session_id=session_id).exists()


def test_the_admin_deletes_through_the_workflow_with_the_delete_permission_only(client, worker, dev_server):
    owner = token_client("dora")
    kept, gone = answered(owner, new_id("kept")), answered(owner, new_id("gone"))
    staff = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_chatsession"))
    client.force_login(staff)

    refused = client.post(f"/admin/chat/chatsession/{kept.pk}/delete/", {"post": "yes"})
    staff.user_permissions.add(Permission.objects.get(codename="delete_chatsession"))
    client.force_login(get_user_model().objects.get(pk=staff.pk))
    deleted = client.post(f"/admin/chat/chatsession/{gone.pk}/delete/", {"post": "yes"})

    assert refused.status_code == 403
    assert deleted.status_code == 302
    assert list(ChatSession.objects.values_list("session_id", flat=True)) == [kept.session_id]
    assert status_of(f"chat-session-{gone.session_id}", dev_server.address) == "COMPLETED"
    assert status_of(f"chat-session-{kept.session_id}", dev_server.address) == "RUNNING"
