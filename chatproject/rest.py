"""The REST framework classes that settings name for every view (parser, paginator).

Kept apart from chatproject.api: DRF imports these while defining its view classes, so this module must
not import rest_framework.views itself, or the two imports chase each other in a circle (seen when the
worker's system checks happened to import the API module first).
"""

import io
from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser


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
