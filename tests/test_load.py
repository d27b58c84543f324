"""Load without loss: many sessions and messages at once through a real HTTP server, then an exact audit.

64 sessions and 320 messages go through the Procfile's web server from a real HTTP client (httpx), 32 at a
time (two waves), and the worker's (demo) assistant answers every message; then every session's database rows and
its workflow's own state must agree, count for count and seq for seq. LOAD_SESSIONS sets the number of sessions for
a heavier run (`LOAD_SESSIONS=500 pytest tests/test_load.py`; `make bench` measures throughput): each costs about
0.25-0.5 s on 2 cores (the worker's CPU per message and its reply): 64 took 16 s alone, 150 (the default until make
test had to stay under its time) 35-75 s, and 500 took 6-8 minutes in CI.
"""

import asyncio
import os
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from temporalio.client import Client

from chat.models import ChatMessage, ChatSession
from chat.workflows import ChatSessionWorkflow, workflow_id_for
from devtools.processes import WebServer, wait_for
from tests.conftest import WorkerProcess, app_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

SESSIONS = int(os.environ.get("LOAD_SESSIONS", "64"))
MESSAGES_PER_SESSION = 5
CONCURRENCY = 32


async def post_with_retry(client: httpx.AsyncClient, url: str, body: dict, expect: int) -> dict:
    """Posts until answered. A 503 or a dropped connection is retried, which is safe: every post here is
    idempotent (messages carry a client_message_id; a start retried after an unknown outcome may meet its
    own 409, and the audit then checks that the session is there exactly once)."""
    outcome_unknown = False
    for _ in range(20):
        try:
            response = await client.post(url, json=body)
        except httpx.TransportError:
            outcome_unknown = True
            continue
        if response.status_code == 409 and expect == 202 and outcome_unknown:
            return body
        if response.status_code != 503:
            assert response.status_code == expect, (url, response.status_code, response.text)
            return response.json()
        outcome_unknown = True
        await asyncio.sleep(0.5)
    pytest.fail(f"{url} unanswered after 20 tries")


async def run_load(url: str, tokens: list[str], run: str) -> dict[str, list[int]]:
    limit = asyncio.Semaphore(CONCURRENCY)
    # Idle connections are dropped before the server's keep-alive closes them under a request in flight.
    limits = httpx.Limits(keepalive_expiry=1)
    clients = [
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Token {t}"}, timeout=60, limits=limits)
        for t in tokens
    ]

    async def one_session(n: int) -> tuple[str, list[int]]:
        client = clients[n % len(clients)]
        session_id = f"{run}-{n}"
        async with limit:
            await post_with_retry(client, "/api/sessions/", {"session_id": session_id}, 202)
            seqs = []
            for m in range(MESSAGES_PER_SESSION):
                body = {"content": f"{session_id}/{m}", "client_message_id": f"{session_id}-{m}"}
                seqs.append((await post_with_retry(client, f"/api/sessions/{session_id}/messages/", body, 201))["seq"])
        return session_id, seqs

    try:
        return dict(await asyncio.gather(*(one_session(n) for n in range(SESSIONS))))
    finally:
        for client in clients:
            await client.aclose()


async def workflow_states(address: str, session_ids: list[str]) -> dict[str, tuple[str, int, int]]:
    """Each session's (status, message count, replies still to write), as its workflow says."""
    client = await Client.connect(address)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def state(session_id: str) -> tuple[str, tuple[str, int, int]]:
        async with limit:
            s = await client.get_workflow_handle(workflow_id_for(session_id)).query(ChatSessionWorkflow.get_state)
            return session_id, (s.status, s.message_count, s.replies_pending)

    return dict(await asyncio.gather(*(state(s) for s in session_ids)))


def test_sessions_and_messages_under_load_agree_exactly_in_the_database_and_the_workflows(dev_server, tmp_path):
    queue = f"load-{uuid.uuid4()}"
    env = app_env(dev_server.address, queue)
    tokens = [Token.objects.create(user=get_user_model().objects.create_user(f"load{n}")).key for n in range(8)]
    worker = WorkerProcess(dev_server.address, log=tmp_path / "worker.log", task_queue=queue)
    web = WebServer(env, tmp_path / "web.log")
    try:
        answered = asyncio.run(run_load(web.url, tokens, run=queue[-8:]))

        def all_replied() -> dict | None:
            states = asyncio.run(workflow_states(dev_server.address, list(answered)))
            return states if all(pending == 0 for _, _, pending in states.values()) else None

        states = wait_for(all_replied, timeout=600, what="every message's reply")
    finally:
        web.stop()
        assert worker.terminate() == 0

    # Every message takes an odd seq and its reply the next one.
    total = 2 * MESSAGES_PER_SESSION
    assert len(answered) == SESSIONS
    assert all(sorted(seqs) == list(range(1, total, 2)) for seqs in answered.values())
    assert states == {session_id: ("active", total, 0) for session_id in answered}
    sessions = ChatSession.objects.filter(session_id__in=answered)
    assert sessions.count() == SESSIONS
    assert set(sessions.values_list("message_count", flat=True)) == {total}
    stored: dict[str, list[tuple[int, str, str]]] = {}
    for session_id, seq, role, content, status in ChatMessage.objects.filter(session__in=sessions).values_list(
        "session__session_id", "seq", "role", "content", "status"
    ):
        assert status == "complete"
        stored.setdefault(session_id, []).append((seq, role, content if role == "user" else ""))
    assert len(stored) == SESSIONS
    for session_id, rows in stored.items():
        users = [(2 * m + 1, "user", f"{session_id}/{m}") for m in range(MESSAGES_PER_SESSION)]
        replies = [(2 * m + 2, "assistant", "") for m in range(MESSAGES_PER_SESSION)]
        assert sorted(rows) == sorted(users + replies)
