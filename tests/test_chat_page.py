"""The chat page in a real browser (Debian's Chromium, driven by Playwright), as a person uses it: the Procfile's
web process, a worker, the Temporal dev server, and the local model server writing replies at a set pace.

Screenshots go to test-artifacts/ (desktop and 375 px wide). CI installs Chromium (.ci/run); elsewhere these tests
skip without it.

A reply is Markdown, rendered (and sanitized) by the page: a plain sentence shows as its text, without the
whitespace at its ends.
"""

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from chat.models import ChatMessage, ChatSession
from devtools.model_server import Hang, Reply
from devtools.processes import WebServer, wait_for
from tests.conftest import CHROMIUM, app_env, launch_chromium

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"),
]
playwright = pytest.importorskip("playwright.sync_api")

LONG_REPLY = " ".join(f"word{i}" for i in range(1, 61))  # 60 words, 6 s at 0.1 s a word
CODE = 'def greet(name: str) -> str:\n    return f"Hello, {name}! A line long enough to scroll sideways on a phone."'
MARKDOWN_REPLY = f"""Here is a **short** answer, with [the guide](https://example.org/guide) and `inline code`.

1. Install it
2. Run it, as https://example.com/start says

> A quoted line.

| name | what | size |
|------|------|-----:|
| alpha | the first entry, with a note | 1 |
| beta | the second entry | 22 |

```python
{CODE}
```

- one more item
- and the last
"""
XSS_REPLY = """<img src=x onerror="window.__pwned=1">

<script>window.__pwned=2</script>

Inline, <img src=x onerror="window.__pwned=1"> and [x](javascript:window.__pwned=3) too.
"""
# A rendered reply's shape: each element with the attributes that matter, in document order.
SHAPE = """text => [...text.querySelectorAll("*")].map(e => [e.tagName, ...["href", "target", "rel", "style", "class"]
    .map(name => e.getAttribute(name))].join(" "))"""


@pytest.fixture
def site(worker, dev_server, assistant_model, settings, tmp_path: Path, monkeypatch) -> Iterator[str]:
    """The web process on this test's task queue, with DEBUG on for its static files (WhiteNoise's production path
    is tests/test_production.py's)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API keeps an event loop around
    ARTIFACTS.mkdir(exist_ok=True)
    env = {**app_env(dev_server.address, settings.TEMPORAL_TASK_QUEUE), "DJANGO_DEBUG": "true"}
    server = WebServer(env, tmp_path / "web.log")
    yield server.url
    server.stop()


@pytest.fixture
def browser() -> Iterator["playwright.Browser"]:
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


def logged_in(browser, url: str, username: str, width: int = 1400) -> "playwright.Page":
    """A new browser context (its own cookies) in which `username` has logged in through the login page."""
    # Hashed as the web process can check it: the tests' own hasher (MD5, for speed) is not in its settings.
    password = PBKDF2PasswordHasher().encode(f"{username}-password", "test-salt", iterations=1000)
    user = get_user_model().objects.create_user(username)
    user.password = password
    user.save(update_fields=["password"])
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.goto(f"{url}/")
    assert "/accounts/login/" in page.url
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"{username}-password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")
    return page


def message(page, seq: int) -> "playwright.Locator":
    return page.locator(f'[data-testid="message"][data-seq="{seq}"]')


def send(page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def text_of(page, seq: int) -> str:
    return message(page, seq).get_by_test_id("message-text").text_content()


def written_some(page, seq: int) -> None:
    """Waits until the reply of that seq shows a few words."""
    selector = f'[data-seq="{seq}"] .message__text'
    page.wait_for_function(f"() => (document.querySelector('{selector}')?.textContent || '').length > 12")


def watch_reply(page, seq: int, within: float = 30) -> list[str]:
    """The reply's text each time it changed, until it was stored (polled every 20 ms, up to `within` s)."""
    seen: list[str] = []
    deadline = time.monotonic() + within
    reply = message(page, seq)
    while time.monotonic() < deadline:
        if reply.count():
            final = reply.get_attribute("data-final") == "true"  # read first: the text read after it is at least as new
            text = text_of(page, seq)
            if not seen or seen[-1] != text:
                seen.append(text)
            if final:
                return seen
        page.wait_for_timeout(20)
    raise AssertionError(f"reply {seq} was not stored within {within}s; seen {seen[-1:]!r}")


