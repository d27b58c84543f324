from asgiref.sync import async_to_sync
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle, UserRateThrottle

from chat import selectors, services
from chat.gateway import Pending
from chat.serializers import (
    SESSION_ID_REGEX,
    DecisionSerializer,
    ErrorSerializer,
    LiveStateSerializer,
    MessageSerializer,
    PostedMessageSerializer,
    PostMessageSerializer,
    RegenerationSerializer,
    RenameSerializer,
    SessionDetailSerializer,
    SessionSerializer,
    StartedSessionSerializer,
    StartSessionSerializer,
    StopSerializer,
    ToolCallSerializer,
    ValidationErrorSerializer,
    WaitSerializer,
    represent,
)
from chat.waiting import await_reply
from chatproject.api import DeferredResponse


def _errors(**described: str) -> dict[int, OpenApiResponse]:
    """Error responses for the schema: each status with its JSON `detail` body."""
    return {
        int(code.removeprefix("e")): OpenApiResponse(
            ValidationErrorSerializer if code == "e400" else ErrorSerializer, text
        )
        for code, text in described.items()
    }


UNAUTHENTICATED = {"e401": "No or invalid credentials."}
NOT_FOUND = {"e404": "No such session of the caller's (another user's session answers the same)."}
NO_PAGE = {"e404": "No such page."}
BAD_PAGE = {"e400": "page is not a positive integer."}
TOO_LARGE = {"e413": "The body is larger than API_MAX_BODY_BYTES."}
UNAVAILABLE = {"e503": "Temporal is unreachable; retry after the Retry-After header's seconds."}
NOT_JSON = {"e415": "The body is not JSON."}

START_ERRORS = _errors(
    e400="Malformed JSON, a bad session_id or content, or unknown fields.",
    e409="This session_id was already used.",
    e429="Too many sessions started, or (with content) today's token budget used; retry after Retry-After.",
    **UNAUTHENTICATED,
    **TOO_LARGE,
    **NOT_JSON,
    **UNAVAILABLE,
)
POST_MESSAGE_ERRORS = _errors(
    e400="Empty, too long or not a string; or `wait` is not true or false.",
    e409="The session has ended.",
    e504="With ?wait=true: the reply took longer than CHAT_REPLY_WAIT_TIMEOUT; it goes on, on the event stream.",
    e429="Too many messages, too many replies waited on at once, or today's token budget used; retry after the "
    "Retry-After header's seconds.",
    **UNAUTHENTICATED,
    **NOT_FOUND,
    **TOO_LARGE,
    **NOT_JSON,
    **UNAVAILABLE,
)
END_ERRORS = _errors(e409="The session has already ended.", **UNAUTHENTICATED, **NOT_FOUND, **UNAVAILABLE)
DELETE_ERRORS = _errors(**UNAUTHENTICATED, **NOT_FOUND, **UNAVAILABLE)
DECIDE_ERRORS = _errors(
    e400="Malformed JSON, or a reason that isn't a string of at most 1000 characters.",
    e404="No such session of the caller's, or no such tool call in it.",
    e409="The call is not waiting for a decision (decided already, or it needs none), or the session has ended.",
    **UNAUTHENTICATED,
    **TOO_LARGE,
    **NOT_JSON,
    **UNAVAILABLE,
)
CALL_ID_REGEX = "[A-Za-z0-9_-]{1,64}"
STOP_ERRORS = _errors(e409="The session has ended.", **UNAUTHENTICATED, **NOT_FOUND, **UNAVAILABLE)
WAIT = OpenApiParameter(
    "wait",
    bool,
    description="true: answer with the assistant's finished reply instead of the stored message (for curl and simple "
    "clients; 504 if it takes longer than CHAT_REPLY_WAIT_TIMEOUT seconds; 429 past CHAT_REPLY_WAITS_PER_USER waits "
    "at once). Only `true` or `false`.",
)


class SessionStartThrottle(UserRateThrottle):
    scope = "session_start"


class MessagePostThrottle(UserRateThrottle):
    scope = "message_post"


