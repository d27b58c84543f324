"""The API's one mapping from exceptions to responses: every error is JSON with a `detail`."""

import io
import logging
from typing import IO, Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.exceptions import InvalidMessage, SessionEnded, SessionExists, SessionNotFound
from temporal_integration.client import TemporalUnavailable

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[Exception], int] = {
    InvalidMessage: status.HTTP_400_BAD_REQUEST,
    SessionNotFound: status.HTTP_404_NOT_FOUND,
    SessionEnded: status.HTTP_409_CONFLICT,
    SessionExists: status.HTTP_409_CONFLICT,
    TemporalUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}
RETRY_AFTER_SECONDS = 5


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


class BoundedJSONParser(JSONParser):
    """JSON, read only up to API_MAX_BODY_BYTES: a huge body is refused before it is held in memory or parsed."""

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.API_MAX_BODY_BYTES
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        return super().parse(io.BytesIO(body), media_type, parser_context)


class StrictPageNumberPagination(PageNumberPagination):
    """Pages by ?page=N; a page that isn't a positive integer is a 400, not silently the first page."""

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list | None:
        page = request.query_params.get(self.page_query_param)
        if page is not None and not (page.isascii() and page.isdigit() and int(page) > 0):
            raise exceptions.ValidationError({self.page_query_param: ["must be a positive integer."]})
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters


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
            if code == status.HTTP_503_SERVICE_UNAVAILABLE:
                response["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
    if isinstance(exc, exceptions.ValidationError):
        return Response({"detail": " ".join(_flatten(exc.detail)), "errors": exc.detail}, status=exc.status_code)
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response({"detail": "Internal server error."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return response


# Django's own error pages, for requests that never reach a DRF view (unknown URLs, bad Host headers).
def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Permission denied."}, status=403)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error."}, status=500)