def test_a_person_chats_watches_the_reply_being_written_stops_one_and_reloads_in_the_middle_of_another(
    site, browser, assistant_model
):
    page = logged_in(browser, site, "reader")
    page.screenshot(path=ARTIFACTS / "chat-new-desktop.png")

    # The first message starts the session; the reply appears in steps, before it is complete.
    assistant_model.script(Reply("The quick brown fox jumps over the lazy dog again and again", chunk_delay=0.1))
    send(page, "Hello there")
    steps = watch_reply(page, 2)
    assert steps[-1] == "The quick brown fox jumps over the lazy dog again and again"
    partial = [text for text in steps[:-1] if text]
    assert len(partial) >= 3, steps  # written as it came, not all at once
    assert all(steps[-1].startswith(text) for text in partial)
    assert page.get_by_label("Message").input_value() == ""
    session_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert page.url == f"{site}/chat/{session_id}/"
    assert page.get_by_test_id("session-item").first.get_attribute("data-session-id") == session_id

    # Stop while the reply is written: what was written stays, marked stopped, and the chat goes on.
    assistant_model.script(Reply(LONG_REPLY, chunk_delay=0.1))
    send(page, "Tell me everything")
    page.wait_for_function(
        "() => (document.querySelector('[data-seq=\"4\"] .message__text')?.textContent || '').length > 12"
    )
    page.get_by_role("button", name="Stop").click()
    message(page, 4).and_(page.locator('[data-final="true"]')).wait_for()
    assert message(page, 4).get_attribute("data-status") == "stopped"
    assert message(page, 4).get_by_test_id("message-note").text_content() == "Stopped"
    stopped_text = text_of(page, 4)
    assert LONG_REPLY.startswith(stopped_text)
    assert 0 < len(stopped_text) < len(LONG_REPLY)
    assert page.get_by_role("button", name="Stop").is_hidden()
    stored = ChatMessage.objects.get(session__session_id=session_id, seq=4)
    assert (stored.status, stored.content.strip()) == ("stopped", stopped_text)

    # Reload in the middle of a reply: the page picks it up where it is, and it ends whole, no word twice.
    assistant_model.script(Reply(LONG_REPLY, chunk_delay=0.1))
    send(page, "And again")
    page.wait_for_function(
        "() => (document.querySelector('[data-seq=\"6\"] .message__text')?.textContent || '').length > 12"
    )
    page.reload()
    message(page, 6).and_(page.locator('[data-final="false"]')).wait_for()  # still being written, after the reload
    page.screenshot(path=ARTIFACTS / "chat-reply-streaming-desktop.png")
    after_reload = watch_reply(page, 6)
    assert after_reload[-1] == LONG_REPLY
    assert all(LONG_REPLY.startswith(text) for text in after_reload)
    assert page.get_by_test_id("message").count() == 6
    page.screenshot(path=ARTIFACTS / "chat-desktop.png")

    page.set_viewport_size({"width": 375, "height": 812})
    page.reload()
    message(page, 6).wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing wider than the screen
    page.screenshot(path=ARTIFACTS / "chat-375px.png")  # what the screen shows: the newest messages


