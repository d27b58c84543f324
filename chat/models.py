from django.conf import settings
from django.db import models


class ChatSession(models.Model):
    """The database's projection of one session workflow, written only by its activities."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        ENDED = "ended"
        TIMED_OUT = "timed_out", "Timed out"
        FAILED = "failed"

    session_id = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="chat_sessions")
    workflow_id = models.CharField(max_length=255)
    run_id = models.CharField(max_length=64, help_text="The run that started the session.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["user", "-started_at"])]

    def __str__(self) -> str:
        return self.session_id
