"""Schema-driven fuzzing: requests generated from the API's own OpenAPI schema, valid and not.

No generated request may get a 5xx, and every answer must be one the schema documents.
(schemathesis's pytest plugin doesn't run under pytest 9, so its strategies drive plain hypothesis tests.)
"""

import uuid

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth

from chatproject.wsgi import application

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMA = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
# The event stream never ends, and Django under WSGI (as these cases are called) reads a streaming answer to its end
# before it answers: a case would never return. Its answers have their own tests over HTTP (tests/test_assistant.py).
NEVER_ENDING = {"GET /api/sessions/{session_id}/events/"}
OPERATIONS = [op for result in SCHEMA.get_all_operations() if (op := result.ok()).label not in NEVER_ENDING]


@pytest.fixture
def target(worker, settings) -> tuple[str, str]:
    """A user's token and one open session of theirs, for the generated requests to reach deep into."""
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]  # schemathesis's WSGI requests come as "localhost"
    user = get_user_model().objects.create_user("fuzzer")
    key = Token.objects.create(user=user).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    session_id = f"fuzz-{uuid.uuid4().hex}"
    assert client.post("/api/sessions/", {"session_id": session_id}, format="json").status_code == 202
    return key, session_id


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(operation, mode, target):
    token, session_id = target
    fixed = {"path_parameters": {"session_id": session_id}} if mode is GenerationMode.POSITIVE else {}

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @hypothesis_settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        response = case.call(app=application, headers={"Authorization": f"Token {token}"})

        assert response.status_code < 500, f"{case.method} {case.formatted_path} {case.body!r} -> {response.text}"
        # ignored_auth re-sends with broken credentials, but our fixed header would go along and authenticate;
        # requests without valid credentials have their own tests.
        case.validate_response(response, excluded_checks=[ignored_auth])

    check()
