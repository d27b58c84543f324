from django.db import migrations, models

AUTO_TITLE_LENGTH = 60  # chat.models' at the time of this migration


def title_from(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= AUTO_TITLE_LENGTH else line[: AUTO_TITLE_LENGTH - 1].rstrip() + "…"


def titles_from_first_messages(apps, schema_editor):  # noqa: ANN001, ANN201
    ChatSession = apps.get_model("chat", "ChatSession")
    ChatMessage = apps.get_model("chat", "ChatMessage")
    first = ChatMessage.objects.filter(seq=1, role="user", session__title="").values_list("session_id", "content")
    for session_pk, content in first.iterator():
        ChatSession.objects.filter(pk=session_pk).update(title=title_from(content))


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0007_tool_calls"),
    ]

    operations = [
        migrations.AddField(
            model_name="chatsession",
            name="title",
            field=models.CharField(
                blank=True,
                help_text="The chat's name: the start of its first message, until its owner renames it.",
                max_length=200,
            ),
        ),
        migrations.RunPython(titles_from_first_messages, migrations.RunPython.noop),
    ]
