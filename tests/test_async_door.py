"""The ASGI application's door for starts and messages (chatproject.asgi.AsyncDoor): Django's middleware and the API's
view on a thread once, the Temporal call awaited on the server's loop with a client of its own; every answer the
same as the thread pool's door gives for the same request."""

import asyncio
import json
import uuid
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as DjangoClient
from rest_framework.authtoken.models import Token

from chat.models import ChatSession
from devtools.processes import wait_for
from temporal_integration import client as temporal_client

pytestmark = pytest.mark.django_db(transaction=True)

# What the two doors may differ in: the date, and the order the middleware and the server write headers in.
UNCOMPARED = {"date"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


async def asgi_request(app, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> Answer:
    """One HTTP request through an ASGI application, as uvicorn hands it over."""
    query = path.partition("?")[2]
    all_headers = {"host": "testserver", "content-type": "application/json", "content-length": str(len(body))}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path.partition("?")[0],
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in {**all_headers, **(headers or {})}.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    done = asyncio.Event()
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers_out = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], headers_out, b"".join(m.get("body", b"") for m in sent[1:]))


def through(app, *args, **kwargs) -> Answer:
    return asyncio.run(asgi_request(app, *args, **kwargs))


def token_of(username: str) -> dict[str, str]:
    user = get_user_model().objects.create_user(username)
    return {"authorization": f"Token {Token.objects.create(user=user).key}"}


def new_id() -> str:
    return f"door-{uuid.uuid4().hex[:8]}"


def test_a_start_and_a_message_await_temporal_on_the_servers_loop_with_no_client_thread(worker):
    from chatproject import asgi

    temporal_client.reset_temporal_client()
    alice = token_of("alice")
    session_id = new_id()

    async def start_then_post() -> tuple[Answer, Answer, int]:  # on one loop, as under a server
        body = json.dumps({"session_id": session_id}).encode()
        started = await asgi_request(asgi.application, "POST", "/api/sessions/", body, alice)
        recorded = ChatSession.objects.filter(session_id=session_id).exists
        await asyncio.to_thread(wait_for, recorded, what="the record")
        path = f"/api/sessions/{session_id}/messages/"
        posted = await asgi_request(asgi.application, "POST", path, b'{"content":"hi"}', alice)
        return started, posted, len(temporal_client._loop_clients)

    started, posted, loop_clients = asyncio.run(start_then_post())

    assert started.status == 202, started.body
    assert started.json()["session_id"] == session_id
    assert started.headers["content-length"] == str(len(started.body))
    assert (posted.status, posted.json()["seq"], posted.json()["reply_seq"]) == (201, 1, 2), posted.body
    # Both awaited the client of the loop they ran on; the sync bridge (a loop thread of its own) was never made.
    assert loop_clients == 1
    assert temporal_client._bridge is None


def test_every_refusal_is_the_same_through_the_async_door_as_through_the_thread_pool(worker, settings):
    from chatproject import asgi

    alice, bob = token_of("alice"), token_of("bob")
    mine = new_id()
    assert through(asgi.pool, "POST", "/api/sessions/", json.dumps({"session_id": mine}).encode(), alice).status == 202
    wait_for(lambda: ChatSession.objects.filter(session_id=mine).exists(), what="the record")
    too_large = json.dumps({"content": "x" * (settings.API_MAX_BODY_BYTES + 10)}).encode()
    requests = [
        ("/api/sessions/", b'{"session_id": "', alice),  # malformed JSON
        ("/api/sessions/", b'{"session_id": "a/b"}', alice),
        ("/api/sessions/", b'{"colour": "red"}', alice),
        ("/api/sessions/", json.dumps({"session_id": mine}).encode(), alice),  # used already: 409
        ("/api/sessions/", b"{}", {}),  # no credentials: 401
        ("/api/sessions/", b"{}", {"authorization": "Token nope"}),
        ("/api/sessions/", b"{}", {**alice, "content-type": "text/plain"}),  # 415
        ("/api/sessions/", too_large, alice),  # 413
        (f"/api/sessions/{mine}/messages/", b'{"content": ""}', alice),
        (f"/api/sessions/{mine}/messages/", b'{"content": "hi"}', bob),  # another user's session: 404
        (f"/api/sessions/{mine}/messages/?wait=maybe", b'{"content": "hi"}', alice),
        ("/api/sessions/nope/messages/", b'{"content": "hi"}', alice),
    ]
    for path, body, headers in requests:
        door = through(asgi.application, "POST", path, body, headers)
        pool = through(asgi.pool, "POST", path, body, headers)
        assert door.status in (400, 401, 404, 409, 413, 415), (path, door.status, door.body)
        assert (door.status, door.json()) == (pool.status, pool.json()), (path, body)
        assert {k: v for k, v in door.headers.items() if k not in UNCOMPARED} == {
            k: v for k, v in pool.headers.items() if k not in UNCOMPARED
        }, (path, body)
    assert ChatSession.objects.count() == 1  # nothing refused was started


def test_the_pages_session_login_posts_through_the_door_with_its_csrf_check(worker):
    from chatproject import asgi

    user = get_user_model().objects.create_user("carol", password="pw-for-carol")
    browser = DjangoClient(enforce_csrf_checks=True)
    browser.force_login(user)
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in browser.cookies.items())
    session_id = new_id()
    body = json.dumps({"session_id": session_id}).encode()

    refused = through(asgi.application, "POST", "/api/sessions/", body, {"cookie": cookie})
    page = browser.get("/")  # the page sets the CSRF cookie, as a person's browser gets it
    token = page.cookies["csrftoken"].value
    cookie = f"{cookie}; csrftoken={token}"
    started = through(asgi.application, "POST", "/api/sessions/", body, {"cookie": cookie, "x-csrftoken": token})

    assert refused.status == 403
    assert "CSRF" in refused.json()["detail"]
    assert started.status == 202, started.body
    assert started.headers["vary"] == "Accept, Cookie"  # the session middleware's, as the pool answers
    wait_for(lambda: ChatSession.objects.filter(session_id=session_id, user=user).exists(), what="the record")


def test_temporal_unreachable_answers_503_with_retry_after_through_the_door(worker, settings):
    from chatproject import asgi

    alice = token_of("alice")
    settings.TEMPORAL_ADDRESS = "127.0.0.1:1"  # nothing listens there
    settings.TEMPORAL_RPC_TIMEOUT = 1.0

    answered = through(asgi.application, "POST", "/api/sessions/", b'{"session_id": "down-1"}', alice)

    assert answered.status == 503, answered.body
    assert "unavailable" in answered.json()["detail"]
    assert answered.headers["retry-after"] == "5"
    assert answered.headers["content-length"] == str(len(answered.body))
    assert answered.headers["x-frame-options"] == "DENY"  # the middleware's headers stay on a late failure
    assert not ChatSession.objects.exists()
