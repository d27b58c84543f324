"""The chat page as Django serves it (the browser's side is tests/test_chat_page.py): who may see what, what the
page shows of a session, and where its event stream takes over from the stored messages."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat import selectors
from chat.events import Event, get_event_log
from chat.models import ChatMessage, ChatSession, title_from

pytestmark = pytest.mark.django_db
NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def owner():
    return get_user_model().objects.create_user("owner", password="owner-password")


@pytest.fixture
def browser(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def session_of(user, session_id: str, *messages: tuple[str, str, str], status: str = "active") -> ChatSession:
    """A session record with its messages, each (role, content, status), numbered from 1."""
    session = ChatSession.objects.create(
        session_id=session_id,
        user=user,
        workflow_id=f"chat-session-{session_id}",
        run_id="run",
        status=status,
        started_at=NOON,
        message_count=len(messages),
        # As the first message's projection titles it (chat.projections.message_record).
        title=next((title_from(content) for role, content, _ in messages if role == "user"), ""),
    )
    for seq, (role, content, message_status) in enumerate(messages, start=1):
        ChatMessage.objects.create(
            session=session,
            seq=seq,
            role=role,
            content=content,
            status=message_status,
            created_at=NOON + timedelta(seconds=seq),
        )
    return session


def message_event(session_id: str, seq: int, role: str) -> Event:
    data = {"seq": seq, "role": role, "content": f"m{seq}", "created_at": "2026-11-28T12:00:00Z"}
    return Event(session_id, "message", data, key=f"message:{seq}")


def delta(session_id: str, turn: int, text: str) -> Event:
    return Event(session_id, "delta", {"turn": turn, "attempt": 1, "text": text})


@pytest.mark.parametrize("path", ["/", "/chat/any-session/"])
def test_a_logged_out_visitor_is_sent_to_the_login_page(path):
    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_logging_in_leads_to_the_chat_page_and_logging_out_back_to_the_login_page(owner):
    client = Client(enforce_csrf_checks=True)
    login_page = client.get("/accounts/login/?next=/")
    token = login_page.context["csrf_token"]

    credentials = {"username": "owner", "password": "owner-password", "next": "/"}
    logged_in = client.post("/accounts/login/", {**credentials, "csrfmiddlewaretoken": token})
    page = client.get("/")
    logged_out = client.post("/accounts/logout/", {"csrfmiddlewaretoken": page.context["csrf_token"]})

    assert (logged_in.status_code, logged_in["Location"]) == (302, "/")
    assert page.status_code == 200
    assert 'data-testid="composer"' in page.text
    assert (logged_out.status_code, logged_out["Location"]) == (302, "/accounts/login/")
    assert client.get("/").status_code == 302


def test_a_wrong_password_is_told_plainly(owner):
    response = Client().post("/accounts/login/", {"username": "owner", "password": "nope"})

    assert response.status_code == 200
    assert "That username and password don't match." in response.text


def test_the_page_lists_the_users_own_sessions_newest_first_titled_by_their_first_message(owner, browser):
    session_of(owner, "older", ("user", "What is Temporal?", "complete"), status="ended")
    newer = session_of(owner, "newer", ("user", "Tell me a joke", "complete"), ("assistant", "No.", "complete"))
    newer.started_at = NOON + timedelta(hours=1)
    newer.save()
    session_of(get_user_model().objects.create_user("someone-else"), "theirs", ("user", "secret", "complete"))

    page = browser.get("/").text

    assert page.index("Tell me a joke") < page.index("What is Temporal?")
    assert "secret" not in page
    assert "theirs" not in page
    assert 'badge--ended">Ended' in page


def test_a_conversation_shows_its_messages_in_order_and_marks_replies_that_stopped_or_failed(owner, browser):
    session_of(
        owner,
        "s1",
        ("user", "first <b>question</b>", "complete"),
        ("assistant", "an answer cut short", "stopped"),
        ("user", "second", "complete"),
        ("assistant", "", "failed"),
    )

    response = browser.get("/chat/s1/")

    assert response.status_code == 200
    page = response.text
    assert "first &lt;b&gt;question&lt;/b&gt;" in page  # text, never markup
    assert page.index("an answer cut short") < page.index("second")
    assert page.count('data-testid="message"') == 4
    assert 'data-seq="2" data-role="assistant" data-status="stopped"' in page
    assert ">Stopped</p>" in page
    assert "The assistant could not answer. Send another message to try again." in page
    assert 'data-testid="composer-form">' in page  # open: the composer is not hidden


def test_another_users_session_answers_404_and_shows_nothing_of_it(browser):
    session_of(get_user_model().objects.create_user("someone-else"), "theirs", ("user", "secret", "complete"))

    response = browser.get("/chat/theirs/")

    assert response.status_code == 404
    assert "No such chat" in response.text
    assert "secret" not in response.text


def test_a_session_whose_record_is_not_written_yet_asks_temporal_and_says_when_it_cannot(browser):
    response = browser.get("/chat/not-recorded-yet/")  # tests' Temporal address is 127.0.0.1:9: nothing listens

    assert response.status_code == 503
    assert "Can't open this chat right now" in response.text


@pytest.mark.parametrize(
    ("status", "notice"),
    [
        ("ended", "This chat has ended."),
        ("timed_out", "This chat ended after a while without messages."),
    ],
)
def test_a_closed_session_says_so_and_closes_the_composer(owner, browser, status, notice):
    session_of(owner, "closed", ("user", "hello", "complete"), status=status)

    page = browser.get("/chat/closed/").text

    assert f'<p class="chat__closed" data-testid="closed-notice">{notice}</p>' in page
    assert 'data-testid="composer-form" hidden' in page


def test_staff_get_links_to_the_sessions_admin_page_and_its_workflow_in_the_temporal_web_ui(owner, browser):
    session = session_of(owner, "s1", ("user", "hello", "complete"))
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    staff_client = Client()
    staff_client.force_login(staff)
    session.user = staff
    session.save()

    staff_page = staff_client.get("/chat/s1/").text
    session.user = owner
    session.save()
    owner_page = browser.get("/chat/s1/").text

    assert f'href="/admin/chat/chatsession/{session.pk}/change/"' in staff_page
    assert 'href="http://localhost:8233/namespaces/default/workflows/chat-session-s1"' in staff_page
    assert '<span class="chat__staff" data-testid="staff-links">' in staff_page
    assert '<span class="chat__staff" data-testid="staff-links" hidden>' in owner_page


def test_the_stream_takes_over_after_the_newest_event_when_every_message_is_answered(owner):
    session_of(owner, "s1", ("user", "q", "complete"), ("assistant", "a", "complete"))
    log = get_event_log()
    ids = log.append("s1", [message_event("s1", 1, "user"), delta("s1", 2, "a"), message_event("s1", 2, "assistant")])

    shown = selectors.session_conversation(user=owner, session_id="s1")

    assert [m.seq for m in shown.messages] == [1, 2]
    assert shown.after == ids[-1]


def test_a_reply_being_written_is_streamed_from_its_question_on_so_no_word_is_missed(owner):
    session_of(owner, "s1", ("user", "q1", "complete"), ("assistant", "a1", "complete"), ("user", "q2", "complete"))
    log = get_event_log()
    first = log.append("s1", [message_event("s1", 1, "user"), message_event("s1", 2, "assistant")])
    [question, *_] = log.append("s1", [message_event("s1", 3, "user"), delta("s1", 4, "half "), delta("s1", 4, "way")])

    shown = selectors.session_conversation(user=owner, session_id="s1")

    assert shown.after == question
    assert shown.after != first[-1]
    later = log.read("s1", shown.after)
    assert "".join(e.data["text"] for e in later if e.type == "delta") == "half way"


def test_a_session_without_events_streams_from_its_start(owner, browser):
    session_of(owner, "s1", ("user", "q1", "complete"))  # its reply's turn has not begun

    shown = selectors.session_conversation(user=owner, session_id="s1")

    assert shown.after is None
    assert 'data-after=""' in browser.get("/chat/s1/").text


def test_the_search_finds_what_the_user_wrote_in_all_their_chats_marked_and_escaped(owner, browser):
    pasta = session_of(
        owner, "pasta", ("user", "A <b>Pasta</b> recipe, please", "complete"), ("assistant", "pasta!", "complete")
    )
    pasta.title = "Dinner"
    pasta.save()
    session_of(
        owner,
        "later",
        ("user", "hello", "complete"),
        ("assistant", "hi", "complete"),
        ("user", "more pasta", "complete"),
    )
    session_of(get_user_model().objects.create_user("someone-else"), "theirs", ("user", "secret pasta", "complete"))

    page = browser.get("/search/", {"q": "  PASTA "}).text
    none = browser.get("/search/", {"q": "risotto"}).text
    empty = browser.get("/search/").text
    chat_page = browser.get("/").text

    hits = re.findall(r'data-testid="search-hit" data-session-id="([^"]+)" data-seq="(\d+)"', page)
    assert hits == [("later", "3"), ("pasta", "1")]  # newest first; what the user wrote, not the replies; not theirs
    assert "A &lt;b&gt;<mark>Pasta</mark>&lt;/b&gt; recipe, please" in page  # marked, and escaped
    assert ">Dinner</span>" in page  # the chat's title
    assert 'value="PASTA"' in page
    chats = re.findall(r'data-testid="search-chat" data-session-id="([^"]+)"', page)
    assert chats == []  # no chat is named after pasta: "Dinner" and "hello" are the titles
    assert "None of your messages contains “risotto”." in none
    assert "Search your chats" in empty
    assert 'data-testid="search-input"' in chat_page  # the box is in every page's list of chats
    assert browser.get("/search/", {"q": "x" * 5000}).status_code == 200


def test_the_search_finds_a_chat_by_the_name_its_owner_gave_it(owner, browser):
    dinner = session_of(owner, "dinner", ("user", "what should I cook", "complete"))
    dinner.title = "Dinner <ideas>"
    dinner.save()
    session_of(owner, "said", ("user", "Dinner at eight?", "complete"))  # found by its message already
    theirs = session_of(get_user_model().objects.create_user("someone-else"), "theirs", ("user", "dinner?", "complete"))
    theirs.title = "Dinner plans"
    theirs.save()

    page = browser.get("/search/", {"q": "DINNER"}).text

    assert re.findall(r'data-testid="search-chat" data-session-id="([^"]+)"', page) == ["dinner"]  # not theirs
    assert "<mark>Dinner</mark> &lt;ideas&gt;" in page  # marked, and escaped
    assert re.findall(r'data-testid="search-hit" data-session-id="([^"]+)"', page) == ["said"]