def test_a_second_tab_follows_another_user_gets_404_and_a_refused_message_stays_in_the_composer(
    site, browser, assistant_model
):
    first = logged_in(browser, site, "writer")
    assistant_model.script(Reply("hello back", chunk_delay=0.02))
    send(first, "hello")
    watch_reply(first, 2)
    chat_url = first.url

    # A second tab of the same user follows the same conversation, live.
    second = first.context.new_page()
    second.goto(chat_url)
    message(second, 2).wait_for()
    assistant_model.script(Reply("seen in both tabs", chunk_delay=0.02))
    send(first, "sent from the first tab")
    message(second, 3).get_by_text("sent from the first tab").wait_for()
    assert watch_reply(second, 4)[-1] == "seen in both tabs"

    # Another user: 404, and nothing of the conversation.
    other = logged_in(browser, site, "intruder")
    response = other.goto(chat_url)
    assert response.status == 404
    assert other.get_by_test_id("not-found").is_visible()
    assert "hello" not in other.content()

    # An error from the API (today's token budget used: 429) is shown plainly; what was typed stays.
    spender = get_user_model().objects.get(username="intruder")
    spent = ChatSession.objects.create(session_id="spent", user=spender, workflow_id="wf", run_id="run")
    ChatMessage.objects.create(
        session=spent, seq=2, role="assistant", content="x", created_at=datetime.now(UTC), tokens_in=200_000
    )
    other.goto(f"{site}/")
    send(other, "one more question, please")
    other.get_by_test_id("error").wait_for()
    assert "You have used today's 200,000 tokens" in other.get_by_test_id("error").text_content()
    assert other.get_by_label("Message").input_value() == "one more question, please"
    other.screenshot(path=ARTIFACTS / "chat-error-desktop.png")

    # Ending the chat in one tab closes the composer in both.
    first.get_by_role("button", name="End chat").click()
    second.get_by_test_id("closed-notice").wait_for()
    assert second.get_by_test_id("closed-notice").text_content() == "This chat has ended."
    assert second.get_by_test_id("composer-form").is_hidden()
    assert second.get_by_test_id("session-status").text_content() == "Ended"
    wait_for(lambda: ChatSession.objects.filter(status="ended", user__username="writer").exists(), what="the record")


def test_a_reply_in_markdown_is_rendered_as_it_is_written_its_code_copies_and_a_reload_shows_the_same(
    site, browser, assistant_model
):
    expect = playwright.expect
    page = logged_in(browser, site, "markdown", width=1100)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site)
    assistant_model.script(Reply(MARKDOWN_REPLY, chunk_delay=0.05))
    send(page, "Show me **Markdown**, please")
    reply = message(page, 2)
    text = reply.get_by_test_id("message-text")

    # Rendered while it is written: a paragraph done early stays the same element to the end (no flicker).
    first_paragraph = page.wait_for_function(
        """() => {
            const writing = document.querySelector('[data-seq="2"][data-final="false"]');
            return writing?.querySelector("ol > li") && writing.querySelector(".message__text > p");
        }""",
        timeout=30_000,
    )
    page.screenshot(path=ARTIFACTS / "chat-markdown-streaming-1100px.png")
    expect(reply).to_have_attribute("data-final", "true", timeout=30_000)
    assert first_paragraph.evaluate("p => p.isConnected && p.textContent") == (
        "Here is a short answer, with the guide and inline code."
    )

    # What the user wrote stays text.
    expect(message(page, 1).get_by_test_id("message-text")).to_have_text("Show me **Markdown**, please")
    expect(message(page, 1).locator("strong")).to_have_count(0)

    expect(text.locator("strong")).to_have_text("short")
    expect(text.locator("code").first).to_have_text("inline code")
    expect(text.locator("li")).to_have_count(4)
    expect(text.locator("blockquote")).to_have_text("A quoted line.")
    for name, href in (("the guide", "https://example.org/guide"), ("https://example.com/start",) * 2):
        link = text.get_by_role("link", name=name)
        expect(link).to_have_attribute("href", href)
        expect(link).to_have_attribute("target", "_blank")
        expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(text.locator("table th")).to_have_text(["name", "what", "size"])
    expect(text.locator("table td").nth(2)).to_have_attribute("style", "text-align:right")
    block = text.get_by_test_id("code-block")
    expect(block.get_by_test_id("code-language")).to_have_text("python")
    expect(block.locator("pre code")).to_have_class("language-python")
    block.get_by_role("button", name="Copy").click()
    copy = block.get_by_test_id("code-copy")  # its name changes
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    expect(copy).to_have_text("Copy", timeout=5_000)  # for a moment only
    shape = text.evaluate(SHAPE)
    assert not text.evaluate("t => getComputedStyle(t).whiteSpace.startsWith('pre')")

    # A reload renders the stored reply the same way.
    page.reload()
    expect(text.locator("table")).to_be_visible()
    assert text.evaluate(SHAPE) == shape
    page.screenshot(path=ARTIFACTS / "chat-markdown-1100px.png", full_page=True)

    page.set_viewport_size({"width": 375, "height": 812})
    page.reload()
    expect(text.locator("table")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # the table and the code scroll instead
    assert text.locator("pre").evaluate("pre => pre.scrollWidth > pre.clientWidth")
    text.get_by_test_id("code-block").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "chat-markdown-375px.png")


