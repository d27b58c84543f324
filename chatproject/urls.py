from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("chat.urls")),
]

handler404 = "chatproject.api.not_found"
handler500 = "chatproject.api.server_error"
