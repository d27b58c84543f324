from django.urls import re_path

from chat import pages
from chat.serializers import SESSION_ID_REGEX

urlpatterns = [
    re_path(r"^$", pages.new_chat, name="chat-new"),
    re_path(r"^search/$", pages.search, name="chat-search"),
    re_path(rf"^chat/(?P<session_id>{SESSION_ID_REGEX})/$", pages.conversation, name="chat-conversation"),
]
