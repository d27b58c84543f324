from functools import cache
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from django.http import QueryDict
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chat.conf import chat_settings
from chat.models import TITLE_LENGTH, ChatMessage, ChatSession, ChatToolCall

SESSION_ID_REGEX = "[A-Za-z0-9_-]{1,64}"  # also the URLs' (chat.views)
SESSION_ID_PATTERN = f"^{SESSION_ID_REGEX}$"
SESSION_ID_RULE = "must be 1 to 64 letters, digits, '_' or '-'."
WAIT_RULE = "must be true or false."


def _require_str(field: serializers.Field, data: object) -> None:
    # DRF's CharField turns 5 into "5"; a wrong type is a client error here.
    if not isinstance(data, str):
        field.fail("not_a_string")
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from JSON's \ud800: no database or Temporal payload takes it
        field.fail("not_utf8")


class StrictRegexField(serializers.RegexField):
    def to_internal_value(self, data: object) -> str:
        _require_str(self, data)
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: object) -> str:
        _require_str(self, data)
        return super().to_internal_value(data)


def _escaped(chars: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in chars)


# "Not empty" as the workflow means it (content.strip()), written so that Python and JSON Schema's
# ECMA regexes read it alike: no NUL anywhere, and at least one character that isn't whitespace.
# Every whitespace character lies at or below U+3000 (tests/test_api.py checks it against all of Unicode); scanning
# only that far keeps this module's import fast.
WHITESPACE_LIMIT = 0x3000
_WHITESPACE = _escaped("".join(c for c in map(chr, range(WHITESPACE_LIMIT + 1)) if c.isspace()))
CONTENT_PATTERN = f"^[^\\u0000]*[^{_WHITESPACE}\\u0000][^\\u0000]*$"


class NotBlankValidator(RegexValidator):
    """Publishes CONTENT_PATTERN in the schema; judges only emptiness (NUL has DRF's own check and message)."""

    def __call__(self, value: str) -> None:
        if not value.strip():
            raise DjangoValidationError(self.message, code=self.code)


class NoNulValidator(RegexValidator):
    """Publishes "no NUL" in the schema (a client, or schemathesis, then knows it is refused); judges nothing: NUL has
    DRF's own check and message."""

    def __init__(self) -> None:
        super().__init__("^[^\\u0000]*$")

    def __call__(self, value: str) -> None:
        pass


STRING_ERRORS = {"not_a_string": "must be a string.", "not_utf8": "must be valid Unicode text."}


class StrictSerializer(serializers.Serializer):
    """Refuses fields it doesn't know, so a misspelt field is an error rather than silently ignored."""

    def validate(self, attrs: dict) -> dict:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
        return attrs


def content_field(**kwargs: object) -> "StrictCharField":
    """A message's text: non-empty, at most CHAT_MESSAGE_MAX_LENGTH characters, stored exactly as sent."""
    return StrictCharField(
        trim_whitespace=False,
        max_length=chat_settings.CHAT_MESSAGE_MAX_LENGTH,
        validators=[NotBlankValidator(CONTENT_PATTERN, "must not be empty.")],
        error_messages={
            "blank": "must not be empty.",
            "max_length": f"must be at most {chat_settings.CHAT_MESSAGE_MAX_LENGTH} characters.",
            **STRING_ERRORS,
        },
        **kwargs,
    )


class StartSessionSerializer(StrictSerializer):
    session_id = StrictRegexField(
        SESSION_ID_PATTERN,
        required=False,
        error_messages={"invalid": SESSION_ID_RULE, "blank": SESSION_ID_RULE, **STRING_ERRORS},
    )
    content = content_field(
        required=False,
        help_text="The first message: it rides on the start (one round trip), and the assistant's reply follows "
        "on the session's event stream.",
    )


class SessionSerializer(serializers.ModelSerializer):
    temporal_ui_url = serializers.URLField(read_only=True)

    class Meta:
        model = ChatSession
        fields = [
            *["session_id", "title", "status", "message_count", "started_at", "last_activity_at", "ended_at"],
            *["workflow_id", "temporal_ui_url"],
        ]


class LiveStateSerializer(serializers.Serializer):
    status = serializers.CharField()
    message_count = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    last_activity_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    idle_timeout_seconds = serializers.FloatField()
    writing_reply = serializers.IntegerField(
        allow_null=True, required=False, help_text="The seq of the assistant's reply being written, if one is."
    )
    replies_pending = serializers.IntegerField(
        required=False, help_text="User messages whose reply is not written yet, the one being written included."
    )
    awaiting_approval = serializers.CharField(
        allow_null=True,
        required=False,
        help_text="The id of the tool call that waits for the user's approval, if one does.",
    )


class SessionDetailSerializer(SessionSerializer):
    live = serializers.SerializerMethodField(
        help_text="The workflow's own state while the session is open; null once it has closed or while Temporal "
        "can't be asked."
    )

    class Meta(SessionSerializer.Meta):
        fields = [*SessionSerializer.Meta.fields, "live"]

    def get_live(self, session: ChatSession) -> dict | None:
        state = self.context.get("live")
        return LiveStateSerializer(state).data if state else None


@cache
def _representer(serializer_class: type[serializers.BaseSerializer]) -> serializers.BaseSerializer:
    return serializer_class(context={})


