"""The chat page's screenshots for README (issue 20): one PNG per feature under docs/screenshots/, each the feature
light and dark, on a desktop (1100 px wide) and a phone (375 px), side by side with captions.

    make run                          # in another terminal: the demo model, the demo user
    make screenshots                  # or: .venv/bin/python -m devtools.screenshots [--base-url http://127.0.0.1:8000]

It drives the page as a person would, through Debian's headless Chromium (Playwright's sync API): it logs in, starts
a few chats and waits for the demo model's replies (a Markdown reply when a message mentions "markdown", a
search_chats call on "search my chats for …", a send_email call waiting for approval on "email me a summary"), then
opens each state in four browser contexts (light and dark, desktop and phone) and shoots the window. The four shots
become one PNG through the same browser: a small HTML page shows them as data: URLs, and its screenshot is the file.
At the end it deletes the chats it started (through the page's Delete, confirming), unless --keep.
"""

import argparse
import base64
import html
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"  # Debian's, as the browser tests use
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]  # fmt: skip
TIMEOUT_MS = 30_000  # for any one thing the page should do (a demo reply takes a few seconds)


@dataclass(frozen=True)
class Shot:
    scheme: str  # Playwright's color_scheme: "light" or "dark"
    width: int
    height: int
    caption: str


# In the composed image's order: a row per theme, the desktop beside the phone.
SHOTS = (
    Shot("light", 1100, 800, "Light · desktop"),
    Shot("light", 375, 812, "Light · 375 px"),
    Shot("dark", 1100, 800, "Dark · desktop"),
    Shot("dark", 375, 812, "Dark · 375 px"),
)


@dataclass
class Feature:
    name: str  # the file's name: docs/screenshots/<name>.png
    title: str
    note: str  # one line under the title
    path: str  # the page's path under the base URL
    arrange: Callable[[Page], None] = lambda page: None  # brings the opened page to the state shown


@dataclass
class Chats:
    """The chats the script started, by what they are for."""

    ids: dict[str, str] = field(default_factory=dict)


# Driving the page, as tests/test_chat_page.py does.


def message(page: Page, seq: int, *, final: bool = False) -> Any:
    final_attr = '[data-final="true"]' if final else ""
    return page.locator(f'[data-testid="message"][data-seq="{seq}"]{final_attr}')


