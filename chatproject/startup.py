from django.urls import get_resolver


def load_urlconf() -> None:
    """Imports the URLconf, and with it every view, serializer and the schema code, while the server starts.

    Django would do it in each server process's first request, which would then be slower than the others.
    """
    get_resolver().url_patterns  # noqa: B018
