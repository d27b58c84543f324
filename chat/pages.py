"""The chat page: the user's sessions and one conversation, server-rendered; chat/static/chat/chat.js follows
the conversation's event stream and talks to the API (session auth and CSRF, as Django does them)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from chat import selectors
from chat.conf import chat_settings
from chat.exceptions import SessionNotFound, TemporalUnavailable, WorkflowUnreadable
from chat.models import ChatMessage, ChatSession

CLOSED_NOTICES = {
    ChatSession.Status.ENDED: "This chat has ended.",
    ChatSession.Status.TIMED_OUT: "This chat ended after a while without messages.",
}
# The words the page's script shows for what the stream tells it, from here only (the template hands them over).
SCRIPT_TEXT = {
    "status_labels": dict(ChatSession.Status.choices),
    "closed_notices": CLOSED_NOTICES,
    "reply_notes": {ChatMessage.Status.STOPPED: "Stopped", ChatMessage.Status.FAILED: ChatMessage.FAILED_REPLY},
}


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
        "session": session,
        "status": status,
        "status_label": ChatSession.Status(status).label,
        "closed_notice": CLOSED_NOTICES.get(status, ""),
        "max_length": chat_settings.CHAT_MESSAGE_MAX_LENGTH,
        "title": _title(shown),
        "script_text": SCRIPT_TEXT,
    }
    if request.user.is_staff and session is not None:
        context["admin_url"] = reverse("admin:chat_chatsession_change", args=[session.pk])
    return render(request, "chat/page.html", context)


def _title(shown: selectors.Conversation | None) -> str:
    if shown is None:
        return "New chat"
    first = next((m.content for m in shown.messages if m.role == ChatMessage.Role.USER), "")
    return first or "Chat"