class SessionViewSet(viewsets.GenericViewSet):
    """Chat sessions, each one a Temporal workflow."""

    lookup_field = "session_id"
    lookup_value_regex = SESSION_ID_REGEX
    serializer_class = SessionSerializer

    def get_queryset(self):  # noqa: ANN201
        return selectors.sessions_of(user=self.request.user)

    def get_throttles(self) -> list[BaseThrottle]:
        # Only the writes that start workflows or grow their histories are rate-limited.
        if self.action == "create":
            return [SessionStartThrottle()]
        if (self.action == "messages" and self.request.method == "POST") or self.action == "regenerate":
            return [MessagePostThrottle()]
        return []

    @extend_schema(request=StartSessionSerializer, responses={202: StartedSessionSerializer, **START_ERRORS})
    def create(self, request: Request) -> Response:
        payload = StartSessionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        starting = services.session_starting(user=request.user, **payload.validated_data)
        return self._answer(starting, StartedSessionSerializer, status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: SessionSerializer(many=True), **_errors(**BAD_PAGE, **UNAUTHENTICATED, **NO_PAGE)})
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(SessionSerializer(page, many=True).data)

    @extend_schema(responses={200: SessionDetailSerializer, **_errors(**UNAUTHENTICATED, **NOT_FOUND)})
    def retrieve(self, request: Request, session_id: str) -> Response:
        session = selectors.session_get(user=request.user, session_id=session_id)
        live = selectors.session_live_state(session)
        return Response(SessionDetailSerializer(session, context={"live": live}).data)

    @extend_schema(
        methods=["GET"],
        responses={200: MessageSerializer(many=True), **_errors(**BAD_PAGE, **UNAUTHENTICATED, **NOT_FOUND)},
    )
    @extend_schema(
        methods=["POST"],
        request=PostMessageSerializer,
        parameters=[WAIT],
        responses={201: PostedMessageSerializer, **POST_MESSAGE_ERRORS},
    )
    @action(detail=True, methods=["get", "post"])
    def messages(self, request: Request, session_id: str) -> Response:
        if request.method == "GET":
            page = self.paginate_queryset(selectors.messages_of(user=request.user, session_id=session_id))
            calls = selectors.tool_calls_by_reply(session_id=session_id, reply_seqs=[message.seq for message in page])
            return self.get_paginated_response(MessageSerializer(page, many=True, context={"tool_calls": calls}).data)
        wait = WaitSerializer.read(request.query_params)
        payload = PostMessageSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        posting = services.message_posting(user=request.user, session_id=session_id, **payload.validated_data)
        if not wait:
            return self._answer(posting, PostedMessageSerializer, status.HTTP_201_CREATED)
        message = posting.result()
        if message.reply_seq is not None:
            # Served here only by a server without the ASGI application's loop (a plain WSGI server): this thread
            # waits. chatproject.asgi sends these requests to chat.waiting, which holds no thread.
            reply = async_to_sync(await_reply)(session_id=session_id, user_seq=message.seq, reply_seq=message.reply_seq)
            return Response({**reply, "reply_seq": None}, status=status.HTTP_201_CREATED)
        return Response(represent(PostedMessageSerializer, message), status=status.HTTP_201_CREATED)

    def _answer(self, pending: Pending, serializer: type, code: int) -> Response:
        """The response to a prepared gateway call: awaited by the API's async door on the server's loop once this
        thread is let go, or run here (runserver's WSGI fallback, a plain WSGI server, the pool)."""
        if DeferredResponse.possible(self.request):

            async def data() -> dict:
                return represent(serializer, await pending.on_loop())

            return DeferredResponse(data, code)
        return Response(represent(serializer, pending.result()), status=code)

    @extend_schema(
        request=RenameSerializer,
        responses={
            200: SessionSerializer,
            **_errors(
                e400="A title that is empty, too long or not a string; or unknown fields.",
                **UNAUTHENTICATED,
                **NOT_FOUND,
                **TOO_LARGE,
                **NOT_JSON,
            ),
        },
    )
    def partial_update(self, request: Request, session_id: str) -> Response:
        """Renames the chat (open or ended)."""
        payload = RenameSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        session = services.session_rename(user=request.user, session_id=session_id, **payload.validated_data)
        return Response(SessionSerializer(session).data)

    @extend_schema(responses={204: None, **DELETE_ERRORS})
    def destroy(self, request: Request, session_id: str) -> Response:
        services.session_delete(user=request.user, session_id=session_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None,
        responses={
            202: RegenerationSerializer,
            **_errors(
                e409="No finished reply to answer again (none yet, or one is being written), or the session has ended.",
                e429="Today's token budget is used; retry after the Retry-After header's seconds.",
                **UNAUTHENTICATED,
                **NOT_FOUND,
                **UNAVAILABLE,
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def regenerate(self, request: Request, session_id: str) -> Response:
        """Answers the last answered message again: the old reply is kept, marked `replaced`, and the new one
        streams under the next seq."""
        regeneration = services.reply_regenerate(user=request.user, session_id=session_id)
        return Response(RegenerationSerializer(regeneration).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: StopSerializer, **STOP_ERRORS})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, session_id: str) -> Response:
        stopped = services.session_stop(user=request.user, session_id=session_id)
        return Response(StopSerializer({"stopped": stopped}).data)

    @extend_schema(
        responses={200: ToolCallSerializer(many=True), **_errors(**BAD_PAGE, **UNAUTHENTICATED, **NOT_FOUND)}
    )
    @action(detail=True, methods=["get"], url_path="tool-calls")
    def tool_calls(self, request: Request, session_id: str) -> Response:
        """The tools the assistant called in this session, oldest first: arguments, status, result, who decided."""
        page = self.paginate_queryset(selectors.tool_calls_of(user=request.user, session_id=session_id))
        return self.get_paginated_response(ToolCallSerializer(page, many=True).data)

    @extend_schema(request=DecisionSerializer, responses={200: ToolCallSerializer, **DECIDE_ERRORS})
    @action(detail=True, methods=["post"], url_path=rf"tool-calls/(?P<call_id>{CALL_ID_REGEX})/approve")
    def approve(self, request: Request, session_id: str, call_id: str) -> Response:
        """Approves a tool call that waits for a decision; answers once it has run, with its result."""
        return self._decide(request, session_id, call_id, approve=True)

    @extend_schema(request=DecisionSerializer, responses={200: ToolCallSerializer, **DECIDE_ERRORS})
    @action(detail=True, methods=["post"], url_path=rf"tool-calls/(?P<call_id>{CALL_ID_REGEX})/deny")
    def deny(self, request: Request, session_id: str, call_id: str) -> Response:
        """Denies a tool call that waits for a decision; the model is told, with the reason, and the reply goes on."""
        return self._decide(request, session_id, call_id, approve=False)

    def _decide(self, request: Request, session_id: str, call_id: str, *, approve: bool) -> Response:
        payload = DecisionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        call = services.tool_call_decide(
            user=request.user, session_id=session_id, call_id=call_id, approve=approve, **payload.validated_data
        )
        return Response(ToolCallSerializer(call).data)

    @extend_schema(request=None, responses={200: LiveStateSerializer, **END_ERRORS})
    @action(detail=True, methods=["post"])
    def end(self, request: Request, session_id: str) -> Response:
        final = services.session_end(user=request.user, session_id=session_id)
        return Response(LiveStateSerializer(final).data)
