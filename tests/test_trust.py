"""Access, limits and hostile input: every answer a clear 4xx with a JSON detail, and nothing half-written."""

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from chat.models import ChatMessage, ChatSession
from chat.views import MessagePostThrottle, SessionStartThrottle
from tests.conftest import token_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api() -> APIClient:
    return token_client("mallory")


@pytest.fixture
def rates(monkeypatch):
    """Sets the throttle rates for one test; the counters start from zero."""
    cache.clear()

    def set_rates(**scopes: str) -> None:
        for throttle in (SessionStartThrottle, MessagePostThrottle):
            monkeypatch.setattr(throttle, "THROTTLE_RATES", {**throttle.THROTTLE_RATES, **scopes})

    yield set_rates
    cache.clear()


def test_starting_sessions_too_fast_answers_429(api, worker, rates):
    rates(session_start="2/min")

    answers = [api.post("/api/sessions/", {}, format="json") for _ in range(3)]

    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[-1].json()["detail"].startswith("Request was throttled. Expected available in ")
    assert int(answers[-1]["Retry-After"]) > 0


def test_posting_messages_too_fast_answers_429_and_stores_only_the_accepted(api, worker, rates):
    rates(message_post="2/min")
    session_id = api.post("/api/sessions/", {}, format="json").json()["session_id"]

    answers = [api.post(f"/api/sessions/{session_id}/messages/", {"content": f"m{i}"}, format="json") for i in range(3)]

    assert [a.status_code for a in answers] == [201, 201, 429]
    # The user's messages: the demo model's replies to them may be stored by now too.
    stored = ChatMessage.objects.filter(role="user").values_list("content", flat=True).order_by("seq")
    assert list(stored) == ["m0", "m1"]


def test_reads_are_not_throttled(api, worker, rates):
    rates(session_start="1/min")
    api.post("/api/sessions/", {}, format="json")

    assert [api.get("/api/sessions/").status_code for _ in range(5)] == [200] * 5


def test_a_huge_body_answers_413_and_starts_nothing(api):
    body = '{"session_id": "big", "pad": "' + "x" * (settings.API_MAX_BODY_BYTES + 1) + '"}'

    response = api.post("/api/sessions/", body, content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {"detail": f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes."}
    assert not ChatSession.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/api/sessions/a'%20OR%201=1--/",
        "/api/sessions/..%2F..%2Fetc%2Fpasswd/",
        "/api/sessions/%00/messages/",
        "/api/sessions/" + "x" * 65 + "/",
        "/api/sessions/%C2%84/",
        "/api/nothing-here/",
        "/api/sessions",
    ],
)
@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_odd_paths_answer_a_json_404(api, path, debug, settings):
    settings.DEBUG = debug  # where Django would otherwise answer its HTML 404 page

    response = api.get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_a_post_to_an_odd_path_answers_a_json_404_not_a_csrf_page():
    response = Client(enforce_csrf_checks=True).post("/api/sessions/%C2%97/end/")

    assert (response.status_code, response.json()) == (404, {"detail": "Not found."})


def test_every_session_endpoint_needs_authentication():
    anonymous = APIClient()
    answers = [
        anonymous.get("/api/sessions/"),
        anonymous.post("/api/sessions/", {}, format="json"),
        anonymous.get("/api/sessions/x/"),
        anonymous.get("/api/sessions/x/messages/"),
        anonymous.post("/api/sessions/x/messages/", {"content": "hi"}, format="json"),
        anonymous.post("/api/sessions/x/end/"),
    ]

    assert [a.status_code for a in answers] == [401] * 6
    assert {a.json()["detail"] for a in answers} == {"Authentication credentials were not provided."}


def run_production_check(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "chatproject.settings_production", **env},
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


GOOD_KEY = "k" * 50


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "true", "DJANGO_SECRET_KEY": GOOD_KEY, "DJANGO_ALLOWED_HOSTS": "chat.example.com"},
         "DJANGO_DEBUG is on; production settings refuse to start with it."),
        ({"DJANGO_DEBUG": "true", "DJANGO_ALLOWED_HOSTS": "chat.example.com"},
         "DJANGO_DEBUG is on; production settings refuse to start with it."),
        ({"DJANGO_SECRET_KEY": "short", "DJANGO_ALLOWED_HOSTS": "chat.example.com"},
         "DJANGO_SECRET_KEY must be set to a random string of at least 32 characters."),
        ({"DJANGO_ALLOWED_HOSTS": "chat.example.com"}, "DJANGO_SECRET_KEY is not set."),
        ({"DJANGO_SECRET_KEY": GOOD_KEY}, "DJANGO_ALLOWED_HOSTS must list the host names"),
        ({"DJANGO_SECRET_KEY": GOOD_KEY, "DJANGO_ALLOWED_HOSTS": "x", "CHAT_THROTTLE_MESSAGE_POST": "lots"},
         "CHAT_THROTTLE_MESSAGE_POST='lots' is not a rate such as 30/min"),
        ({"DJANGO_SECRET_KEY": GOOD_KEY, "DJANGO_ALLOWED_HOSTS": "x", "TEMPORAL_RPC_TIMEOUT": "soon"},
         "TEMPORAL_RPC_TIMEOUT='soon' is not valid"),
    ],
)  # fmt: skip
def test_production_settings_refuse_to_start_unsafe(env, message):
    result = run_production_check(**env)

    assert result.returncode != 0
    assert message in result.stderr


def test_production_settings_start_when_configured():
    result = run_production_check(DJANGO_SECRET_KEY=GOOD_KEY, DJANGO_ALLOWED_HOSTS="chat.example.com")

    assert result.returncode == 0, result.stderr


def test_the_api_module_imports_first_without_a_cycle():
    # The worker's system checks may import chatproject.api before any view: DRF's view classes then read the
    # parser and paginator settings, which must not lead back into the half-imported module.
    code = "import django; django.setup(); import chatproject.api, rest_framework.generics; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.stdout.strip() == "ok", result.stderr
