from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from chatproject import api
from chatproject.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[AllowAny]), name="docs"),
    path("api/", include("chat.urls")),
    # Any other path under /api/ answers JSON, in DEBUG too (where Django would render its HTML 404 page), whatever
    # the method (exempt from CSRF, whose refusal is an HTML page: there is nothing here to protect).
    re_path(r"^api/", csrf_exempt(api.not_found)),
    path("healthz", healthz, name="healthz"),
    # In development the login page names the demo user that `make run` creates.
    path("accounts/login/", LoginView.as_view(extra_context={"demo_hint": settings.DEBUG}), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("chat.page_urls")),
]

handler400 = "chatproject.api.bad_request"
handler403 = "chatproject.api.permission_denied"
handler404 = "chatproject.api.not_found"
handler500 = "chatproject.api.server_error"
