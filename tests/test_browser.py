"""The admin and the Temporal Web UI in a real browser: headless Chromium (Debian's), driven by Playwright.

Screenshots go to test-artifacts/. CI installs Chromium (.ci/run); elsewhere the test skips without it.
"""

import os
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from chat.models import ChatSession
from devtools.processes import DevServer, free_port, wait_for
from tests.conftest import CHROMIUM, WorkerProcess, launch_chromium

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
pytestmark = [
    pytest.mark.temporal,  # starts a dev server of its own, with the Web UI
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"),
]
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def temporal_with_ui(settings, temporal_address, tmp_path):
    """A dev server with its Web UI on, and a worker on it, for the admin's links to lead somewhere real."""
    server = DevServer(ui_port=free_port()).wait_ready()
    settings.TEMPORAL_UI_URL = server.ui_url
    settings.TEMPORAL_TASK_QUEUE = "browser"
    temporal_address(server.address)
    worker = WorkerProcess(server.address, log=tmp_path / "worker.log", task_queue="browser")
    yield server
    worker.terminate()
    server.stop()


def test_an_operator_finds_a_session_ends_it_and_follows_it_into_the_temporal_web_ui(
    temporal_with_ui, live_server, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API keeps an event loop around
    ARTIFACTS.mkdir(exist_ok=True)
    get_user_model().objects.create_superuser("ops", password="ops-password")
    owner = get_user_model().objects.create_user("erin")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    assert api.post("/api/sessions/", {"session_id": "in-the-browser"}, format="json").status_code == 202
    wait_for(lambda: ChatSession.objects.filter(session_id="in-the-browser").exists(), what="the worker to record it")
    url = "/api/sessions/in-the-browser/messages/?wait=true"  # answered (by the worker's demo model) before we look
    assert api.post(url, {"content": "hello"}, format="json").status_code == 201

    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{live_server.url}/admin/login/?next=/admin/chat/chatsession/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", "ops-password")
        page.click("input[type=submit]")
        page.fill("#searchbar", "in-the-browser")
        page.press("#searchbar", "Enter")
        page.get_by_role("link", name="in-the-browser").wait_for()
        page.screenshot(path=ARTIFACTS / "admin-changelist.png")

        page.get_by_role("link", name="in-the-browser").click()
        page.get_by_text("workflow RUNNING · 2 messages").wait_for()
        page.screenshot(path=ARTIFACTS / "admin-session.png", full_page=True)
        with page.expect_popup() as popup:
            page.get_by_role("link", name="open workflow").click()
        ui = popup.value
        ui.get_by_text("chat-session-in-the-browser").first.wait_for(timeout=30_000)
        ui.wait_for_timeout(1000)  # let the page finish drawing for the screenshot; the check above is done
        ui.screenshot(path=ARTIFACTS / "temporal-web-ui.png")
        assert re.search(r"/workflows/chat-session-in-the-browser/", ui.url)

        page.goto(f"{live_server.url}/admin/chat/chatsession/?q=in-the-browser")
        page.check("input[name=_selected_action]")
        page.select_option("select[name=action]", "end_sessions")
        page.click("button[name=index]")
        page.get_by_text("Ended 1 session(s); 0 had already ended.").wait_for()
        page.screenshot(path=ARTIFACTS / "admin-ended.png")
        browser.close()

    wait_for(lambda: ChatSession.objects.filter(session_id="in-the-browser", status="ended").exists(),
             what="the end to reach the record")  # fmt: skip
    assert api.post("/api/sessions/in-the-browser/messages/", {"content": "late"}, format="json").status_code == 409
