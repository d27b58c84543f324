from django.urls import re_path
from rest_framework.routers import SimpleRouter

from chat.serializers import SESSION_ID_REGEX
from chat.streams import session_events
from chat.views import SessionViewSet

router = SimpleRouter()
router.register("sessions", SessionViewSet, basename="session")

urlpatterns = [
    re_path(rf"^sessions/(?P<session_id>{SESSION_ID_REGEX})/events/$", session_events, name="session-events"),
    *router.urls,
]
