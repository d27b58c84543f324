"""Production settings: the base settings, plus refusals of what must never run in production.

DJANGO_SETTINGS_MODULE=chatproject.settings_production
"""

import os

from django.core.exceptions import ImproperlyConfigured

# A developer's local .env must not configure production; DJANGO_ENV_FILE=/path reads one on purpose.
os.environ.setdefault("DJANGO_ENV_FILE", "")

from chatproject.settings import *  # noqa: F403
from chatproject.settings import ALLOWED_HOSTS, DEBUG, DEV_SECRET_KEY, MIDDLEWARE, SECRET_KEY, STORAGES, _read, env

if DEBUG:
    raise ImproperlyConfigured("DJANGO_DEBUG is on; production settings refuse to start with it. Unset it.")
if SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to a random string of at least 32 characters.")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list the host names this service answers to.")

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto; DJANGO_SECURE_COOKIES=false only for plain-HTTP tests.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _read(env.bool, "DJANGO_SECURE_COOKIES", True)
SECURE_CONTENT_TYPE_NOSNIFF = True

# Static files served by the web process itself (WhiteNoise, right after the security middleware): hashed and
# compressed by `manage.py collectstatic`, which the Procfile's release step runs.
MIDDLEWARE = [MIDDLEWARE[0], "whitenoise.middleware.WhiteNoiseMiddleware", *MIDDLEWARE[1:]]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}}