def test_html_and_a_javascript_link_in_a_reply_stay_text_live_and_after_a_reload(site, browser, assistant_model):
    expect = playwright.expect
    page = logged_in(browser, site, "xss", width=1100)
    assistant_model.script(Reply(XSS_REPLY, chunk_delay=0.02))
    send(page, "Say something nasty")
    reply = message(page, 2)
    text = reply.get_by_test_id("message-text")
    expect(reply).to_have_attribute("data-final", "true", timeout=30_000)

    for moment in ("stored", "reloaded"):
        expect(text.get_by_text('<img src=x onerror="window.__pwned=1">', exact=True)).to_be_visible()
        expect(text.get_by_text("<script>window.__pwned=2</script>", exact=True)).to_be_visible()
        expect(text.locator("img, script")).to_have_count(0)
        expect(text.get_by_role("link")).to_have_count(0)  # a javascript: URL makes no link: its text shows
        text.get_by_text("[x](javascript:window.__pwned=3)").click()
        assert page.evaluate("typeof window.__pwned") == "undefined", moment
        if moment == "stored":
            page.reload()


def test_the_page_follows_the_systems_dark_or_light_setting(site, browser):
    def luminance(page: "playwright.Page", selector: str, prop: str) -> float:
        rgb = page.eval_on_selector(selector, f"e => getComputedStyle(e).{prop}")
        red, green, blue = (int(part) for part in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
        return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255

    seen = {}
    for scheme in ("light", "dark"):
        page = browser.new_context(viewport={"width": 375, "height": 800}, color_scheme=scheme).new_page()
        page.goto(f"{site}/accounts/login/")
        seen[scheme] = (luminance(page, "html", "backgroundColor"), luminance(page, "body", "color"))
        page.screenshot(path=ARTIFACTS / f"login-{scheme}-375px.png")

    assert seen["light"][0] > 0.9 > 0.3 > seen["light"][1]  # a light page, dark text
    assert seen["dark"][0] < 0.15 < 0.7 < seen["dark"][1]  # a dark page, light text


def focused_testid(page: "playwright.Page") -> str | None:
    return page.evaluate("document.activeElement?.dataset.testid ?? null")


def focus_ring(page: "playwright.Page") -> str:
    """The focused element's outline: a visible one is solid and not zero wide."""
    return page.evaluate("(s => `${s.outlineStyle} ${s.outlineWidth}`)(getComputedStyle(document.activeElement))")


def test_a_chat_is_renamed_in_place_with_the_keyboard_and_a_refused_title_stays_with_the_reason(
    site, browser, assistant_model
):
    expect = playwright.expect
    page = logged_in(browser, site, "renamer", width=1100)
    rename = page.get_by_role("button", name="Rename chat")
    expect(rename).to_be_hidden()  # a new chat has no title of its own yet
    assistant_model.script(Reply("Under water, holding hands.", chunk_delay=0.01))
    send(page, "Where do   otters\nsleep at night?")
    expect(message(page, 2)).to_have_attribute("data-final", "true", timeout=30_000)
    session_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    title = page.get_by_test_id("chat-title")
    listed = page.locator(f'[data-testid="session-item"][data-session-id="{session_id}"] .sessions__title')
    expect(title).to_have_text("Where do otters sleep at night?")  # as the server titles it, on one line
    expect(page).to_have_title("Where do otters sleep at night? · Chat")

    # From the composer, back to Rename with the keyboard alone; Enter opens the title as a field, selected.
    for _ in range(8):
        if focused_testid(page) == "rename":
            break
        page.keyboard.press("Shift+Tab")
    assert focused_testid(page) == "rename"
    assert focus_ring(page) == "solid 3px"
    page.keyboard.press("Enter")
    field = page.get_by_role("textbox", name="Chat title")
    expect(field).to_be_focused()
    expect(field).to_have_value("Where do otters sleep at night?")
    expect(page.get_by_role("heading", level=1)).to_have_text("Where do otters sleep at night?")  # to a screen reader
    assert title.evaluate("h => h.getBoundingClientRect().height") <= 1  # the field in its place
    assert focus_ring(page) == "solid 3px"
    assert field.evaluate("f => [f.selectionStart, f.selectionEnd]") == [0, 31]  # all of it, to type over

    # Enter saves: the heading, the document's title and the list say so, and the focus is back on Rename.
    page.keyboard.type("Otters")
    page.keyboard.press("Enter")
    expect(title).to_have_text("Otters")
    expect(page).to_have_title("Otters · Chat")
    expect(listed).to_have_text("Otters")
    expect(rename).to_be_focused()
    wait_for(lambda: ChatSession.objects.get(session_id=session_id).title == "Otters", what="the title stored")

    # Escape cancels: nothing changes, nothing is sent.
    page.keyboard.press("Enter")
    page.keyboard.type("Not this one")
    page.keyboard.press("Escape")
    expect(title).to_have_text("Otters")
    expect(field).to_be_hidden()
    expect(rename).to_be_focused()

    # An empty title is refused: the API's reason beside the field, what was typed kept, the field still open.
    page.keyboard.press("Enter")
    page.keyboard.press("Backspace")
    page.keyboard.type("   ")
    page.keyboard.press("Enter")
    error = page.get_by_test_id("title-error")
    expect(error).to_have_text("title: must not be empty.")
    expect(field).to_have_value("   ")
    expect(field).to_be_focused()
    expect(field).to_have_attribute("aria-invalid", "true")
    assert field.get_attribute("maxlength") == "200"  # longer titles can't be typed
    page.screenshot(path=ARTIFACTS / "chat-rename-error-1100px.png")

    # Leaving the field saves too (Tab here); the focus goes where the user sent it.
    page.keyboard.press("Control+A")
    page.keyboard.type("Sea otters, and where they sleep")
    page.keyboard.press("Tab")
    expect(title).to_have_text("Sea otters, and where they sleep")
    expect(error).to_be_hidden()
    expect(listed).to_have_text("Sea otters, and where they sleep")
    assert focused_testid(page) != "rename"

    # The server renders the new title after a reload.
    page.reload()
    expect(title).to_have_text("Sea otters, and where they sleep")
    expect(page).to_have_title("Sea otters, and where they sleep · Chat")
    expect(listed).to_have_text("Sea otters, and where they sleep")
    assert ChatSession.objects.get(session_id=session_id).title == "Sea otters, and where they sleep"

    # The field and its error, on a phone, light and dark.
    page.set_viewport_size({"width": 375, "height": 700})
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.reload()
        rename.click()
        field.fill("")
        field.press("Enter")
        expect(error).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.screenshot(path=ARTIFACTS / f"chat-rename-error-{scheme}-375px.png")


STORY = "".join(f"Part {i}.\n\n" for i in range(1, 81))  # 80 paragraphs of two chunks each


def at_bottom(page: "playwright.Page") -> bool:
    return page.evaluate("innerHeight + scrollY >= document.documentElement.scrollHeight - 2")


def test_the_composer_grows_with_its_text_and_a_reader_up_the_page_is_offered_a_jump_to_the_latest(
    site, browser, assistant_model
):
    expect = playwright.expect
    page = logged_in(browser, site, "comfort", width=1100)
    page.set_viewport_size({"width": 1100, "height": 600})
    composer = page.get_by_label("Message")
    empty = composer.bounding_box()["height"]

    # It grows with its lines, showing them all, up to 40% of the window's height; then it scrolls.
    composer.fill("\n".join(f"line {i}" for i in range(1, 7)))
    grown = composer.bounding_box()["height"]
    assert grown > empty
    assert composer.evaluate("c => c.scrollHeight <= c.clientHeight")
    composer.fill("\n".join(f"line {i}" for i in range(1, 61)))
    assert composer.bounding_box()["height"] <= 0.4 * 600
    assert composer.evaluate("c => c.scrollHeight > c.clientHeight && getComputedStyle(c).overflowY === 'auto'")
    page.screenshot(path=ARTIFACTS / "chat-composer-grown-1100px.png")
    composer.fill("")
    assert composer.bounding_box()["height"] == empty

    # Sent, it is back to its size. A long reply: the page follows it while the reader stays at the bottom. It stops
    # after 35 paragraphs until the reader has scrolled up, so that the rest is written below them.
    assistant_model.script(Hang(after_chunks=70, text=STORY, chunk_delay=0.02))
    send(page, "Tell me a long story,\nin many parts,\none a line,\nfrom the start\nto the end")
    expect(composer).to_have_value("")
    assert composer.bounding_box()["height"] == empty
    jump = page.get_by_role("button", name="Jump to latest")
    page.wait_for_function("document.querySelectorAll('[data-seq=\"2\"] .message__text p').length >= 30")
    assert at_bottom(page)
    expect(jump).to_be_hidden()

    # Scrolled up to read: the page stays where the reader is, and offers the jump.
    page.mouse.wheel(0, -10_000)
    expect(jump).to_be_visible()
    page.wait_for_function("scrollY === 0")
    written = len(text_of(page, 2))
    assistant_model.release()
    page.wait_for_function(f"document.querySelector('[data-seq=\"2\"] .message__text').textContent.length > {written}")
    assert page.evaluate("scrollY") == 0
    page.screenshot(path=ARTIFACTS / "chat-jump-to-latest-1100px.png")

    # The jump (by keyboard, a real button) leads to the end and goes away; the page follows the reply again.
    jump.focus()
    page.keyboard.press("Enter")
    expect(jump).to_be_hidden()
    assert at_bottom(page)
    expect(page.get_by_label("Message")).to_be_focused()
    expect(message(page, 2)).to_have_attribute("data-final", "true", timeout=30_000)
    expect(message(page, 2).locator(".message__text p").last).to_have_text("Part 80.")
    assert at_bottom(page)
    expect(jump).to_be_hidden()

    page.set_viewport_size({"width": 375, "height": 700})
    page.mouse.wheel(0, -1_000)
    expect(jump).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=ARTIFACTS / "chat-jump-to-latest-375px.png")


