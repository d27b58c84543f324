"""Settings, read once from the environment (see .env.example for every variable).

A local `.env` (written by `make run` from .env.example) is read first; variables already in the environment win.
DJANGO_ENV_FILE names another file, or none when empty (production settings and the tests read none).
"""

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from chat.conf import chat_settings
from temporal_integration.conf import temporal_settings

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
ENV_FILE = os.environ.get("DJANGO_ENV_FILE", str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    environ.Env.read_env(ENV_FILE, parse_comments=True)


def _read(cast: Callable[..., Any], name: str, default: Any) -> Any:
    """Reads one variable; a value that doesn't parse fails start-up and names the variable."""
    try:
        return cast(name, default=default)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{name}={env.str(name)!r} is not valid: {exc}") from exc


DEBUG: bool = _read(env.bool, "DJANGO_DEBUG", False)

DEV_SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"
SECRET_KEY: str = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it (any long random string), "
            "or set DJANGO_DEBUG=true for local development."
        )
    SECRET_KEY = DEV_SECRET_KEY

ALLOWED_HOSTS: list[str] = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)

INSTALLED_APPS = [
    "chatproject",  # first: its runserver (uvicorn, ASGI) stands in for Django's and staticfiles' (WSGI)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "chat",
    "temporal_integration",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatproject.urls"
WSGI_APPLICATION = "chatproject.wsgi.application"
ASGI_APPLICATION = "chatproject.asgi.application"  # what runserver serves, as production does

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": _read(env.db_url, "DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
# Each web thread and each activity thread keeps its connection for a minute instead of opening one per
# request or activity; the health check replaces a connection that a
# database restart broke before it is used. 0 restores Django's connection per request.
DATABASES["default"]["CONN_MAX_AGE"] = _read(env.int, "DATABASE_CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# The mail the assistant's send_email tool sends: django-environ's email URL (smtp://user:password@host:587/?tls=True,
# consolemail:// prints it to the worker's output).
vars().update(_read(env.email_url, "EMAIL_URL", "consolemail://"))
DEFAULT_FROM_EMAIL: str = env.str("DEFAULT_FROM_EMAIL", default="assistant@localhost")
# Threads per web process serving the pages and the API (chatproject.asgi); the event streams need none.
WEB_THREADS: int = _read(env.int, "WEB_THREADS", 16)
if WEB_THREADS < 1:
    raise ImproperlyConfigured("WEB_THREADS must be at least 1.")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Activities write from several worker threads at once; with SQLite's default deferred
    # transactions they fail with "database is locked". IMMEDIATE takes the write lock up
    # front, so writers queue on `timeout` instead of failing. WAL lets readers (every request's
    # token and ownership reads) go on while the worker commits, and makes a commit one append to
    # the log; synchronous stays FULL, so a commit survives a power cut too.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        transaction_mode="IMMEDIATE",
        timeout=_read(env.float, "SQLITE_BUSY_TIMEOUT", 20.0),
        init_command="PRAGMA journal_mode=WAL;",
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Django's login and logout pages (django.contrib.auth.urls, templates in chat/templates/registration) lead to the
# chat page.
LOGIN_REDIRECT_URL = "chat-new"
LOGOUT_REDIRECT_URL = "login"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header is what turns "not authenticated" into 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "chatproject.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["chatproject.rest.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "chatproject.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "chatproject.rest.StrictPageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Per user; see chat.views for where each applies. The counters live in Django's cache: with several
    # web processes, point CACHES at a shared cache (Redis, Memcached) so they count together.
    "DEFAULT_THROTTLE_RATES": {
        "session_start": env.str("CHAT_THROTTLE_SESSION_START", default="30/min"),
        "message_post": env.str("CHAT_THROTTLE_MESSAGE_POST", default="120/min"),
    },
}
for _name, _rate in [
    ("CHAT_THROTTLE_SESSION_START", REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["session_start"]),
    ("CHAT_THROTTLE_MESSAGE_POST", REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["message_post"]),
]:
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", _rate):
        raise ImproperlyConfigured(f"{_name}={_rate!r} is not a rate such as 30/min (per s, min, hour or day).")

# JSON request bodies above this are refused with 413 before parsing; a message is at most
# CHAT_MESSAGE_MAX_LENGTH characters, so a few bytes per character is plenty.
API_MAX_BODY_BYTES: int = _read(env.int, "API_MAX_BODY_BYTES", 64 * 1024)

SPECTACULAR_SETTINGS = {
    "TITLE": "Chat sessions API",
    "DESCRIPTION": "Every chat session is a durable Temporal workflow. Authenticate with `Authorization: Token <key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's assets from the installed sidecar package, not a CDN: /api/docs/ works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "PREPROCESSING_HOOKS": ["chat.schema.document_session_events"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chat.schema.forbid_unknown_request_fields",
    ],
}

# The apps' own settings (chat.conf, temporal_integration.conf hold each one's default and check): any of them from
# the environment, under its own name.
_casts = {bool: env.bool, int: env.int, float: env.float, str: env.str, list: env.list}
for _name, _default in {**chat_settings.defaults, **temporal_settings.defaults}.items():
    if _name in os.environ and type(_default) in _casts:
        globals()[_name] = _read(_casts[type(_default)], _name, _default)

# What `manage.py run_temporal_worker` hosts, and the schedules it keeps: dotted paths, so another app can add its own.
TEMPORAL_WORKFLOWS = ["chat.workflows.ChatSessionWorkflow", "chat.workflows.ChatMaintenanceWorkflow"]
TEMPORAL_ACTIVITIES = [
    "chat.activities.log_session_start",
    "chat.activities.store_message",
    "chat.activities.persist_message",
    "chat.activities.log_session_end",
    "chat.activities.run_turn",
    "chat.activities.take_model_step",
    "chat.activities.run_tool",
    "chat.activities.finish_turn",
    "chat.activities.mark_replaced",
    "chat.activities.trim_event_log",
]
TEMPORAL_SCHEDULES = ["chat.maintenance.event_retention_schedule"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "chat": {"level": "INFO"},
        "temporal_integration": {"level": "INFO"},
    },
}
