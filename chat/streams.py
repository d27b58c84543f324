"""GET /api/sessions/{id}/events/: the session's events as Server-Sent Events.

An async view: under an ASGI server an open stream holds no thread, only a subscription to the process's event
hub. `Last-Event-ID` (which browsers' EventSource sends when they reconnect) or `?after=` resumes after that event,
with no gap and no duplicate.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.settings import api_settings

from chat import selectors
from chat.events import InvalidEventId, get_event_log
from chat.exceptions import SessionNotFound, TemporalUnavailable, WorkflowUnreadable
from chat.models import ChatEvent

# A comment line this often keeps proxies and load balancers from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
# How long a browser waits before reconnecting a dropped stream.
RETRY_MILLISECONDS = 1000


def authenticated_user(request: HttpRequest) -> AbstractBaseUser | None:
    """The caller, by DRF token or login session as the rest of the API authenticates (its authentication classes);
    None if not authenticated (or refused: the API's own view then gives the reason)."""
    authenticators = [authenticator() for authenticator in api_settings.DEFAULT_AUTHENTICATION_CLASSES]
    try:
        user = Request(request, authenticators=authenticators).user
    except APIException:
        return None
    return user if user is not None and user.is_authenticated else None


def _authorize(request: HttpRequest, session_id: str) -> JsonResponse | None:
    """None when the caller may follow the session; else the error answer."""
    try:
        user = authenticated_user(request)
        if user is None:
            response = JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
            response["WWW-Authenticate"] = "Token"
            return response
        try:
            selectors.session_require_owner(user=user, session_id=session_id)  # also before its record is written
        except SessionNotFound as exc:
            return JsonResponse({"detail": str(exc)}, status=404)
        except (TemporalUnavailable, WorkflowUnreadable) as exc:  # asked only while the record is not written yet
            response = JsonResponse({"detail": str(exc)}, status=503)
            response["Retry-After"] = "1"
            return response
        return None
    finally:
        # Otherwise the request's connection would stay open for as long as the stream; the stream reads through
        # the event hub's own.
        connection.close()


@csrf_exempt  # GET only: any other method answers a JSON 405, not CSRF's HTML page
async def session_events(request: HttpRequest, session_id: str) -> HttpResponse:
    if request.method != "GET":
        return JsonResponse({"detail": f'Method "{request.method}" not allowed.'}, status=405)
    # On the loop's pool: the auth is self-contained (it closes its connection), so it needs no thread of its own.
    refused = await sync_to_async(_authorize, thread_sensitive=False)(request, session_id)
    if refused is not None:
        return refused
    after = request.headers.get("Last-Event-ID") or request.GET.get("after") or None
    if after is not None:
        try:
            get_event_log().sort_key(after)
        except InvalidEventId as exc:
            return JsonResponse({"detail": str(exc)}, status=400)
    response = StreamingHttpResponse(_stream(session_id, after), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events on as they come
    return response


async def _stream(session_id: str, after: str | None) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    events = aiter(get_event_log().subscribe(session_id, after))
    next_event = asyncio.ensure_future(anext(events))
    try:
        while True:
            done, _ = await asyncio.wait({next_event}, timeout=KEEPALIVE_SECONDS)
            if not done:
                yield b": keepalive\n\n"
                continue
            event = next_event.result()
            yield event.to_sse()
            if event.type == ChatEvent.Type.SESSION_ENDED:
                return
            next_event = asyncio.ensure_future(anext(events))
    except StopAsyncIteration:
        return
    finally:
        next_event.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await next_event
        if hasattr(events, "aclose"):
            await events.aclose()
