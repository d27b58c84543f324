"""The ASGI application: what `make run`, `manage.py runserver` and production serve (uvicorn).

Three doors in one process, one pool of long-lived threads behind them:
- What waits on the session's event log (an event stream, a post that waits for its reply) runs on the event loop:
  Django's async views under Django's ASGI handler, minus the thread that handler keeps for each request, so a wait
  holds no thread.
- Starting a session and posting a message (the API's busiest writes) go through `AsyncDoor`: Django's middleware and
  the API's DRF view (authentication, permissions, throttles, validation, the database checks) on a thread of the
  pool, once; the Temporal call the view prepared is then awaited on the loop, with a client of the loop's own.
- Every other request is Django as WSGI servers run it, on the pool (a2wsgi): under Django's ASGI handler a sync view
  runs on a new thread per request, with a new database connection, and each middleware's hops between the loop and
  a thread cost more CPU than the view itself.
"""

import asyncio
import io
import os
import re
from concurrent.futures import Executor
from urllib.parse import parse_qs

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler, StaticFilesHandler
from django.core import signals
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler, ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix
from django.utils.log import log_response

from chatproject.startup import load_urlconf

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
get_asgi_application()  # django.setup(), before the project's modules

from chatproject.api import DeferredResponse  # noqa: E402


class LoopHandler(ASGIHandler):
    """Django's ASGI handler for the views that wait on the event log (chatproject.loop_urls), without the thread it
    keeps for each request.

    Django runs a request's sync parts (the request_started receivers, a response's close) on a thread of the
    request's own, kept until the response ends: one thread per open stream or wait. Here they run on the process's
    one shared sync thread; the views' own sync steps run on the loop's pool.
    """

    urlconf = "chatproject.loop_urls"

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        request.urlconf = self.urlconf
        return await super().get_response_async(request)


class DoorRequest(ASGIRequest):
    can_defer = True  # the view may answer with a DeferredResponse, which the door awaits


class AsyncDoor(ASGIHandler):
    """Django's handler, with its middleware as WSGI servers run it, on a thread of `executor` once a request; a
    DeferredResponse the view answers with is then finished here, on the loop."""

    request_class = DoorRequest

    def __init__(self, executor: Executor) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.executor = executor

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001
        set_script_prefix(get_script_prefix(scope))
        body = await _bounded_body(receive, settings.API_MAX_BODY_BYTES + 1)
        if body is None:  # the client went away
            return
        request, response = self.create_request(scope, io.BytesIO(body))
        if request is not None:
            response = await asyncio.get_running_loop().run_in_executor(self.executor, self._respond, request)
            if isinstance(response, DeferredResponse):
                await response.finish()
                if response.status_code >= 400:
                    log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        await self.send_response(response, send)

    def _respond(self, request: HttpRequest) -> HttpResponseBase:
        signals.request_started.send(sender=self.__class__, scope=request.scope)
        response = self.get_response(request)
        response._handler_class = self.__class__
        response.close()  # request_finished, here on the thread: its database work is done, a deferred part has none
        return response


async def _bounded_body(receive, limit: int) -> bytes | None:  # noqa: ANN001
    """The body, or its first `limit` bytes when it is longer (the API's parser then refuses it: 413); None if the
    client disconnected."""
    body = bytearray()
    while len(body) < limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(body[:limit])


API_PATH = re.compile(r"^/api/sessions/(?:[^/]+/(?P<what>events|messages)/)?$")


def door_for(scope: dict):  # noqa: ANN201
    """Which door serves the request: the loop's views (it waits on the event log), AsyncDoor (a start, or a message
    posted without ?wait=true) or the pool."""
    match = API_PATH.match(scope["path"]) if scope["type"] == "http" else None
    if match is None:
        return pool
    if match["what"] == "events":
        return loop_views
    if scope["method"] != "POST":
        return pool
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if match["what"] == "messages" and query.get("wait") == ["true"]:
        return loop_views
    return async_door


loop_views = LoopHandler()
pages_and_api = get_wsgi_application()
if settings.DEBUG:  # the pages', the admin's and the API docs' static files, as runserver serves them
    loop_views, pages_and_api = ASGIStaticFilesHandler(loop_views), StaticFilesHandler(pages_and_api)
# Each thread keeps its database connection for DATABASE_CONN_MAX_AGE, as under a threaded WSGI server.
pool = WSGIMiddleware(pages_and_api, workers=settings.WEB_THREADS)
async_door = AsyncDoor(pool.executor)  # the same threads, so the same database connections
load_urlconf()


async def application(scope: dict, receive, send) -> None:  # noqa: ANN001
    await door_for(scope)(scope, receive, send)
