from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        from chat.conf import chat_settings

        chat_settings.check()  # a wrong setting fails start-up, naming it
