"""GET /healthz: can this process reach its database and Temporal? For load balancers and orchestrators."""

from django.db import connection
from django.http import HttpRequest, JsonResponse

from temporal_integration.client import TemporalUnavailable, run_on_client
from temporal_integration.conf import get_config


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # any failure means "down"; the message says which
        return f"unavailable: {exc.__class__.__name__}: {exc}".strip()


def _temporal() -> str:
    timeout = get_config().rpc_timeout
    try:
        run_on_client(lambda client: client.service_client.check_health(timeout=timeout))
        return "ok"
    except TemporalUnavailable as exc:
        return f"unavailable: {exc}"
    except Exception as exc:
        return f"unavailable: {exc.__class__.__name__}: {exc}"


def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database(), "temporal": _temporal()}
    healthy = all(result == "ok" for result in checks.values())
    return JsonResponse({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)
