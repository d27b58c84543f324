import os

from django.core.asgi import get_asgi_application

from chatproject.startup import load_urlconf

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
application = get_asgi_application()
load_urlconf()
