"""The chat page: the user's sessions and one conversation, server-rendered; chat/static/chat/chat.js follows
the conversation's event stream and talks to the API (session auth and CSRF, as Django does them)."""

import json
from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from chat import selectors
from chat.conf import chat_settings
from chat.exceptions import SessionNotFound, TemporalUnavailable, WorkflowUnreadable
from chat.models import TITLE_LENGTH, ChatMessage, ChatSession, ChatToolCall
from chat.tools import send_email, snippet
from chat.types import ToolCallStatus

CLOSED_NOTICES = {
    ChatSession.Status.ENDED: "This chat has ended.",
    ChatSession.Status.TIMED_OUT: "This chat ended after a while without messages.",
}
# What a tool call that waits for the user's approval says it is about to do; `{name}` is the tool's name.
TOOL_REQUESTS = {send_email.name: "The assistant wants to send an email with these arguments."}
TOOL_REQUEST = "The assistant asks to run {name}."
# What a screen reader hears after such a request (the page's announcer).
TOOL_APPROVE_HINT = "Approve or deny it on its card in the conversation."
# What a reply that didn't end complete says under its text; a replaced one is folded away under these words.
REPLY_NOTES = {
    ChatMessage.Status.STOPPED: "Stopped",
    ChatMessage.Status.FAILED: ChatMessage.FAILED_REPLY,
    ChatMessage.Status.REPLACED: "Earlier answer (replaced)",
}
# The words the page's script shows for what the stream tells it, from here only (the template hands them over).
SCRIPT_TEXT = {
    "status_labels": dict(ChatSession.Status.choices),
    "closed_notices": CLOSED_NOTICES,
    "reply_notes": REPLY_NOTES,
    "tool_status_labels": dict(ChatToolCall.Status.choices),
    "tool_finished": [status.value for status in ToolCallStatus if status.finished],
    "tool_requests": TOOL_REQUESTS,
    "tool_request": TOOL_REQUEST,
    "tool_approve_hint": TOOL_APPROVE_HINT,
}


@dataclass(frozen=True)
class ToolCard:
    """A tool call as its card shows it, the same as chat.js draws one from the event stream."""

    call_id: str
    name: str
    args: str
    status: str
    status_label: str
    result: str
    request: str  # what the assistant asks for, while the call awaits approval; else empty


@dataclass(frozen=True)
class ShownMessage:
    """A stored message as the page shows it, as chat.js shows one from the stream."""

    message: ChatMessage
    tool_cards: list[ToolCard]
    note: str  # under a reply that stopped or failed
    fold: str  # the summary a replaced reply is folded under; else empty


def tool_card(call: ChatToolCall) -> ToolCard:
    awaiting = call.status == ChatToolCall.Status.AWAITING_APPROVAL
    return ToolCard(
        call_id=call.call_id,
        name=call.name,
        args=args_text(call.args),
        status=call.status,
        status_label=call.get_status_display(),
        result=call.result,
        request=TOOL_REQUESTS.get(call.name, TOOL_REQUEST.format(name=call.name)) if awaiting else "",
    )


def args_text(args: object) -> str:
    """A call's arguments, compactly: `name: <JSON value>` a line (chat.js's argsText writes the same)."""
    if isinstance(args, str):  # not JSON, as the model sent them
        return args
    if isinstance(args, dict):
        return "\n".join(f"{name}: {_json(value)}" for name, value in args.items())
    return _json(args)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))  # as JavaScript's JSON.stringify


# The most hits the search page shows.
SEARCH_HITS = 50


@dataclass(frozen=True)
class Marked:
    """A text cut around a match, for the template to mark `match`."""

    before: str
    match: str
    after: str

    @classmethod
    def of(cls, text: str, query: str) -> "Marked":
        at = text.lower().find(query.lower())
        if at < 0:  # whitespace folded differently: shown unmarked
            return cls(text, "", "")
        end = at + len(query)
        return cls(text[:at], text[at:end], text[end:])


