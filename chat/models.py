import json

from django.conf import settings
from django.db import models
from django.utils import timezone

from chat.types import EventType, MessageStatus, Role, SessionStatus, ToolCallStatus
from temporal_integration.conf import get_config

TITLE_LENGTH = 200
# A chat's first message gives it a title this long at most, on one line.
AUTO_TITLE_LENGTH = 60


def title_from(content: str) -> str:
    """A chat's title from its first message: its first characters, on one line."""
    line = " ".join(content.split())
    return line if len(line) <= AUTO_TITLE_LENGTH else line[: AUTO_TITLE_LENGTH - 1].rstrip() + "…"


class ChatSession(models.Model):
    """The database's projection of one session workflow, written only by its activities."""

    class Status(models.TextChoices):
        ACTIVE = SessionStatus.ACTIVE.value, "Active"
        ENDED = SessionStatus.ENDED.value, "Ended"
        TIMED_OUT = SessionStatus.TIMED_OUT.value, "Timed out"

    session_id = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="chat_sessions")
    title = models.CharField(
        max_length=TITLE_LENGTH,
        blank=True,
        help_text="The chat's name: the start of its first message, until its owner renames it.",
    )
    workflow_id = models.CharField(max_length=255)
    run_id = models.CharField(max_length=64, help_text="The run that started the session.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    message_count = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now, help_text="When the session's workflow started.")
    last_activity_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who ended the session: its owner, or a staff member in the admin. Empty when it timed out.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["user", "-started_at"])]
        permissions = [("end_chatsession", "Can end chat sessions (through their workflows)")]

    def __str__(self) -> str:
        return self.session_id

    @property
    def temporal_ui_url(self) -> str:
        """The session's workflow in the Temporal Web UI: its latest run, after any continue-as-new."""
        return get_config().workflow_ui_url(self.workflow_id)


class ChatMessage(models.Model):
    """One message of a session, stored under the sequence number its workflow gave it."""

    class Role(models.TextChoices):
        USER = Role.USER.value, "User"
        ASSISTANT = Role.ASSISTANT.value, "Assistant"

    class Status(models.TextChoices):
        COMPLETE = MessageStatus.COMPLETE.value, "Complete"
        STOPPED = MessageStatus.STOPPED.value, "Stopped"
        FAILED = MessageStatus.FAILED.value, "Failed"
        REPLACED = MessageStatus.REPLACED.value, "Replaced"

    # What a client shows for a reply that failed (the `turn_failed` event's detail, and the chat page's note).
    FAILED_REPLY = "The assistant could not answer. Send another message to try again."

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    created_at = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.COMPLETE, help_text="How an assistant's reply ended."
    )
    model = models.CharField(max_length=200, blank=True, help_text="The model that wrote an assistant's reply.")
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="unique_message_seq_per_session")]

    def __str__(self) -> str:
        return f"#{self.seq}"


class ChatEvent(models.Model):
    """One entry of a session's event log (chat.events.DatabaseEventLog): what its SSE clients are sent.

    The primary key is the event's id: global, so one query reads new events of many sessions at once.
    """

    class Type(models.TextChoices):
        MESSAGE = EventType.MESSAGE.value, "Message stored"
        DELTA = EventType.DELTA.value, "Reply text written"
        RESET = EventType.RESET.value, "Reply restarted"
        TOOL_CALL = EventType.TOOL_CALL.value, "Tool called"
        TOOL_RESULT = EventType.TOOL_RESULT.value, "Tool call ended"
        TURN_FAILED = EventType.TURN_FAILED.value, "Turn failed"
        SESSION_ENDED = EventType.SESSION_ENDED.value, "Session ended"

    # No index of its own: the two below lead with the session.
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="events", db_index=False)
    type = models.CharField(max_length=16, choices=Type.choices)
    data = models.JSONField()
    key = models.CharField(max_length=100, blank=True, help_text="Appended once per session; most events have none.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["session", "id"], name="chat_event_session_id")]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "key"], condition=~models.Q(key=""), name="unique_event_key_per_session"
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.pk}"

    @staticmethod
    def message_key(seq: int) -> str:
        """The key of a stored message's event: appended once, whoever stores the message how often."""
        return f"message:{seq}"


class ChatToolCall(models.Model):
    """A tool call the assistant asked for in a reply: its arguments, its result, and who approved or denied it.

    Written only by the worker's activities; the workflow's history carries the call's id and name, never these.
    The call id is the idempotency key of its effect: a retried attempt finds the row and does not run it again.
    """

    class Status(models.TextChoices):
        REQUESTED = ToolCallStatus.REQUESTED.value, "Requested"
        AWAITING_APPROVAL = ToolCallStatus.AWAITING_APPROVAL.value, "Awaiting approval"
        RUNNING = ToolCallStatus.RUNNING.value, "Running"
        DONE = ToolCallStatus.DONE.value, "Done"
        FAILED = ToolCallStatus.FAILED.value, "Failed"
        DENIED = ToolCallStatus.DENIED.value, "Denied"
        EXPIRED = ToolCallStatus.EXPIRED.value, "Expired"
        UNKNOWN = ToolCallStatus.UNKNOWN.value, "Unknown outcome"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="tool_calls")
    call_id = models.CharField(max_length=64)
    reply_seq = models.PositiveIntegerField(help_text="The seq of the reply whose turn made the call.")
    step = models.PositiveIntegerField(help_text="The model step of the turn that asked for it, from 0.")
    index = models.PositiveIntegerField(help_text="Its place among the step's calls.")
    name = models.CharField(max_length=200)
    # Text, not a JSONField: PostgreSQL's jsonb would reorder the keys the model wrote.
    arguments = models.TextField(help_text="The arguments as the model sent them (JSON text, as written).")
    step_text = models.TextField(blank=True, help_text="What the model wrote in the step before asking for its calls.")
    needs_approval = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.REQUESTED)
    result = models.TextField(blank=True, help_text="What the model is told: the tool's result, or why there is none.")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="The reason a user gave for a denial.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["session", "reply_seq", "step", "index"]
        constraints = [models.UniqueConstraint(fields=["session", "call_id"], name="unique_tool_call_per_session")]

    def __str__(self) -> str:
        return f"{self.name} ({self.call_id})"

    @property
    def args(self) -> object:
        """The arguments, parsed; the text itself when it is not JSON."""
        try:
            return json.loads(self.arguments or "{}")
        except ValueError:
            return self.arguments
