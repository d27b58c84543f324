from django.contrib import admin
from django.utils.html import format_html

from chat.models import ChatMessage, ChatSession
from temporal_integration.conf import get_config


class ChatMessageInline(admin.TabularInline):
    model = ChatMessage
    fields = ["seq", "role", "content", "created_at"]
    readonly_fields = fields
    ordering = ["seq"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: object, obj: ChatSession | None = None) -> bool:
        return False


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ["session_id", "user", "status", "message_count", "started_at", "last_activity_at", "ended_at",
                    "temporal_link"]  # fmt: skip
    list_filter = ["status", "started_at"]
    search_fields = ["session_id", "user__username", "workflow_id"]
    date_hierarchy = "started_at"
    list_select_related = ["user"]
    readonly_fields = [
        "session_id", "user", "workflow_id", "run_id", "status", "message_count", "started_at", "last_activity_at",
        "ended_at", "updated_at", "temporal_link",
    ]  # fmt: skip
    inlines = [ChatMessageInline]

    @admin.display(description="Temporal")
    def temporal_link(self, session: ChatSession) -> str:
        url = get_config().workflow_ui_url(session.workflow_id, session.run_id)
        return format_html('<a href="{}" target="_blank" rel="noopener">open workflow</a>', url)

    # Records are the workflow's projection, written by its activities: editing or deleting one here
    # would make it disagree with the workflow, so the admin only reads them.
    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: ChatSession | None = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: ChatSession | None = None) -> bool:
        return False
