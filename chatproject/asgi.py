"""The ASGI application: what `make run`, `manage.py runserver` and production serve (uvicorn).

Two doors in one process. What waits on the session's event log (an event stream, a post that waits for its reply)
runs on the event loop: Django's async views under Django's ASGI handler, minus the thread that handler keeps for
each request, so a wait holds no thread. Every other request is Django as WSGI servers run it, on a pool of
long-lived threads (a2wsgi): under Django's ASGI handler a sync view runs on a new thread per request, with a new
database connection, and the hops between the loop and it cost more CPU than the view itself.
"""

import os
import re
from urllib.parse import parse_qs

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler, StaticFilesHandler
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from chatproject.startup import load_urlconf


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


def on_the_loop(scope: dict) -> bool:
    """Whether the request waits on the event log: a session's event stream, or a message posted with ?wait=true."""
    match = WAITING_PATH.match(scope["path"])
    if match is None:
        return False
    if match["what"] == "events":
        return True
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return scope["method"] == "POST" and query.get("wait") == ["true"]


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
get_asgi_application()  # django.setup()
loop_views = LoopHandler()
pages_and_api = get_wsgi_application()
if settings.DEBUG:  # the pages', the admin's and the API docs' static files, as runserver serves them
    loop_views, pages_and_api = ASGIStaticFilesHandler(loop_views), StaticFilesHandler(pages_and_api)
# Each thread keeps its database connection for DATABASE_CONN_MAX_AGE, as under a threaded WSGI server.
pool = WSGIMiddleware(pages_and_api, workers=settings.WEB_THREADS)
WAITING_PATH = re.compile(r"^/api/sessions/[^/]+/(?P<what>events|messages)/$")
load_urlconf()


async def application(scope: dict, receive, send) -> None:  # noqa: ANN001
    if scope["type"] == "http" and on_the_loop(scope):
        await loop_views(scope, receive, send)
    else:
        await pool(scope, receive, send)
