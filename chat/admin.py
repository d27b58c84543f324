from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.text import Truncator

from chat import selectors, services
from chat.exceptions import SessionEnded, TemporalUnavailable, WorkflowUnreadable
from chat.models import ChatMessage, ChatSession, ChatToolCall

BADGE_COLOURS = {
    ChatSession.Status.ACTIVE: "#2e7d32",
    ChatSession.Status.ENDED: "#546e7a",
    ChatSession.Status.TIMED_OUT: "#ef6c00",
}
REPLY_COLOURS = {ChatMessage.Status.STOPPED: "#ef6c00", ChatMessage.Status.FAILED: "#c62828"}
RESULT_CHARS = 200  # of a tool call's result, in the list; the API has it whole


class ChatMessageInline(admin.TabularInline):
    model = ChatMessage
    fields = ["seq", "role", "content", "created_at", "reply", "model", "tokens_in", "tokens_out"]
    readonly_fields = fields
    ordering = ["seq"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: ChatSession | None = None) -> bool:
        return False

    @admin.display(description="Reply")
    def reply(self, message: ChatMessage) -> str:
        """How an assistant's reply ended: a stopped or failed one stands out."""
        if message.role != ChatMessage.Role.ASSISTANT:
            return ""
        if message.status == ChatMessage.Status.COMPLETE:
            return message.get_status_display()
        colour = REPLY_COLOURS[message.status]
        return format_html('<strong style="color:{}">{}</strong>', colour, message.get_status_display())


class ChatToolCallInline(admin.TabularInline):
    model = ChatToolCall
    fields = ["reply_seq", "name", "status", "arguments", "short_result", "needs_approval", "decided_by", "decided_at"]
    readonly_fields = fields
    ordering = ["reply_seq", "step", "index"]
    extra = 0
    can_delete = False
    verbose_name_plural = "tool calls"

    def has_add_permission(self, request: HttpRequest, obj: ChatSession | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChatToolCall]:
        return super().get_queryset(request).select_related("decided_by")

    @admin.display(description="Result")
    def short_result(self, call: ChatToolCall) -> str:
        return Truncator(call.result).chars(RESULT_CHARS)


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = [
        *["session_id", "user", "status_badge", "message_count", "started_at", "last_activity_at", "ended_at"],
        "temporal_link",
    ]
    list_filter = ["status", "started_at"]
    search_fields = ["session_id", "user__username", "user__email", "workflow_id"]
    date_hierarchy = "started_at"
    list_select_related = ["user"]
    readonly_fields = [
        *["session_id", "user", "status_badge", "workflow_live", "message_count", "started_at", "last_activity_at"],
        *["ended_at", "ended_by", "workflow_id", "run_id", "updated_at", "temporal_link"],
    ]
    fields = readonly_fields  # the badge stands for the status field: shown once
    inlines = [ChatMessageInline, ChatToolCallInline]
    actions = ["end_sessions"]

    @admin.display(description="Status", ordering="status")
    def status_badge(self, session: ChatSession) -> str:
        return format_html(
            '<span style="background:{};color:#fff;padding:2px 8px;border-radius:10px;font-size:11px">{}</span>',
            BADGE_COLOURS.get(session.status, "#757575"),
            session.get_status_display(),
        )

    @admin.display(description="Workflow, live from Temporal")
    def workflow_live(self, session: ChatSession) -> str:
        try:
            view = selectors.session_workflow_view(session)
        except TemporalUnavailable as exc:
            return format_html("<em>Temporal is unreachable, so this shows the stored record only. ({})</em>", exc)
        except WorkflowUnreadable as exc:
            return format_html("<em>{}</em>", exc)
        if view.state is None:
            return f"workflow {view.status}"
        # The session's status is shown once, above; this is what only the workflow knows.
        state = view.state
        return format_html(
            "workflow {} · {} messages · last message {}",
            *(view.status, state.message_count, state.last_activity_at or "none yet"),
        )

    @admin.display(description="Temporal")
    def temporal_link(self, session: ChatSession) -> str:
        return format_html('<a href="{}" target="_blank" rel="noopener">open workflow</a>', session.temporal_ui_url)

    @admin.action(description="End selected sessions (through their workflows)", permissions=["end"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[ChatSession]) -> None:
        ended = already = 0
        for session in queryset.select_related("user"):
            try:
                services.session_end(user=session.user, session_id=session.session_id, by=request.user)
                ended += 1
            except SessionEnded:
                already += 1
            except TemporalUnavailable as exc:
                self.message_user(request, f"Stopped after {ended} ended: {exc}", messages.ERROR)
                return
        self.message_user(request, f"Ended {ended} session(s); {already} had already ended.", messages.SUCCESS)

    def has_end_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chat.end_chatsession")

    # Records are the workflow's projection, written by its activities: editing one here would make it disagree
    # with the workflow, so the admin only reads them, and ends and deletes them through the workflow.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ChatSession | None = None) -> bool:
        return False

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None) -> HttpResponse:
        # Not in one transaction, as Django's is: deleting ends the workflow first, whose activity writes this record
        # from the worker and would wait for that transaction's lock.
        return self._delete_view(request, object_id, extra_context)

    def delete_model(self, request: HttpRequest, obj: ChatSession) -> None:
        try:
            services.session_delete(user=obj.user, session_id=obj.session_id, by=request.user)
        except TemporalUnavailable as exc:
            self.message_user(request, f"{obj.session_id} was not deleted: {exc}", messages.ERROR)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ChatSession]) -> None:
        for session in queryset.select_related("user"):
            self.delete_model(request, session)
