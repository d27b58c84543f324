from rest_framework import serializers

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SESSION_ID_RULE = "must be 1 to 64 letters, digits, '_' or '-'."


class StrictRegexField(serializers.RegexField):
    """A RegexField that takes only strings: DRF's CharField would turn 5 into "5"."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StartSessionSerializer(serializers.Serializer):
    session_id = StrictRegexField(
        SESSION_ID_PATTERN,
        required=False,
        error_messages={
            "invalid": SESSION_ID_RULE,
            "blank": SESSION_ID_RULE,
            "not_a_string": "must be a string.",
        },
    )

    def validate(self, attrs: dict) -> dict:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
        return attrs


class StartedSessionSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    user_id = serializers.CharField()
    workflow_id = serializers.CharField()
    run_id = serializers.CharField()
    status = serializers.CharField()
    temporal_ui_url = serializers.URLField()