def represent(serializer_class: type[serializers.BaseSerializer], instance: object) -> dict[str, Any]:
    """`serializer_class(instance).data`, from one instance of the class whose fields are built once. A serializer
    builds its fields for every instance (a ModelSerializer from its model's, each time): that was ~15% of the
    worker's CPU per turn (`bench.profile turns --gil`) and ~0.2 ms of every start's and message's. For serializers
    that read no context; the shared instance only reads."""
    return _representer(serializer_class).to_representation(instance)


class ToolCallSerializer(serializers.ModelSerializer):
    turn = serializers.IntegerField(source="reply_seq", help_text="The seq of the reply whose turn made the call.")
    args = serializers.JSONField(help_text="The arguments as the model sent them (a string when they were not JSON).")
    decided_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, help_text="Who approved or denied it (calls that need approval)."
    )

    class Meta:
        model = ChatToolCall
        fields = [
            *["call_id", "turn", "name", "args", "status", "result", "needs_approval"],
            *["decided_by", "decided_at", "reason", "created_at", "finished_at"],
        ]


class MessageSerializer(serializers.ModelSerializer):
    tool_calls = serializers.SerializerMethodField(help_text="An assistant's reply: the tools it called, in order.")

    class Meta:
        model = ChatMessage
        fields = ["seq", "role", "content", "created_at", "status", "model", "tokens_in", "tokens_out", "tool_calls"]

    @extend_schema_field(ToolCallSerializer(many=True))
    def get_tool_calls(self, message: ChatMessage) -> list:
        if message.role != ChatMessage.Role.ASSISTANT:
            return []
        by_reply = self.context.get("tool_calls")  # a page of messages reads its calls in one query
        if by_reply is None:
            calls = ChatToolCall.objects.filter(session_id=message.session_id, reply_seq=message.seq)
        else:
            calls = by_reply.get(message.seq, [])
        return [represent(ToolCallSerializer, call) for call in calls]


class SessionEndedSerializer(serializers.Serializer):
    """The `session_ended` event's data."""

    status = serializers.CharField()
    ended_at = serializers.DateTimeField()


class PostedMessageSerializer(MessageSerializer):
    """A posted message, with the seq of its reply; or, with ?wait=true, the reply itself (reply_seq null)."""

    reply_seq = serializers.SerializerMethodField(
        help_text="The seq the assistant's reply will take (follow it on the event stream); null for a reply."
    )

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "reply_seq"]

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_reply_seq(self, message: object) -> int | None:
        return getattr(message, "reply_seq", None)


class StartedSessionSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    user_id = serializers.CharField()
    workflow_id = serializers.CharField()
    run_id = serializers.CharField()
    status = serializers.CharField()
    temporal_ui_url = serializers.URLField()
    message = PostedMessageSerializer(allow_null=True, help_text="The first message, when one rode on the start.")


class RegenerationSerializer(serializers.Serializer):
    reply_seq = serializers.IntegerField(help_text="The seq the new reply takes: follow it on the event stream.")
    replaces = serializers.IntegerField(help_text="The reply it replaces, now marked `replaced`.")


class StopSerializer(serializers.Serializer):
    stopped = serializers.BooleanField(help_text="Whether a reply was being written (and is now stopped).")


class WaitSerializer(serializers.Serializer):
    """The `wait` query parameter: absent, `true` or `false`, given once."""

    wait = serializers.ChoiceField(["true", "false"], required=False, error_messages={"invalid_choice": WAIT_RULE})

    @classmethod
    def read(cls, params: QueryDict) -> bool:
        values = params.getlist("wait")
        if len(values) > 1:
            raise serializers.ValidationError({"wait": [f"{WAIT_RULE} Give it once."]})
        payload = cls(data={"wait": values[0]} if values else {})
        payload.is_valid(raise_exception=True)
        return payload.validated_data.get("wait") == "true"


class PostMessageSerializer(StrictSerializer):
    client_message_id = StrictRegexField(
        SESSION_ID_PATTERN,
        required=False,
        help_text="Your id for this message. Retrying a post with the same id never stores it twice: "
        "send one whenever you may retry (after a timeout or a 503).",
        error_messages={"invalid": SESSION_ID_RULE, "blank": SESSION_ID_RULE, **STRING_ERRORS},
    )
    content = content_field()


class RenameSerializer(StrictSerializer):
    """PATCH's body: only the title changes (an empty body changes nothing)."""

    title = StrictCharField(
        required=False,
        max_length=TITLE_LENGTH,
        help_text="The chat's new name (surrounding whitespace is dropped).",
        validators=[NotBlankValidator(CONTENT_PATTERN, "must not be empty.")],
        error_messages={
            "blank": "must not be empty.",
            "max_length": f"must be at most {TITLE_LENGTH} characters.",
            **STRING_ERRORS,
        },
    )


class DecisionSerializer(StrictSerializer):
    reason = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=1000,
        help_text="Why (a denial's reason reaches the model: “the user declined: <reason>”).",
        validators=[NoNulValidator()],
        error_messages=STRING_ERRORS,
    )


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ValidationErrorSerializer(ErrorSerializer):
    errors = serializers.DictField(required=False, help_text="The same problems, by field (absent for malformed JSON).")
