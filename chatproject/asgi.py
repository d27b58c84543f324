"""The ASGI application: what `make run` and production serve (uvicorn).

Two doors in one process. A session's event stream (`GET /api/sessions/{id}/events/`) is Django's async view under
Django's ASGI handler, minus the thread that handler keeps for each request: an open stream holds no thread. Every
other request is Django as WSGI servers run it, on a pool of long-lived threads (a2wsgi): under Django's ASGI
handler a sync view runs on a new thread per request, with a new database connection, and the hops between the loop
and it cost more CPU than the view itself.
"""

import os
import re

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler, StaticFilesHandler
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler
from django.core.wsgi import get_wsgi_application

from chatproject.startup import load_urlconf


class StreamHandler(ASGIHandler):
    """Django's ASGI handler without the thread it keeps for each request.

    Django runs a request's sync parts (the request_started receivers, a response's close) on a thread of the
    request's own, kept until the response ends: for an event stream, one thread per open stream. Here they run on
    the process's one shared sync thread;
    the stream view's one sync step of its own, the auth, runs on the loop's pool and closes its connection.
    """

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
get_asgi_application()  # django.setup()
streams = StreamHandler()
pages_and_api = get_wsgi_application()
if settings.DEBUG:  # the pages', the admin's and the API docs' static files, as runserver serves them
    streams, pages_and_api = ASGIStaticFilesHandler(streams), StaticFilesHandler(pages_and_api)
# Each thread keeps its database connection for DATABASE_CONN_MAX_AGE, as under a threaded WSGI server.
pool = WSGIMiddleware(pages_and_api, workers=settings.WEB_THREADS)
STREAM_PATH = re.compile(r"^/api/sessions/[^/]+/events/$")
load_urlconf()


async def application(scope: dict, receive, send) -> None:  # noqa: ANN001
    if scope["type"] == "http" and STREAM_PATH.match(scope["path"]):
        await streams(scope, receive, send)
    else:
        await pool(scope, receive, send)
