"""The API's one mapping from exceptions to responses: every error is JSON with a `detail`."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.exceptions import (
    InvalidMessage,
    NothingToRegenerate,
    ReplyPending,
    SessionEnded,
    SessionExists,
    SessionNotFound,
    TemporalUnavailable,
    TokenBudgetExceeded,
    ToolCallNotFound,
    ToolCallNotWaiting,
    WorkflowUnreadable,
)

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[Exception], int] = {
    InvalidMessage: status.HTTP_400_BAD_REQUEST,
    SessionNotFound: status.HTTP_404_NOT_FOUND,
    SessionEnded: status.HTTP_409_CONFLICT,
    SessionExists: status.HTTP_409_CONFLICT,
    NothingToRegenerate: status.HTTP_409_CONFLICT,
    ToolCallNotFound: status.HTTP_404_NOT_FOUND,
    ToolCallNotWaiting: status.HTTP_409_CONFLICT,
    TemporalUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    TokenBudgetExceeded: status.HTTP_429_TOO_MANY_REQUESTS,
    WorkflowUnreadable: status.HTTP_502_BAD_GATEWAY,  # Temporal answered, but refused (configuration, retention)
    ReplyPending: status.HTTP_504_GATEWAY_TIMEOUT,
}
RETRY_AFTER_SECONDS = 5


def _flatten(errors: object, prefix: str = "") -> list[str]:
    if isinstance(errors, dict):
        return [line for key, value in errors.items() for line in _flatten(value, f"{prefix}{key}: ")]
    if isinstance(errors, list):
        return [line for value in errors for line in _flatten(value, prefix)]
    return [f"{prefix}{errors}".removeprefix("non_field_errors: ")]


def exception_handler(exc: Exception, context: dict) -> Response:
    for error_type, code in STATUS_BY_ERROR.items():
        if isinstance(exc, error_type):
            response = Response({"detail": str(exc)}, status=code)
            if code in (status.HTTP_429_TOO_MANY_REQUESTS, status.HTTP_503_SERVICE_UNAVAILABLE):
                response["Retry-After"] = str(getattr(exc, "retry_after", RETRY_AFTER_SECONDS))
            return response
    if isinstance(exc, exceptions.ValidationError):
        return Response({"detail": " ".join(_flatten(exc.detail)), "errors": exc.detail}, status=exc.status_code)
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response({"detail": "Internal server error."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return response


class DeferredResponse(Response):
    """A view's answer whose data an awaitable gives (a Temporal call), for the API's async door (chatproject.asgi):
    Django's middleware and the view run on a thread and let it go; the door then awaits `finish()` on the server's
    loop. A failure there answers as the view's own exception would have. Nothing it awaits may touch the database.
    """

    def __init__(self, data: Callable[[], Awaitable[Any]], status: int) -> None:
        super().__init__(None, status=status)
        self._data = data
        self._finished = False

    @staticmethod
    def possible(request: Request) -> bool:
        """Whether the request came through the async door and wants JSON (the browsable API renders with the
        database)."""
        return getattr(request._request, "can_defer", False) and isinstance(request.accepted_renderer, JSONRenderer)

    @property
    def rendered_content(self) -> bytes:
        return super().rendered_content if self._finished else b""

    async def finish(self) -> None:
        try:
            self.data = await self._data()
        except Exception as exc:
            view, request = self.renderer_context["view"], self.renderer_context["request"]
            error = view.finalize_response(request, view.handle_exception(exc))
            self.status_code, self.data, self.exception = error.status_code, error.data, True
            for header, value in error.items():  # Retry-After, WWW-Authenticate; the middleware's stay
                self.setdefault(header, value)
        self._finished = True
        self.content = self.rendered_content
        if "Content-Length" in self:  # CommonMiddleware counted the empty body
            self["Content-Length"] = str(len(self.content))


# Django's own error pages, for requests that never reach a DRF view (unknown URLs, bad Host headers).
def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Permission denied."}, status=403)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error."}, status=500)
