"""POST /api/sessions/{id}/messages/?wait=true: the posted message's reply, once the assistant has written it.

An async view, served beside the event streams (chatproject.asgi): the post itself is the API's own view, run on a
thread for the moment it takes; the wait is a subscription to the session's event log, which holds no thread and
reads no table of its own, so one user's waits never slow another's requests. A user waits on at most
CHAT_REPLY_WAITS_PER_USER replies at once in each web process.
"""

import asyncio
from collections import Counter

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import resolve, set_urlconf
from django.views.decorators.csrf import csrf_exempt

from chat.conf import chat_settings
from chat.events import get_event_log
from chat.exceptions import ReplyPending
from chat.models import ChatEvent
from chat.streams import authenticated_user
from temporal_integration.connections import in_thread

JSON = {"ensure_ascii": False, "separators": (",", ":")}
_waiting: Counter[str] = Counter()  # user id -> replies waited on in this process


async def await_reply(*, session_id: str, user_seq: int, reply_seq: int) -> dict:
    """The stored reply's data, as the API returns a message; ReplyPending after CHAT_REPLY_WAIT_TIMEOUT, or when
    the session ends with the message unanswered."""
    log = get_event_log()
    # Every event of the reply comes after its message's: a turn starts once its message is stored.
    after = await in_thread(log.id_of, session_id, ChatEvent.message_key(user_seq))
    timeout = chat_settings.CHAT_REPLY_WAIT_TIMEOUT
    events = log.subscribe(session_id, after)
    try:
        async with asyncio.timeout(timeout):
            async for event in events:
                if event.type == ChatEvent.Type.MESSAGE and event.data["seq"] == reply_seq:
                    return event.data
                if event.type == ChatEvent.Type.SESSION_ENDED:
                    break
    except TimeoutError:
        pass
    finally:
        await events.aclose()
    raise ReplyPending(session_id, reply_seq, timeout)


@csrf_exempt  # the API's view checks CSRF for session-authenticated posts, as DRF does
async def message_post_and_wait(request: HttpRequest, session_id: str) -> HttpResponse:
    user = await in_thread(authenticated_user, request)
    key = str(user.pk) if user is not None else ""
    limit = chat_settings.CHAT_REPLY_WAITS_PER_USER
    if user is not None and _waiting[key] >= limit:
        response = JsonResponse(
            {"detail": f"You are already waiting for {limit} replies. Follow this session's events instead "
             f"(/api/sessions/{session_id}/events/), or post again once one of them is answered."},
            status=429,
        )  # fmt: skip
        response["Retry-After"] = "1"
        return response
    _waiting[key] += 1
    try:
        posted = await in_thread(_post_without_waiting, request)
        if posted.status_code != 201 or posted.data.get("reply_seq") is None:
            return posted
        try:
            reply = await await_reply(
                session_id=session_id, user_seq=posted.data["seq"], reply_seq=posted.data["reply_seq"]
            )
        except ReplyPending as exc:
            return JsonResponse({"detail": str(exc)}, status=504, json_dumps_params=JSON)
        return JsonResponse({**reply, "reply_seq": None}, status=201, json_dumps_params=JSON)
    finally:
        _waiting[key] -= 1
        if not _waiting[key]:
            del _waiting[key]


def _post_without_waiting(request: HttpRequest) -> HttpResponse:
    """The API's own view for this request, which stores the message and answers at once."""
    set_urlconf(None)  # the API's URLconf, for the links it writes
    query = request.GET.copy()
    del query["wait"]
    request.GET = query
    request.META["QUERY_STRING"] = query.urlencode()
    match = resolve(request.path_info)
    response = match.func(request, *match.args, **match.kwargs)
    response.render()
    return response