def test_messages_say_how_long_ago_they_were_written_and_a_reply_finished_in_a_hidden_tab_marks_its_title(
    site, browser, assistant_model
):
    expect = playwright.expect
    page = logged_in(browser, site, "clock", width=1100)
    page.clock.install()  # the page's own time, to move it on by minutes and days
    page.reload()
    assistant_model.script(Reply("A first reply.", chunk_delay=0.01))
    send(page, "What time is it?")
    expect(message(page, 2)).to_have_attribute("data-final", "true", timeout=30_000)
    times = page.get_by_test_id("message-time")
    expect(times).to_have_text(["just now", "just now"])
    stored = ChatMessage.objects.get(session__user__username="clock", seq=2).created_at
    written = datetime.fromisoformat(times.nth(1).get_attribute("datetime"))
    assert abs(written - stored) < timedelta(milliseconds=1)
    assert str(stored.year) in times.nth(1).get_attribute("title")  # the exact time, on hover

    # Headless Chromium never hides a page: the page is told it is hidden, as a browser tells a tab in the background.
    title = page.title()
    page.evaluate("""() => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
        Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    assistant_model.script(Reply("Written while you were away.", chunk_delay=0.01))
    send(page, "Tell me later")
    expect(message(page, 4)).to_have_attribute("data-final", "true", timeout=30_000)
    expect(page).to_have_title(f"● {title}")
    page.evaluate("""() => {
        delete document.hidden;
        delete document.visibilityState;
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    expect(page).to_have_title(title)

    # Refreshed every minute.
    page.clock.fast_forward("03:00")
    expect(times).to_have_text(["3 min ago"] * 4)
    page.clock.fast_forward("24:00:00")
    expect(times).to_have_text(["yesterday"] * 4)
    page.clock.fast_forward("48:00:00")
    expected = page.evaluate(f"new Date({stored.timestamp() * 1000}).toLocaleDateString(undefined, "
                             "{day: 'numeric', month: 'short'})")  # fmt: skip
    expect(times).to_have_text([expected] * 4)
    assert re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", expected)

    # The stored messages the page arrives with, the same.
    page.reload()
    expect(times).to_have_text([expected] * 4)
    assert times.nth(1).get_attribute("datetime") == written.isoformat()


def test_a_reply_is_regenerated_and_the_one_it_replaces_is_kept_folded_live_and_after_a_reload(
    site, browser, assistant_model
):
    expect = playwright.expect
    page = logged_in(browser, site, "regenerator", width=1100)
    assistant_model.script(Reply("The **first** answer.", chunk_delay=0.02))
    send(page, "Answer me twice")
    expect(message(page, 2)).to_have_attribute("data-final", "true", timeout=30_000)
    regenerate = page.get_by_role("button", name="Regenerate")
    expect(regenerate).to_have_count(1)  # on the last reply only
    expect(message(page, 2).get_by_role("button", name="Regenerate")).to_be_visible()

    # Pressed (by keyboard): the first reply folds away, the new one is written after it, under a seq of its own.
    assistant_model.script(Reply("A *second* answer, written word by word for a while.", chunk_delay=0.1))
    regenerate.focus()
    page.keyboard.press("Enter")
    expect(message(page, 3)).to_have_attribute("data-final", "false")
    expect(regenerate).to_have_count(0)  # nothing to regenerate while a reply is written
    steps = watch_reply(page, 3)
    assert steps[-1] == "A second answer, written word by word for a while."
    assert len([text for text in steps[:-1] if text]) >= 3  # written as it came
    first = message(page, 2)
    expect(first).to_have_attribute("data-status", "replaced")
    fold = first.get_by_test_id("replaced-reply")
    expect(fold.locator("summary")).to_have_text("Earlier answer (replaced)")
    expect(fold).not_to_have_attribute("open", "")
    expect(first.get_by_test_id("message-text")).to_be_hidden()
    expect(first.get_by_role("button", name="Regenerate")).to_have_count(0)
    expect(message(page, 3).get_by_role("button", name="Regenerate")).to_be_visible()
    expect(page.get_by_role("log", name="Conversation").get_by_role("listitem")).to_have_count(3)
    stored = ChatMessage.objects.filter(session__user__username="regenerator").order_by("seq")
    assert [(m.seq, m.role, m.status) for m in stored] == [
        (1, "user", "complete"), (2, "assistant", "replaced"), (3, "assistant", "complete")
    ]  # fmt: skip

    # Unfolded, the earlier answer is its rendered Markdown, as any reply.
    fold.locator("summary").click()
    expect(first.locator(".message__text strong")).to_have_text("first")
    page.screenshot(path=ARTIFACTS / "chat-regenerated-1100px.png")

    # A reload shows the same: the server folds the replaced reply.
    page.reload()
    expect(first.get_by_test_id("replaced-reply").locator("summary")).to_have_text("Earlier answer (replaced)")
    expect(first.get_by_test_id("message-text")).to_be_hidden()
    expect(first.get_by_test_id("message-note")).to_have_count(0)
    first.get_by_test_id("replaced-reply").locator("summary").click()
    expect(first.locator(".message__text strong")).to_have_text("first")
    expect(message(page, 3).locator(".message__text em")).to_have_text("second")
    expect(regenerate).to_have_count(1)
    expect(message(page, 3).get_by_role("button", name="Regenerate")).to_be_visible()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for width in (1100, 375):
            page.set_viewport_size({"width": width, "height": 800})
            page.reload()
            first.get_by_test_id("replaced-reply").locator("summary").click()
            expect(first.get_by_test_id("message-text")).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            if width == 375:
                assert page.get_by_role("navigation", name="Your chats").bounding_box()["height"] < 80  # folded
            page.screenshot(path=ARTIFACTS / f"chat-regenerated-{scheme}-{width}px.png")
    page.emulate_media(color_scheme="light")

    # Refused: the reason is shown, and the button can be pressed again. (A reply started in another tab a moment
    # before, say: a race the test can't make on purpose, so the answer is the contract's 409.)
    page.route(
        "**/regenerate/",
        lambda route: route.fulfill(status=409, json={"detail": "A reply is being written; wait for it to finish."}),
    )
    regenerate.click()
    expect(page.get_by_test_id("error")).to_have_text("A reply is being written; wait for it to finish.")
    expect(regenerate).to_be_enabled()

    # An ended chat offers none.
    page.get_by_role("button", name="End chat").click()
    expect(page.get_by_test_id("closed-notice")).to_be_visible()
    expect(regenerate).to_have_count(0)


def test_a_person_finds_an_earlier_message_with_the_search_box_and_opens_its_chat(site, browser):
    page = logged_in(browser, site, "finder", width=375)
    finder = get_user_model().objects.get(username="finder")
    for session_id, content in [("otters", "Where do <i>sea otters</i> sleep?"), ("bread", "A bread recipe")]:
        session = ChatSession.objects.create(session_id=session_id, user=finder, workflow_id="wf", run_id="run")
        ChatMessage.objects.create(session=session, seq=1, role="user", content=content, created_at=datetime.now(UTC))

    page.reload()
    page.get_by_text("Your chats", exact=True).click()  # folded on a phone
    page.get_by_label("Search your chats").fill("OTTERS")
    page.get_by_label("Search your chats").press("Enter")
    page.wait_for_url(re.compile(r"/search/\?q=OTTERS$"))
    hits = page.get_by_test_id("search-hit")
    expect = playwright.expect
    expect(hits).to_have_count(1)
    expect(hits.locator("mark")).to_have_text("otters")
    expect(hits).to_contain_text("Where do <i>sea otters</i> sleep?")  # the message's text, as text
    assert page.locator("main i").count() == 0
    page.screenshot(path=ARTIFACTS / "chat-search-375px.png")
    hits.get_by_role("link").press("Enter")  # by keyboard
    page.wait_for_url(f"{site}/chat/otters/")
    expect(page.get_by_test_id("message-text").first).to_have_text("Where do <i>sea otters</i> sleep?")


# Records what each live region holds after each change to it, as a screen reader would be told: an element is live
# when its nearest aria-live says polite or assertive, or, with none, when its role is log, status or alert.
HEARD = """
window.__heard = [];
new MutationObserver((records) => {
  const regions = new Set();
  for (const record of records) {
    for (let node = record.target; node; node = node.parentNode) {
      if (node.nodeType !== Node.ELEMENT_NODE) continue;
      const live = node.getAttribute("aria-live");
      if (live) {
        if (live !== "off") regions.add(node);
        break;
      }
      if (["log", "status", "alert"].includes(node.getAttribute("role"))) {
        regions.add(node);
        break;
      }
    }
  }
  for (const region of regions) {
    const text = region.textContent.trim();
    if (text) window.__heard.push([region.dataset.testid || region.getAttribute("role"), text]);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def test_a_screen_reader_hears_each_reply_once_whole_not_a_word_at_a_time(site, browser, assistant_model):
    page = logged_in(browser, site, "listener")
    page.add_init_script(HEARD)
    page.reload()
    words = " ".join(f"part{i}" for i in range(1, 31))
    assistant_model.script(Reply(f"{words}\n\n```python\nprint('hi')\n```", chunk_delay=0.05))
    send(page, "Read me something")
    steps = watch_reply(page, 2)
    assert len(steps) >= 3, steps  # written a few words at a time, on the page

    expect = playwright.expect
    spoken = f"Assistant: {words} print('hi')"  # the code block's text, not its language and Copy button
    expect(page.get_by_test_id("announcer")).to_have_text(spoken)
    page.get_by_role("button", name="End chat").click()
    expect(page.get_by_test_id("announcer")).to_have_text("This chat has ended.")

    heard = page.evaluate("window.__heard")
    replies = [text for _, text in heard if "part1 " in text]
    assert replies == [spoken], heard  # once, whole: never the reply's first words alone
    assert ["announcer", "This chat has ended."] in heard


def test_a_chat_is_deleted_only_once_its_owner_confirms(site, browser, assistant_model):
    page = logged_in(browser, site, "tidier")
    assistant_model.script(Reply("Noted.", chunk_delay=0))
    send(page, "A chat to throw away")
    message(page, 2).and_(page.locator('[data-final="true"]')).wait_for()
    session_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    delete = page.get_by_role("button", name="Delete chat")
    dialog = page.get_by_role("dialog", name="Delete this chat?")
    expect = playwright.expect

    # Asked first, with Cancel focused: Escape, then Cancel, change nothing.
    delete.click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Its messages are removed for good.")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.screenshot(path=ARTIFACTS / "chat-delete-dialog-desktop.png")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(delete).to_be_focused()  # back where it was
    delete.click()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert page.url == f"{site}/chat/{session_id}/"
    assert ChatSession.objects.filter(session_id=session_id).exists()

    # By keyboard: Enter on Delete chat, Tab to the dialog's Delete chat, Enter.
    delete.focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Delete chat")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{site}/")
    expect(page.get_by_test_id("no-sessions")).to_be_visible()  # gone from the list
    assert not ChatSession.objects.filter(session_id=session_id).exists()  # deleted before the page moved on
    assert not ChatMessage.objects.filter(session__session_id=session_id).exists()
    assert page.goto(f"{site}/chat/{session_id}/").status == 404
