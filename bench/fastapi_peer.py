"""The peer a team would build instead of the Django API: FastAPI and the same SDK, doing what the project's API does
on the start and message paths, measured beside it in the same run (bench.phases.peer).

A token checked against the project's own table on every request (authtoken_token joined to an active user, as DRF's
TokenAuthentication does: a revoked token stops working at once), the body validated (pydantic), the same SDK calls
with the same arguments as chat.gateway, the same workflow on the project's worker; a message checks that the session
is the caller's against its record, as chat.services does. No Django, no throttle (the bench turns the project's off).

    DATABASE_URL=... TEMPORAL_ADDRESS=... TEMPORAL_TASK_QUEUE=... python -m uvicorn bench.fastapi_peer:app
"""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from bench.project import ChatSessionWorkflow, SessionOptions, workflow_id_for
from bench.raw_worker import RawDB

# Its session ids start with this, so the bench tells its rows from the Django API's in the same table.
PREFIX = "fa-"
db = RawDB(os.environ["DATABASE_URL"], float(os.environ.get("BENCH_BUSY_TIMEOUT", "20")))
queue = os.environ["TEMPORAL_TASK_QUEUE"]
clients: dict[str, Client] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    clients["temporal"] = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    yield


app = FastAPI(lifespan=lifespan, openapi_url=None)


class Start(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,61}$")
    content: str | None = Field(default=None, min_length=1, max_length=SessionOptions.max_message_length)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(min_length=1, max_length=SessionOptions.max_message_length)


async def caller(authorization: Annotated[str, Header()] = "") -> str:
    """The token's user id. The query runs on the event loop: a local database answers in microseconds, less than a
    hop to a thread would cost."""
    scheme, _, key = authorization.partition(" ")
    row = None
    if scheme == "Token" and key:
        row = db.kept().one(
            "SELECT t.user_id FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id "
            "WHERE t.key = %s AND u.is_active",
            (key,),
        )
    if row is None:
        raise HTTPException(401, "Invalid token.", headers={"WWW-Authenticate": "Token"})
    return str(row[0])


def message_json(message: object) -> dict:
    fields = ("seq", "role", "content", "created_at", "reply_seq")
    return {name: getattr(message, name) for name in fields}


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.post("/api/sessions/", status_code=202)
async def start(body: Start, user_id: Annotated[str, Depends(caller)]) -> dict:
    session_id = PREFIX + (body.session_id or uuid.uuid4().hex)
    arguments = {
        "args": [user_id, session_id, SessionOptions(), None],
        "id": workflow_id_for(session_id),
        "task_queue": queue,
        "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
        "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
        "static_summary": f"Chat session {session_id} of user {user_id}",
    }
    temporal, message = clients["temporal"], None
    if body.content is None:
        handle = await temporal.start_workflow(ChatSessionWorkflow.run, **arguments)
    else:
        operation = WithStartWorkflowOperation(ChatSessionWorkflow.run, **arguments)
        message = await temporal.execute_update_with_start_workflow(
            ChatSessionWorkflow.post_message, body.content, start_workflow_operation=operation
        )
        handle = await operation.workflow_handle()
    answer = {"session_id": session_id, "user_id": user_id, "workflow_id": handle.id, "status": "active"}
    return answer | {"run_id": handle.result_run_id, "message": message and message_json(message)}


@app.post("/api/sessions/{session_id}/messages/", status_code=201)
async def post_message(session_id: str, body: Message, user_id: Annotated[str, Depends(caller)]) -> dict:
    owner = db.kept().one("SELECT user_id FROM chat_chatsession WHERE session_id = %s", (session_id,))
    if owner is None or str(owner[0]) != user_id:
        raise HTTPException(404, f"No session {session_id!r}.")
    handle = clients["temporal"].get_workflow_handle_for(ChatSessionWorkflow.run, workflow_id_for(session_id))
    return message_json(await handle.execute_update(ChatSessionWorkflow.post_message, body.content))
