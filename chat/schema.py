"""drf-spectacular hooks: make the schema say what the API enforces, and document what it cannot see."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from chat.serializers import SESSION_ID_REGEX
from chat.streams import KEEPALIVE_SECONDS
from chat.types import EventType
from chat.views import NOT_FOUND, UNAUTHENTICATED, UNAVAILABLE, _errors

EVENTS_PATH = "/api/sessions/{session_id}/events/"
EVENTS_PATH_REGEX = rf"^api/sessions/(?P<session_id>{SESSION_ID_REGEX})/events/$"  # chat.urls' session-events
EVENT_DATA = {
    EventType.MESSAGE: "a stored message or reply: the same JSON as the messages endpoint gives it (`Message`)",
    EventType.DELTA: "reply text as it is written: `turn` (the reply's seq), `attempt`, `text` (append it)",
    EventType.RESET: "a retried attempt writes its reply again: `turn`, `attempt` (drop that turn's text so far)",
    EventType.TOOL_CALL: "the assistant calls a tool: `turn`, `call_id`, `name`, `args`, `status` (`running`, or "
    "`awaiting_approval`: approve or deny it at `tool-calls/{call_id}/approve/` or `.../deny/`)",
    EventType.TOOL_RESULT: "a tool call ended: `turn`, `call_id`, `name`, `args`, `status` (`done`, `failed`, "
    "`denied`, `expired` or `unknown`), `result` (its first 500 characters; the whole at `tool-calls/`)",
    EventType.TURN_FAILED: "the reply could not be written: `turn`, `detail`; after the reply's `message`, whose "
    "status is failed",
    EventType.SESSION_ENDED: "the session ended: `status`, `ended_at`; then the stream ends",
}
EVENTS_DESCRIPTION = (
    "The session's events as Server-Sent Events, live: each has an `id:`, an `event:` (its type) and one `data:` "
    "line of JSON. `Last-Event-ID` (which EventSource sends when it reconnects) or `after` resumes after that event "
    "with no gap and no duplicate; without either the stream starts at the session's first event. Once a reply is "
    "stored its `delta` and `reset` events may be gone: a client that resumes among them gets the whole reply as "
    f"its `message`. A comment line every {KEEPALIVE_SECONDS:g} s keeps an idle stream open.\n\n"
    + "\n".join(f"- `{event_type}`: {data}" for event_type, data in EVENT_DATA.items())
)
LAST_EVENT_ID = "Resume after this event (the `id:` of the last one seen); EventSource sends it when it reconnects."
AFTER = "Resume after this event, as Last-Event-ID does (for clients that cannot set headers); the header wins."


class SessionEventsSchema(APIView):
    """The schema of chat.streams.session_events, a plain async Django view that drf-spectacular does not list."""

    @extend_schema(
        description=EVENTS_DESCRIPTION,
        parameters=[
            OpenApiParameter("Last-Event-ID", str, OpenApiParameter.HEADER, description=LAST_EVENT_ID),
            OpenApiParameter("after", str, description=AFTER),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, "The session's events, until it ends."),
            **_errors(
                e400="Last-Event-ID or after is not an event id of this event log.",
                **UNAUTHENTICATED,
                **NOT_FOUND,
                **UNAVAILABLE,
            ),
        },
    )
    def get(self, request: Request, session_id: str) -> None:
        raise NotImplementedError("documentation only: chat.urls routes this path to chat.streams.session_events")


def document_session_events(endpoints: list[tuple], **kwargs: Any) -> list[tuple]:
    """Adds the event stream to the endpoints drf-spectacular documents (it lists DRF views only)."""
    return [*endpoints, (EVENTS_PATH, EVENTS_PATH_REGEX, "GET", SessionEventsSchema.as_view())]


def forbid_unknown_request_fields(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Request bodies refuse unknown fields (StrictSerializer): say so with additionalProperties: false."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result
