"""Determinism guard: the current workflow code must replay every recorded history (`make histories`)."""

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from chat.workflows import ChatSessionWorkflow
from temporal_integration.worker import workflow_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_were_recorded():
    assert len(HISTORIES) >= 3, "run `make histories` and commit tests/histories/"


# The full sandbox, which refuses nondeterministic calls, and the worker's, which passes the workflow's module through.
RUNNERS = {"sandbox": {}, "worker": {"workflow_runner": workflow_runner([ChatSessionWorkflow])}}


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_the_workflow_replays_a_recorded_history(path, runner):
    history = WorkflowHistory.from_json("chat-session-replay", json.loads(path.read_text()))

    replayer = Replayer(workflows=[ChatSessionWorkflow], **RUNNERS[runner])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)

    assert result.replay_failure is None
