import os

from django.core.wsgi import get_wsgi_application

from chatproject.startup import load_urlconf

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
application = get_wsgi_application()
load_urlconf()