def send(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def start_chat(page: Page, base_url: str, text: str) -> str:
    """Starts a chat from the new-chat page with `text`, waits for the reply, and answers the chat's id."""
    page.goto(f"{base_url}/")
    send(page, text)
    page.wait_for_url("**/chat/*/")
    message(page, 2, final=True).wait_for()
    return page.url.rstrip("/").rsplit("/", 1)[1]


def settled(page: Page) -> None:
    """Two animation frames: what the script changed last is painted."""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def log_in(browser: Browser, base_url: str, username: str, password: str) -> dict:
    """The storage state (cookies) of a context in which `username` logged in through the login page."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/")
    state = context.storage_state()
    context.close()
    return state


def prepare(page: Page, base_url: str, chats: Chats) -> None:
    """Starts the chats the features show, through the page."""
    # Earlier messages for the search page and for the assistant's search_chats to find.
    chats.ids["pasta"] = start_chat(page, base_url, "What's a quick pasta recipe for a weeknight?")
    chats.ids["pesto"] = start_chat(page, base_url, "Which pasta shapes go best with pesto?")

    chats.ids["markdown"] = start_chat(page, base_url, "What does Markdown look like in a reply?")
    page.locator('[data-seq="2"] .message__text table').wait_for()
    page.locator('[data-seq="2"] [data-testid="code-copy"]').wait_for()

    # A tool that ran (its card done), then one waiting for approval.
    chats.ids["tools"] = start_chat(page, base_url, "search my chats for pasta")
    page.locator('[data-seq="2"] [data-testid="tool-card"][data-status="done"]').wait_for()
    send(page, "email me a summary")
    page.locator('[data-seq="4"] [data-testid="tool-card"][data-status="awaiting_approval"]').wait_for()

    # Another answer to the last message: the first is kept, folded away.
    chats.ids["regenerate"] = start_chat(page, base_url, "Suggest a name for a grey cat.")
    message(page, 2).get_by_test_id("regenerate").click()
    message(page, 3, final=True).wait_for()
    page.locator('[data-seq="2"][data-status="replaced"] [data-testid="replaced-reply"]').wait_for()
    # Renamed, so that the search finds a chat by its name too (not only by the messages in it).
    page.get_by_test_id("rename").click()
    page.get_by_test_id("title-input").fill("A grey cat called Pasta?")
    page.get_by_test_id("title-input").press("Enter")
    page.get_by_test_id("chat-title").filter(has_text="A grey cat called Pasta?").wait_for()


def show_copied(page: Page) -> None:
    """The Markdown reply's table and code block in view, its Copy button clicked ("Copied")."""
    reply = message(page, 2, final=True)
    reply.locator("table").wait_for()
    # The table near the window's top (below the sticky composer there is nothing to see).
    page.evaluate(
        """() => {
            const table = document.querySelector('[data-seq="2"] .message__text table');
            window.scrollTo(0, table.getBoundingClientRect().top + window.scrollY - 70);
        }"""
    )
    copy = reply.get_by_test_id("code-copy")
    copy.click()
    reply.get_by_test_id("code-copy").filter(has_text="Copied").wait_for()
    page.mouse.move(0, 0)  # no hover on the button


def show_tools(page: Page) -> None:
    page.get_by_test_id("tool-approve").wait_for()
    message(page, 2).locator('[data-testid="tool-card"][data-status="done"]').wait_for()


def show_regenerated(page: Page) -> None:
    message(page, 2).get_by_test_id("replaced-reply").wait_for()
    message(page, 3, final=True).get_by_test_id("regenerate").wait_for()


def show_renaming(page: Page) -> None:
    page.get_by_test_id("rename").click()
    page.get_by_test_id("title-input").fill("Weeknight pasta")


def leave_renaming(page: Page) -> None:
    """Escape: the typed title is not saved (leaving the field would save it)."""
    if page.get_by_test_id("title-input").is_visible():
        page.get_by_test_id("title-input").press("Escape")


def show_search(page: Page) -> None:
    page.get_by_test_id("search-hit").first.wait_for()
    page.get_by_test_id("search-chat").first.wait_for()


def show_delete(page: Page) -> None:
    page.get_by_test_id("delete").click()
    page.get_by_test_id("delete-dialog").wait_for()


def show_new(page: Page) -> None:
    page.get_by_test_id("empty").wait_for()


def features(chats: Chats) -> list[Feature]:
    def chat(name: str) -> str:
        return f"/chat/{chats.ids[name]}/"

    return [
        Feature("markdown", "A Markdown reply",
                "The demo model asked about Markdown: a list, a table, a code block, its Copy button just clicked.",
                chat("markdown"), show_copied),
        Feature("tools", "Tools",
                "search_chats ran (its card done, the result folded); send_email waits for Approve or Deny.",
                chat("tools"), show_tools),
        Feature("regenerate", "Regenerate",
                "The first answer, replaced, folded under “Earlier answer (replaced)” above the new one.",
                chat("regenerate"), show_regenerated),
        Feature("rename", "Rename",
                "Rename opens the title in place, a new one typed: Enter saves, Esc cancels.",
                chat("pasta"), show_renaming),
        Feature("search", "Search",
                "The search box's page for “pasta”: chats named so, then messages that hold it, the word marked.",
                "/search/?q=pasta", show_search),
        Feature("delete", "Delete, with confirmation",
                "Delete chat asks first, Cancel focused: Escape or Cancel keeps the chat.",
                chat("pesto"), show_delete),
        Feature("new-chat", "A new chat",
                "The empty page a new chat starts from; the user's chats on the left (folded on a phone).",
                "/", show_new),
    ]  # fmt: skip


# Shooting and composing.


def shoot(browser: Browser, state: dict, url: str, shot: Shot, arrange: Callable[[Page], None]) -> bytes:
    context = browser.new_context(
        storage_state=state,
        viewport={"width": shot.width, "height": shot.height},
        device_scale_factor=1,
        color_scheme=shot.scheme,
        permissions=["clipboard-read", "clipboard-write"],  # the Copy button's
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_load_state("load")
        arrange(page)
        settled(page)
        return page.screenshot()
    finally:
        leave_renaming(page)
        context.close()


SHEET = """<!doctype html>
<html><head><meta charset="utf-8"><style>
  body {{ margin: 0; background: #e4e7ec; color: #1d2330; font-family: system-ui, sans-serif; }}
  .sheet {{ display: inline-block; padding: 14px 18px 18px; }}
  h1 {{ margin: 0 0 2px; font-size: 17px; }}
  .note {{ margin: 0 0 12px; font-size: 13px; color: #454c5a; }}
  .grid {{ display: grid; grid-template-columns: auto auto; gap: 12px 16px; align-items: start; }}
  figure {{ margin: 0; }}
  figcaption {{ margin: 0 0 4px; font-size: 12px; font-weight: 600; color: #454c5a; }}
  img {{ display: block; border: 1px solid #aab2c0; }}
</style></head>
<body><div class="sheet"><h1>{title}</h1><p class="note">{note}</p><div class="grid">{figures}</div></div></body></html>
"""


def compose(browser: Browser, feature: Feature, images: list[bytes]) -> bytes:
    """The four shots in one PNG: a row per theme, each with its caption, under the feature's title."""
    figures = "".join(
        f"<figure><figcaption>{html.escape(shot.caption)}</figcaption>"
        f'<img alt="" width="{shot.width}" height="{shot.height}" '
        f'src="data:image/png;base64,{base64.b64encode(image).decode()}"></figure>'
        for shot, image in zip(SHOTS, images, strict=True)
    )
    content = SHEET.format(title=html.escape(feature.title), note=html.escape(feature.note), figures=figures)
    context = browser.new_context(viewport={"width": 1600, "height": 1800}, device_scale_factor=1)
    try:
        page = context.new_page()
        page.set_content(content, wait_until="load")
        return page.locator(".sheet").screenshot()
    finally:
        context.close()


def delete_chats(page: Page, base_url: str, chats: Chats) -> None:
    """Deletes the script's chats through the page: Delete chat, confirmed."""
    for session_id in chats.ids.values():
        page.goto(f"{base_url}/chat/{session_id}/")
        page.get_by_test_id("delete").click()
        page.get_by_test_id("delete-confirm").click()
        page.wait_for_url(f"{base_url}/")


def warn_without_emoji_font() -> None:
    """Without a font that has 🔧 (U+1F527) the tool cards show an empty box where the page has an emoji."""
    if not shutil.which("fc-list"):
        return
    if not subprocess.run(["fc-list", ":charset=1f527"], capture_output=True).stdout.strip():
        print("warning: no emoji font: the tool cards' 🔧 will be a box (apt-get install fonts-noto-color-emoji)")


def wait_for_site(base_url: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/accounts/login/", timeout=5):
                return
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                sys.exit(f"{base_url} does not answer ({exc}): start `make run` in another terminal first.")
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="where `make run` serves the page")
    parser.add_argument("--username", default="demo", help="make run's demo user (create_demo_user)")
    parser.add_argument("--password", default="demo")
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go (default: docs/screenshots/)")
    parser.add_argument("--only", nargs="*", help="just these features (by file name)")
    parser.add_argument("--keep", action="store_true", help="keep the chats the script started")
    args = parser.parse_args()
    base_url = args.base_url.rstrip("/")
    wait_for_site(base_url)
    warn_without_emoji_font()
    args.out.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        state = log_in(browser, base_url, args.username, args.password)
        driver_context = browser.new_context(storage_state=state, viewport={"width": 1100, "height": 800})
        driver_context.set_default_timeout(TIMEOUT_MS)
        driver = driver_context.new_page()
        chats = Chats()
        try:
            prepare(driver, base_url, chats)
            for feature in features(chats):
                if args.only and feature.name not in args.only:
                    continue
                images = [shoot(browser, state, base_url + feature.path, shot, feature.arrange) for shot in SHOTS]
                path = args.out / f"{feature.name}.png"
                path.write_bytes(compose(browser, feature, images))
                print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {path.stat().st_size:,} bytes")
        finally:
            if not args.keep:
                delete_chats(driver, base_url, chats)
            browser.close()


if __name__ == "__main__":
    main()
