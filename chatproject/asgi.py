"""The ASGI application: what `make run` and production serve (uvicorn).

Two doors in one process. A session's event stream (`GET /api/sessions/{id}/events/`) is Django's async view under
Django's ASGI handler: an open stream holds no thread of a pool. Every other request is Django as WSGI servers run
it, on a pool of long-lived threads (a2wsgi): under Django's ASGI handler a sync view runs on a new thread per
request, with a new database connection, and the hops between the loop and it cost more CPU than the view itself
(docs/benchmarks.md measures both).
"""

import os
import re

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler, StaticFilesHandler
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

from chatproject.startup import load_urlconf

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
streams = get_asgi_application()
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