@dataclass(frozen=True)
class SearchHit:
    """A message the search found, its snippet cut around the match."""

    session: ChatSession
    seq: int
    text: Marked


@login_required
def search(request: HttpRequest) -> HttpResponse:
    """The user's chats whose title contains a text, then their own messages containing it, newest first, each
    linking to its chat."""
    query = " ".join(request.GET.get("q", "").split())[:200]
    chats, hits = [], []
    if query:
        hits = [
            SearchHit(message.session, message.seq, Marked.of(snippet(message.content, query), query))
            for message in selectors.messages_matching(user=request.user, query=query, limit=SEARCH_HITS)
        ]
        # A chat's title is its first message's start unless renamed: a chat listed with its messages is not again.
        listed = {hit.session.session_id for hit in hits}
        chats = [
            (chat, Marked.of(chat.title, query))
            for chat in selectors.sessions_titled(user=request.user, query=query, limit=SEARCH_HITS, excluding=listed)
        ]
    context = {
        "query": query,
        "chats": chats,
        "hits": hits,
        "most": SEARCH_HITS,
        "sessions": selectors.sessions_listed(user=request.user),
    }
    return render(request, "chat/search.html", context)


@login_required
def new_chat(request: HttpRequest) -> HttpResponse:
    return _page(request, None)


@login_required
def conversation(request: HttpRequest, session_id: str) -> HttpResponse:
    try:
        shown = selectors.session_conversation(user=request.user, session_id=session_id)
    except SessionNotFound:  # another user's session too: the page doesn't tell which
        return render(request, "chat/not_found.html", {"session_id": session_id}, status=404)
    except (TemporalUnavailable, WorkflowUnreadable) as exc:  # only asked while the record is not written yet
        return render(request, "chat/unavailable.html", {"detail": str(exc)}, status=503)
    return _page(request, shown)


def _page(request: HttpRequest, shown: selectors.Conversation | None) -> HttpResponse:
    session = shown.session if shown else None
    status = session.status if session else ChatSession.Status.ACTIVE
    context = {
        "sessions": selectors.sessions_listed(user=request.user),
        "conversation": shown,
        "shown_messages": _shown_messages(shown),
        "session": session,
        "status": status,
        "status_label": ChatSession.Status(status).label,
        "closed_notice": CLOSED_NOTICES.get(status, ""),
        "max_length": chat_settings.CHAT_MESSAGE_MAX_LENGTH,
        "title_max_length": TITLE_LENGTH,
        "title": _title(shown),
        "script_text": SCRIPT_TEXT,
    }
    if request.user.is_staff and session is not None:
        context["admin_url"] = reverse("admin:chat_chatsession_change", args=[session.pk])
    return render(request, "chat/page.html", context)


def _shown_messages(shown: selectors.Conversation | None) -> list[ShownMessage]:
    """Each stored message with the cards of the tool calls its reply made, in call order, and its note or fold."""
    if shown is None:
        return []
    replies = [m.seq for m in shown.messages if m.role == ChatMessage.Role.ASSISTANT]
    calls = selectors.tool_calls_by_reply(session_id=shown.session_id, reply_seqs=replies) if replies else {}
    return [
        ShownMessage(
            message=m,
            tool_cards=[tool_card(call) for call in calls.get(m.seq, [])],
            note="" if m.status == ChatMessage.Status.REPLACED else REPLY_NOTES.get(m.status, ""),
            fold=REPLY_NOTES[m.status] if m.status == ChatMessage.Status.REPLACED else "",
        )
        for m in shown.messages
    ]


def _title(shown: selectors.Conversation | None) -> str:
    if shown is None:
        return "New chat"
    if shown.session is not None and shown.session.title:
        return shown.session.title
    first = next((m.content for m in shown.messages if m.role == ChatMessage.Role.USER), "")
    return first or "Chat"
