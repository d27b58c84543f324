"""The ASGI application: what `make run` and production serve (uvicorn), so event streams hold no thread."""

import os

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

from chatproject.startup import load_urlconf

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
# Under ASGI each request's sync code runs on a thread of its own, so a connection kept per thread would be opened
# for every request and never reused (Django's docs: disable persistent connections under ASGI). The worker, whose
# activity threads live long, keeps them.
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
application = get_asgi_application()
if settings.DEBUG:  # the admin's and the API docs' static files, as runserver serves them (WhiteNoise in production)
    application = ASGIStaticFilesHandler(application)
load_urlconf()
