"""The URLs that the ASGI application serves on its event loop rather than its thread pool (chatproject.asgi): the
ones that wait on the event log. Errors answer as the rest of the API does."""

from django.urls import re_path

from chat.serializers import SESSION_ID_REGEX
from chat.streams import session_events
from chat.waiting import message_post_and_wait

urlpatterns = [
    re_path(rf"^api/sessions/(?P<session_id>{SESSION_ID_REGEX})/events/$", session_events),
    re_path(rf"^api/sessions/(?P<session_id>{SESSION_ID_REGEX})/messages/$", message_post_and_wait),
]

handler400 = "chatproject.api.bad_request"
handler403 = "chatproject.api.permission_denied"
handler404 = "chatproject.api.not_found"
handler500 = "chatproject.api.server_error"
