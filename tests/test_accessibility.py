"""The accessibility audit: axe-core (through axe-playwright-python) over the pages people use, light and dark,
desktop and 375 px. No serious or critical violation may pass."""

import os

import pytest
from axe_playwright_python.sync_playwright import Axe

from devtools.model_server import CallTools, Reply, ToolCall
from tests.conftest import CHROMIUM
from tests.test_chat_page import browser, logged_in, message, send, site  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"),
]

BLOCKING = {"serious", "critical"}
MARKDOWN = (
    "Here is **bold**, `code` and [a link](https://example.com/guide).\n\n- one\n- two\n\n> a quote\n\n"
    "| name | size |\n|---|--:|\n| alpha | 1 |\n\n```python\nprint('hello')\n```"
)


def blocking(page: object) -> list[str]:
    """The serious and critical violations axe finds on the page as it is now, each with where."""
    found = Axe().run(page).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[node['target'] for node in v['nodes']][:3]}"
        for v in found
        if v["impact"] in BLOCKING
    ]


def test_no_page_has_a_serious_or_critical_accessibility_violation(site, browser, assistant_model):  # noqa: F811
    found: dict[str, list[str]] = {}
    for scheme in ("light", "dark"):
        login = browser.new_context(color_scheme=scheme).new_page()
        login.goto(f"{site}/accounts/login/")
        found[f"login, {scheme}"] = blocking(login)
    empty = logged_in(browser, site, "axe-empty", width=375)
    found["empty chat, 375 px"] = blocking(empty)

    assistant_model.script(
        Reply(MARKDOWN, chunk_delay=0.005),
        CallTools((ToolCall("send_email", {"subject": "S", "body": "B"}),), text="I'll email it."),
    )
    page = logged_in(browser, site, "axe-chat")
    send(page, "show me some Markdown")
    message(page, 2).and_(page.locator('[data-final="true"]')).wait_for()
    send(page, "email me a summary")
    page.get_by_test_id("tool-approve").wait_for()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for width in (1400, 375):
            page.set_viewport_size({"width": width, "height": 900})
            found[f"chat with Markdown and an approval card, {scheme}, {width} px"] = blocking(page)
    page.get_by_role("button", name="Delete chat").click()
    page.get_by_role("dialog").wait_for()
    found["Delete's confirmation, dark, 375 px"] = blocking(page)
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Rename chat").click()
    page.get_by_label("Chat title").wait_for()
    found["chat being renamed, dark, 375 px"] = blocking(page)
    page.goto(f"{site}/search/?q=markdown")
    page.get_by_test_id("search-hit").first.wait_for()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        found[f"search, {scheme}, 375 px"] = blocking(page)

    assert found == {name: [] for name in found}
