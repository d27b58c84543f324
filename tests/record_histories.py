"""Records workflow histories for the replay test: `make histories`.

Run it when a change to ChatSessionWorkflow is meant to be compatible, and commit the new files
beside the old ones: the replay test then holds every later change to both the old and new shapes.
"""

import asyncio
import os
import sys
from datetime import date
from pathlib import Path

import django

django.setup()  # the test helpers imported below reach Django's models

from temporalio import activity  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from chat.types import TAKE_MODEL_STEP, ModelStep, SessionOptions, StepResult, ToolCallRef, ToolDecision  # noqa: E402
from chat.workflows import ChatSessionWorkflow  # noqa: E402
from tests.conftest import wait_until  # noqa: E402
from tests.test_workflows import FakeDatabase, answered, run_ids, session  # noqa: E402

HISTORIES = Path(__file__).parent / "histories"
TEMPORAL_CLI = str(Path(sys.executable).parent / "temporal")


async def save(client: Client, name: str, handle: WorkflowHandle) -> None:
    for index, run_id in enumerate(await run_ids(client, handle), start=1):
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        path = HISTORIES / f"{date.today():%Y%m%d}-{name}-run{index}.json"  # beside, never over, older shapes
        path.write_text(history.to_json())
        print(f"wrote {path.relative_to(Path.cwd())}")


async def record(client: Client) -> None:
    db = FakeDatabase()
    async with session(client, db.activities(), SessionOptions(idle_timeout_seconds=3600)) as handle:
        for text in ["hello", "how are you?", "bye"]:
            await handle.execute_update(ChatSessionWorkflow.post_message, text)
        await answered(handle)
        await handle.execute_update(ChatSessionWorkflow.end_session, "7")  # ended by its owner, named
        await handle.result()
        await save(client, "messages-then-end", handle)

    async with session(client, db.activities(), SessionOptions(idle_timeout_seconds=1)) as handle:
        await handle.execute_update(ChatSessionWorkflow.post_message, "anyone?")
        await handle.result()
        await save(client, "idle-timeout", handle)

    async with session(client, db.activities(), SessionOptions(idle_timeout_seconds=3600, max_messages_per_run=2)) as h:
        await asyncio.gather(*(h.execute_update(ChatSessionWorkflow.post_message, f"m{i}") for i in range(3)))
        await answered(h)  # continue-as-new waits for the replies
        for i in range(3, 6):
            await h.execute_update(ChatSessionWorkflow.post_message, f"m{i}")
            await answered(h)
        await h.execute_update(ChatSessionWorkflow.end_session)
        await h.result()
        await save(client, "continue-as-new", h)

    async with session(client, db.activities(), SessionOptions(idle_timeout_seconds=3600, max_messages_per_run=1)) as h:
        for update_id in ["message-a", "message-a", "message-b"]:  # a keyed retry across continue-as-new
            await h.execute_update(ChatSessionWorkflow.post_message, "keyed", id=update_id)
        await h.execute_update(ChatSessionWorkflow.end_session)
        await h.result()
        await save(client, "keyed-retry", h)

    writing = asyncio.Event()

    @activity.defn(name=TAKE_MODEL_STEP)
    async def endless_turn(step: ModelStep) -> StepResult:
        writing.set()
        while True:  # until the stop's cancel arrives with a heartbeat's answer
            activity.heartbeat()
            await asyncio.sleep(0.05)

    options = SessionOptions(idle_timeout_seconds=3600, turn_heartbeat_seconds=1)
    async with session(client, db.activities(take_model_step=endless_turn), options) as h:
        await h.execute_update(ChatSessionWorkflow.post_message, "go on forever")
        await writing.wait()
        await h.execute_update(ChatSessionWorkflow.stop_reply)
        await h.execute_update(ChatSessionWorkflow.end_session)
        await h.result()
        await save(client, "reply-stopped", h)


async def record_tool_calls(client: Client) -> None:
    email = ToolCallRef("call-2-0-1", "send_email", needs_approval=True)
    db = FakeDatabase(calls={2: [ToolCallRef("call-2-0-0", "search_chats"), email]})
    async with session(client, db.activities(), SessionOptions(idle_timeout_seconds=3600)) as h:
        await h.execute_update(ChatSessionWorkflow.post_message, "search, then email me")
        await wait_until(lambda: h.query(ChatSessionWorkflow.get_state), lambda s: s.awaiting_approval)
        await h.execute_update(ChatSessionWorkflow.decide_tool_call, ToolDecision(email.call_id, True, "7"))
        await answered(h)
        await h.execute_update(ChatSessionWorkflow.end_session, "7")
        await h.result()
        await save(client, "tool-calls-approved", h)

    db = FakeDatabase(calls={2: [email]})
    options = SessionOptions(idle_timeout_seconds=3600, max_messages_per_run=1)
    async with session(client, db.activities(), options) as h:  # continue-as-new while the approval waits
        await h.execute_update(ChatSessionWorkflow.post_message, "email me")
        await wait_until(lambda: run_ids(client, h), lambda runs: len(runs) == 2)
        await wait_until(lambda: h.query(ChatSessionWorkflow.get_state), lambda s: s.awaiting_approval)
        await h.execute_update(ChatSessionWorkflow.decide_tool_call, ToolDecision(email.call_id, False, "7", "no"))
        await answered(h)
        await h.execute_update(ChatSessionWorkflow.end_session, "7")
        await h.result()
        await save(client, "approval-continue-as-new", h)

    db = FakeDatabase(calls={2: [email], 4: [ToolCallRef("call-4-0-0", "send_email", needs_approval=True)]})
    options = SessionOptions(idle_timeout_seconds=3600, tool_approval_timeout_seconds=1)
    async with session(client, db.activities(), options) as h:  # one approval expires, one is stopped
        await h.execute_update(ChatSessionWorkflow.post_message, "email me")
        await answered(h)
        await h.execute_update(ChatSessionWorkflow.post_message, "again")
        await wait_until(lambda: h.query(ChatSessionWorkflow.get_state), lambda s: s.awaiting_approval)
        await h.execute_update(ChatSessionWorkflow.stop_reply)
        await h.execute_update(ChatSessionWorkflow.end_session, "7")
        await h.result()
        await save(client, "approval-expired-then-stopped", h)


async def record_regenerate(client: Client) -> None:
    db = FakeDatabase()
    options = SessionOptions(idle_timeout_seconds=3600, max_messages_per_run=2)
    async with session(client, db.activities(), options) as h:  # regenerated, then carried over continue-as-new
        await h.execute_update(ChatSessionWorkflow.post_message, "question")
        await answered(h)
        await h.execute_update(ChatSessionWorkflow.regenerate)
        await answered(h)
        await wait_until(lambda: run_ids(client, h), lambda runs: len(runs) == 2)
        await h.execute_update(ChatSessionWorkflow.regenerate)
        await answered(h)
        await h.execute_update(ChatSessionWorkflow.end_session, "7")
        await h.result()
        await save(client, "regenerate", h)


# `make histories` records them all; `python -m tests.record_histories regenerate` only the ones named.
RECORDERS = {"sessions": record, "tools": record_tool_calls, "regenerate": record_regenerate}


async def main(names: list[str]) -> None:
    HISTORIES.mkdir(exist_ok=True)
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=TEMPORAL_CLI)
    try:
        for name in names or RECORDERS:
            await RECORDERS[name](env.client)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
    sys.stdout.flush()
    os._exit(0)  # past interpreter finalization, where the SDK's native threads can abort the process (sdk-python#300)
