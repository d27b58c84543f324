"""The admin, the Temporal Web UI and the chat page's tool calls in a real browser: headless Chromium (Debian's),
driven by Playwright.

Screenshots go to test-artifacts/. CI installs Chromium (.ci/run); elsewhere the test skips without it.
"""

import os
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core import mail
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from chat.models import ChatSession, ChatToolCall
from devtools.model_server import CallTools, ToolCall
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


# A card's elements, each with its classes, attributes that matter and own text, whitespace between them aside.
CARD_SHAPE = """card => [card, ...card.querySelectorAll("*")].map((e) => [
  e.tagName, e.className, e.dataset.testid, e.dataset.status, e.getAttribute("role"), e.getAttribute("aria-label"),
  e.hidden, [...e.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.data.trim()).join(""),
])"""


@pytest.mark.timeout(180)
def test_a_person_approves_an_email_the_assistant_asks_to_send_by_keyboard_after_a_reload(
    web, assistant_model, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API keeps an event loop around
    ARTIFACTS.mkdir(exist_ok=True)
    chat = web(DJANGO_DEBUG="true")  # DEBUG serves the page's static files
    user = Token.objects.get(key=chat.token).user
    user.email = "pat@example.com"
    # Hashed as the web process can check it: the tests' own hasher (MD5, for speed) is not in its settings.
    user.password = PBKDF2PasswordHasher().encode("pat-password", "test-salt", iterations=1000)
    user.save()
    assistant_model.script(CallTools((ToolCall("send_email", {"subject": "S", "body": "B"}),), text="I'll email it."))
    expect = playwright.expect

    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
        page.goto(f"{chat.url}/")
        page.get_by_label("Username").fill(user.username)
        page.get_by_label("Password").fill("pat-password")
        page.get_by_role("button", name="Log in").click()
        page.get_by_label("Message").fill("email me a summary")
        page.get_by_label("Message").press("Enter")

        # The reply asks first: a card above its text, with the arguments and a choice.
        reply = page.locator('[data-testid="message"][data-seq="2"]')
        card = reply.get_by_test_id("tool-card")
        expect(card.get_by_test_id("tool-approve")).to_be_visible(timeout=30_000)
        expect(card.get_by_test_id("tool-deny")).to_be_visible()
        expect(card.get_by_test_id("tool-status")).to_have_text("Awaiting approval")
        expect(card).to_contain_text("🔧 send_email")
        expect(card).to_contain_text('subject: "S"')
        expect(card).to_contain_text("The assistant wants to send an email with these arguments.")
        expect(reply.get_by_test_id("message-text")).to_have_text("I'll email it.")
        # A screen reader hears the request, once (the page's announcer; the conversation is not a live region).
        expect(page.get_by_test_id("announcer")).to_have_text(
            "The assistant wants to send an email with these arguments."
            " Approve or deny it on its card in the conversation."
        )

        # Still asking after a reload, and in a second tab.
        page.reload()
        expect(card.get_by_test_id("tool-approve")).to_be_visible(timeout=30_000)
        assert reply.locator(".tool + .message__text, .message__tools + .message__text").count() == 1  # above it
        page.screenshot(path=ARTIFACTS / "chat-tool-approval-desktop.png")
        second = page.context.new_page()
        second.goto(page.url)
        other_card = second.locator('[data-testid="message"][data-seq="2"]').get_by_test_id("tool-card")
        expect(other_card.get_by_test_id("tool-approve")).to_be_visible(timeout=30_000)
        second.set_viewport_size({"width": 375, "height": 812})
        assert second.evaluate("document.documentElement.scrollWidth") <= 375  # nothing wider than the screen
        second.screenshot(path=ARTIFACTS / "chat-tool-approval-375px.png")

        # By keyboard: Tab reaches the reason and Deny from Approve; Enter on Approve sends the email.
        approve = card.get_by_test_id("tool-approve")
        approve.focus()
        page.keyboard.press("Tab")
        expect(card.get_by_test_id("tool-reason")).to_be_focused()
        page.keyboard.press("Tab")
        expect(card.get_by_test_id("tool-deny")).to_be_focused()
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Shift+Tab")
        expect(approve).to_be_focused()
        page.keyboard.press("Enter")

        expect(card.get_by_test_id("tool-status")).to_have_text("Done", timeout=30_000)
        expect(card.get_by_test_id("tool-approve")).to_have_count(0)
        expect(card).to_be_focused()  # where the pressed button was, not the page's top
        expect(reply.get_by_test_id("message-text")).to_contain_text("Tool results: Sent to", timeout=30_000)
        expect(reply).to_have_attribute("data-final", "true", timeout=30_000)
        expect(page.get_by_test_id("announcer")).to_contain_text("Assistant: I'll email it. Tool results: Sent to")
        # The other tab follows from the stream: its buttons go away.
        expect(other_card.get_by_test_id("tool-status")).to_have_text("Done", timeout=30_000)
        expect(other_card.get_by_test_id("tool-approve")).to_have_count(0)
        second.screenshot(path=ARTIFACTS / "chat-tool-done-375px.png")

        # The stored reply's card, rendered by the page after a reload, is the one the script drew.
        drawn = card.evaluate(CARD_SHAPE)
        page.reload()
        expect(reply).to_have_attribute("data-final", "true")
        assert card.evaluate(CARD_SHAPE) == drawn
        card.get_by_test_id("tool-result").locator("summary").click()
        expect(card.get_by_test_id("tool-result")).to_contain_text("Sent to pat@example.com.")
        page.screenshot(path=ARTIFACTS / "chat-tool-done-desktop.png")
        browser.close()

    [sent] = mail.outbox
    assert (sent.to, sent.subject, sent.body) == (["pat@example.com"], "S", "B")
    call = ChatToolCall.objects.get(session__user=user)
    assert (call.status, call.decided_by) == ("done", user)
