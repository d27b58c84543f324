import dataclasses

import pytest
from django.contrib.auth import get_user_model
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from chat.activities import log_session_start
from chat.models import ChatSession

pytestmark = pytest.mark.django_db(transaction=True)  # activities run in autocommit, outside any test transaction


@pytest.fixture
def user():
    return get_user_model().objects.create_user("alice")


def test_log_session_start_writes_one_record_and_confirms(user):
    confirmation = ActivityEnvironment().run(log_session_start, str(user.pk), "s-1")

    assert confirmation == f"session s-1 started for user {user.pk}"
    session = ChatSession.objects.get()
    assert (session.session_id, session.user, session.status) == ("s-1", user, ChatSession.Status.ACTIVE)
    assert session.workflow_id == "test"  # ActivityEnvironment's default workflow info
    assert session.started_at is not None
    assert session.ended_at is None


def test_a_retried_log_session_start_keeps_one_record(user):
    env = ActivityEnvironment()
    env.run(log_session_start, str(user.pk), "s-1")
    first = ChatSession.objects.get()

    env.info = dataclasses.replace(env.info, attempt=2)
    env.run(log_session_start, str(user.pk), "s-1")

    assert ChatSession.objects.count() == 1
    assert ChatSession.objects.get().started_at == first.started_at


def test_log_session_start_for_an_unknown_user_fails_without_retry():
    with pytest.raises(ApplicationError, match="user 999 does not exist") as failure:
        ActivityEnvironment().run(log_session_start, "999", "s-1")

    assert failure.value.non_retryable
    assert not ChatSession.objects.exists()
