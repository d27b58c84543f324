"""The assistant's tools end to end: the web process, the project's worker (in this process, or processes of its own
to kill), real Temporal, the database, a real local OpenAI-compatible server that asks for tool calls as OpenAI
streams them, and for the kill tests a real local SMTP server."""

import asyncio
import io
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from rest_framework.authtoken.models import Token
from temporalio.client import Client

from chat.models import ChatMessage, ChatSession, ChatToolCall
from chat.workflows import workflow_id_for
from devtools.mail_server import MailServer
from devtools.model_server import CallTools, Reply, ToolCall
from devtools.processes import DevServer, free_port, wait_for
from tests.conftest import SSE, TEST_MODEL, Chat, WorkerProcess, reply_stored, subscribed, token_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def explode(ctx, why: str) -> str:
    """A tool that fails (CHAT_ASSISTANT_TOOLS names it in one test)."""
    raise RuntimeError(why)


def tool_event(kind: str, status: str) -> Callable[[list[SSE]], bool]:
    """Until a tool_call or tool_result event with that status comes by."""
    return lambda events: any(e.type == kind and e.data["status"] == status for e in events)


def events_of(events: list[SSE], kind: str) -> list[dict]:
    return [e.data for e in events if e.type == kind]


def user_of(chat: Chat, email: str = "") -> object:
    user = Token.objects.get(key=chat.token).user
    if email:
        user.email = email
        user.save()
    return user


def email_step(subject: str = "Our chat", body: str = "What we said.") -> CallTools:
    return CallTools((ToolCall("send_email", {"subject": subject, "body": body}),), text="I'll email it.")


def awaiting_call(chat: Chat, session_id: str) -> tuple[str, list[SSE]]:
    events = chat.follow(session_id, tool_event("tool_call", "awaiting_approval"))
    return events_of(events, "tool_call")[-1]["call_id"], events


def test_search_chats_finds_the_users_own_earlier_messages_only_and_the_next_turn_remembers_it(web, assistant_model):
    chat = web()
    other = get_user_model().objects.create_user("other")
    theirs = ChatSession.objects.create(session_id="theirs", user=other, workflow_id="w", run_id="r")
    ChatMessage.objects.create(
        session=theirs, seq=1, role="user", content="their secret pasta", created_at="2026-12-01T00:00Z"
    )
    assistant_model.script(
        Reply("Noted."),
        CallTools((ToolCall("search_chats", {"query": "pasta"}),), text="Let me look."),
        # then the default replies: "Tool results: …", "You said: …"
    )
    chat.start("tl-earlier", content="pasta with basil tonight")
    chat.follow("tl-earlier", reply_stored(2))
    chat.start("tl-search")
    subscribed(chat, "tl-search")

    chat.say("tl-search", "search my chats for pasta")
    events = chat.follow("tl-search", reply_stored(2))
    chat.say("tl-search", "thanks")
    chat.follow("tl-search", reply_stored(4))

    [running] = events_of(events, "tool_call")
    [result] = events_of(events, "tool_result")
    assert (running["name"], running["args"], running["status"]) == ("search_chats", {"query": "pasta"}, "running")
    assert (result["call_id"], result["status"]) == (running["call_id"], "done")
    found = json.loads(result["result"])
    assert [(hit["session_id"], hit["seq"]) for hit in found] == [("tl-earlier", 1)]  # not theirs, not this question
    assert "pasta with basil" in found[0]["snippet"]
    reply = events[-1].data
    assert reply["content"].startswith("Let me look.\n\nTool results: [")
    assert [(c["name"], c["status"]) for c in reply["tool_calls"]] == [("search_chats", "done")]
    listed = chat.get("sessions/tl-search/messages/").json()["results"]
    assert listed[1] == reply  # the stored message carries its calls, as the stream's message event does
    # The next turn's request carries the earlier call and its result.
    request = assistant_model.requests[-1]
    calls = [m for m in request.messages if m.get("tool_calls")]
    assert [c["function"]["name"] for c in calls[0]["tool_calls"]] == ["search_chats"]
    assert request.tool_messages[0]["content"] == result["result"]
    assert request.tool_names == ["search_chats", "send_email"]


def test_an_approved_email_is_sent_once_and_the_reply_goes_on(web, assistant_model):
    chat = web()
    user_of(chat, email="u1@example.com")
    assistant_model.script(email_step(subject="Hello"))
    chat.start("tl-mail")
    subscribed(chat, "tl-mail")
    chat.say("tl-mail", "email me a summary")

    call_id, before = awaiting_call(chat, "tl-mail")
    assert not mail.outbox  # nothing happens before the approval
    # The workflow's own state names the waiting call once it has the step's result (the event may come first).
    live = wait_for(
        lambda: (state := chat.get("sessions/tl-mail/").json()["live"])["awaiting_approval"] and state,
        timeout=10,
        what="the workflow's state to name the waiting call",
    )
    assert (live["awaiting_approval"], live["writing_reply"]) == (call_id, 2)
    listed = chat.get("sessions/tl-mail/tool-calls/").json()["results"]
    approved = chat.post(f"sessions/tl-mail/tool-calls/{call_id}/approve/")
    events = chat.follow("tl-mail", reply_stored(2), last_event_id=before[-1].id)
    again = chat.post(f"sessions/tl-mail/tool-calls/{call_id}/approve/")
    denied_late = chat.post(f"sessions/tl-mail/tool-calls/{call_id}/deny/", {"reason": "too late"})
    intruder = token_client("intruder").post(f"/api/sessions/tl-mail/tool-calls/{call_id}/approve/")
    unknown = chat.post("sessions/tl-mail/tool-calls/call-9-9-9/approve/")

    assert [(c["call_id"], c["status"], c["needs_approval"]) for c in listed] == [(call_id, "awaiting_approval", True)]
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert (body["status"], body["result"], body["decided_by"]) == ("done", "Sent to u1@example.com.", "u1")
    assert body["args"] == {"subject": "Hello", "body": "What we said."}
    [sent] = mail.outbox
    assert (sent.to, sent.subject, sent.extra_headers["X-Chat-Tool-Call"]) == (["u1@example.com"], "Hello", call_id)
    assert [e["status"] for e in events_of(events, "tool_result")] == ["done"]
    assert events[-1].data["content"] == "I'll email it.\n\nTool results: Sent to u1@example.com."
    assert (again.status_code, denied_late.status_code) == (409, 409)
    assert "not waiting" in again.json()["detail"]
    assert (intruder.status_code, unknown.status_code) == (404, 404)
    assert len(mail.outbox) == 1


def test_a_denial_reaches_the_model_with_its_reason_and_nothing_is_sent(web, assistant_model):
    chat = web()
    user_of(chat, email="u1@example.com")
    assistant_model.script(email_step())
    chat.start("tl-deny")
    subscribed(chat, "tl-deny")
    chat.say("tl-deny", "email me a summary")
    call_id, _ = awaiting_call(chat, "tl-deny")

    denied = chat.post(f"sessions/tl-deny/tool-calls/{call_id}/deny/", {"reason": "not today"})
    events = chat.follow("tl-deny", reply_stored(2))
    bad = chat.post(f"sessions/tl-deny/tool-calls/{call_id}/deny/", {"reason": 5})

    assert denied.status_code == 200, denied.text
    assert (denied.json()["status"], denied.json()["reason"]) == ("denied", "not today")
    assert events[-1].data["content"] == "I'll email it.\n\nTool results: The user declined: not today"
    assert assistant_model.requests[-1].tool_messages[0]["content"] == "The user declined: not today"
    assert bad.status_code == 400
    assert "reason" in bad.json()["errors"]
    assert mail.outbox == []


def test_an_approval_left_undecided_expires_and_the_idle_timeout_does_not_end_the_session_meanwhile(
    web, assistant_model, settings
):
    settings.CHAT_TOOL_APPROVAL_TIMEOUT = 3
    chat = web(CHAT_TOOL_APPROVAL_TIMEOUT="3", CHAT_SESSION_IDLE_TIMEOUT="1")
    assistant_model.script(email_step())
    chat.start("tl-expire")
    subscribed(chat, "tl-expire")
    chat.say("tl-expire", "email me a summary")

    events = chat.follow("tl-expire", reply_stored(2))

    [result] = events_of(events, "tool_result")
    assert (result["status"], result["result"]) == ("expired", "Not run: nobody approved or denied it within 3 s.")
    assert assistant_model.requests[-1].tool_messages[0]["content"] == result["result"]
    # Waiting 3 s for a decision, past the 1 s idle timeout, the session stayed open: the reply went on (a session
    # that ended meanwhile would have stopped it).
    assert events[-1].data["status"] == "complete"
    assert mail.outbox == []


def test_a_tool_that_raises_and_arguments_that_do_not_fit_are_told_to_the_model_and_the_reply_goes_on(
    web, assistant_model, settings
):
    settings.CHAT_ASSISTANT_TOOLS = ["chat.tools.search_chats", "tests.test_tools.explode"]
    chat = web()
    assistant_model.script(
        CallTools((ToolCall("explode", {"why": "boom"}), ToolCall("search_chats", '{"q": 1}'))),
        CallTools((ToolCall("search_chats", {"query": "nothing like it"}),)),
    )
    chat.start("tl-errors")
    subscribed(chat, "tl-errors")
    chat.say("tl-errors", "try things")

    events = chat.follow("tl-errors", reply_stored(2))

    results = {e["name"]: e for e in events_of(events, "tool_result")}
    assert results["explode"]["status"] == "failed"
    assert results["explode"]["result"] == "The tool failed: RuntimeError: boom"
    assert results["search_chats"]["status"] == "done"  # the second try, with arguments that fit
    invalid = ChatToolCall.objects.get(call_id="call-2-0-1")
    assert (invalid.status, invalid.args) == ("failed", {"q": 1})
    assert invalid.result.startswith("Invalid arguments for search_chats: query: Field required")
    second_request = assistant_model.requests[1]
    assert [m["content"] for m in second_request.tool_messages] == [results["explode"]["result"], invalid.result]
    assert events[-1].data["status"] == "complete"


def test_a_reply_stops_at_the_tool_call_limit_with_a_note_to_the_model_and_the_user(web, assistant_model, settings):
    settings.CHAT_ASSISTANT_MAX_TOOL_CALLS = 2
    chat = web(CHAT_ASSISTANT_MAX_TOOL_CALLS="2")
    search = ToolCall("search_chats", {"query": "x"})
    assistant_model.script(CallTools((search, search, search)), Reply("That is all I can do."))
    chat.start("tl-limit")
    subscribed(chat, "tl-limit")
    chat.say("tl-limit", "search a lot")

    events = chat.follow("tl-limit", reply_stored(2))

    statuses = [(e["call_id"], e["status"]) for e in events_of(events, "tool_result")]
    assert statuses == [("call-2-0-0", "done"), ("call-2-0-1", "done"), ("call-2-0-2", "failed")]
    assert events_of(events, "tool_result")[2]["result"] == "Not run: this reply reached its limit of 2 tool calls."
    last_request = assistant_model.requests[-1]
    assert last_request.tools == []
    assert "limit of 2 tool calls" in last_request.messages[0]["content"]
    assert events[-1].data["content"] == "That is all I can do."


def test_stop_while_an_approval_waits_settles_the_call_and_the_session_goes_on(web, assistant_model):
    chat = web()
    assistant_model.script(email_step())
    chat.start("tl-stop")
    subscribed(chat, "tl-stop")
    chat.say("tl-stop", "email me a summary")
    call_id, _ = awaiting_call(chat, "tl-stop")

    stopped = chat.post("sessions/tl-stop/stop/")
    events = chat.follow("tl-stop", reply_stored(2))
    late = chat.post(f"sessions/tl-stop/tool-calls/{call_id}/approve/")
    answered = chat.post("sessions/tl-stop/messages/", {"content": "never mind"}, wait="true")

    assert stopped.json() == {"stopped": True}
    [result] = events_of(events, "tool_result")
    assert (result["status"], result["result"]) == ("failed", "Not run: the reply was stopped first.")
    assert (events[-1].data["status"], events[-1].data["content"]) == ("stopped", "I'll email it.")
    assert late.status_code == 409
    assert (answered.status_code, answered.json()["seq"]) == (201, 4)
    assert mail.outbox == []


def test_a_pending_approval_survives_continue_as_new(web, assistant_model, dev_server):
    chat = web(CHAT_MAX_MESSAGES_PER_RUN="1")  # the first message makes continue-as-new due
    user_of(chat, email="u1@example.com")
    assistant_model.script(email_step())
    chat.start("tl-carried")
    subscribed(chat, "tl-carried")
    chat.say("tl-carried", "email me a summary")
    call_id, _ = awaiting_call(chat, "tl-carried")
    first_run = ChatSession.objects.get(session_id="tl-carried").run_id

    latest_run = wait_for(
        lambda: (r := asyncio.run(_latest_run("tl-carried", dev_server))) != first_run and r, what="a run"
    )
    approved = chat.post(f"sessions/tl-carried/tool-calls/{call_id}/approve/")
    events = chat.follow("tl-carried", reply_stored(2))

    assert latest_run != first_run
    assert (approved.status_code, approved.json()["status"]) == (200, "done")
    assert events[-1].data["content"] == "I'll email it.\n\nTool results: Sent to u1@example.com."
    assert len(mail.outbox) == 1


async def _latest_run(session_id: str, dev_server: DevServer) -> str:
    client = await Client.connect(dev_server.address)
    return (await client.get_workflow_handle(workflow_id_for(session_id)).describe()).run_id


def _worker_env(assistant_model, mail_server: MailServer) -> dict[str, str]:
    return {
        **{"CHAT_ASSISTANT_MODEL": TEST_MODEL, "OPENAI_BASE_URL": assistant_model.url, "OPENAI_API_KEY": "test-key"},
        **{"EMAIL_URL": mail_server.url, "CHAT_TURN_HEARTBEAT_TIMEOUT": "2"},
    }


def test_a_worker_killed_while_the_email_is_being_sent_gives_an_unknown_outcome_never_a_second_email(
    web, assistant_model, dev_server, tmp_path
):
    queue = f"test-{uuid.uuid4()}"
    with MailServer() as mail_server:
        env = _worker_env(assistant_model, mail_server)
        first = WorkerProcess(dev_server.address, log=tmp_path / "first.log", task_queue=queue, **env)
        chat = web(TEMPORAL_TASK_QUEUE=queue, CHAT_TURN_HEARTBEAT_TIMEOUT="2")
        user_of(chat, email="u1@example.com")
        assistant_model.script(email_step())
        chat.start("tl-killed")
        subscribed(chat, "tl-killed")
        chat.say("tl-killed", "email me a summary")
        call_id, _ = awaiting_call(chat, "tl-killed")
        mail_server.hold()  # the message arrives; its acknowledgement does not
        with ThreadPoolExecutor(1) as pool:
            approving = pool.submit(chat.post, f"sessions/tl-killed/tool-calls/{call_id}/approve/")
            wait_for(lambda: mail_server.held, what="the email on its way")
            second = WorkerProcess(dev_server.address, log=tmp_path / "second.log", task_queue=queue, **env)
            try:
                wait_for(lambda: "worker polling task queue" in second.output(), what="the second worker")
                first.kill()
                approved = approving.result(60)
                events = chat.follow("tl-killed", reply_stored(2))
            finally:
                mail_server.release()
                assert second.terminate() == 0
        received = mail_server.messages

    assert approved.status_code == 200, approved.text  # the decision stands, whatever became of the call
    [result] = events_of(events, "tool_result")
    assert result["status"] == "unknown"
    assert result["result"].startswith("Unknown outcome")
    assert len(received) == 1  # sent once, never again
    assert events[-1].data["status"] == "complete"
    [listed] = chat.get("sessions/tl-killed/tool-calls/").json()["results"]
    assert (listed["status"], listed["decided_by"]) == ("unknown", "u1")


@pytest.mark.temporal  # restarts a dev server of its own
def test_a_pending_approval_survives_a_worker_sigkill_and_a_temporal_restart_and_sends_one_email(
    web, assistant_model, tmp_path
):
    port = free_port()
    server = DevServer(port=port, db_filename=str(tmp_path / "temporal.db")).wait_ready()
    queue = f"test-{uuid.uuid4()}"
    with MailServer() as mail_server:
        env = _worker_env(assistant_model, mail_server)
        first = WorkerProcess(server.address, log=tmp_path / "first.log", task_queue=queue, **env)
        chat = web(TEMPORAL_ADDRESS=server.address, TEMPORAL_TASK_QUEUE=queue)
        user_of(chat, email="u1@example.com")
        assistant_model.script(email_step())
        second = None
        try:
            chat.start("tl-durable")
            subscribed(chat, "tl-durable")
            chat.say("tl-durable", "email me a summary")
            call_id, _ = awaiting_call(chat, "tl-durable")
            first.kill()
            server.process.kill()
            server.process.wait()
            server = DevServer(port=port, db_filename=str(tmp_path / "temporal.db")).wait_ready()
            second = WorkerProcess(server.address, log=tmp_path / "second.log", task_queue=queue, **env)
            approved = wait_for(
                lambda: (r := chat.post(f"sessions/tl-durable/tool-calls/{call_id}/approve/")).status_code != 503 and r,
                timeout=60,
                what="an answer from the restarted server",
            )
            events = chat.follow("tl-durable", reply_stored(2), within=90)
        finally:
            if second is not None:
                assert second.terminate() == 0
            server.stop()
        received = mail_server.messages

    assert approved.status_code == 200, approved.text  # with the call as it stood, or done if that was quick
    [listed] = chat.get("sessions/tl-durable/tool-calls/").json()["results"]
    assert (listed["status"], listed["decided_by"], listed["result"]) == ("done", "u1", "Sent to u1@example.com.")
    assert len(received) == 1
    assert received[0]["X-Chat-Tool-Call"] == call_id
    assert events[-1].data["content"] == "I'll email it.\n\nTool results: Sent to u1@example.com."


# The registry and the built-in tools, called directly (no Temporal).


def test_a_tool_setting_that_names_no_function_stops_start_up_naming_the_setting(settings):
    from django.core.exceptions import ImproperlyConfigured

    from chat.conf import chat_settings

    settings.CHAT_ASSISTANT_TOOLS = ["chat.tools.search_chats", "chat.tools.no_such_tool"]
    with pytest.raises(ImproperlyConfigured) as failure:
        chat_settings.check()
    assert "CHAT_ASSISTANT_TOOLS" in str(failure.value)
    assert "chat.tools.no_such_tool" in str(failure.value)


def test_a_tool_is_described_to_the_model_from_its_signature_without_its_context():
    from chat.tools import get_tools

    definitions = {name: tool.definition for name, tool in get_tools().items()}

    assert definitions["send_email"].parameters_json_schema["required"] == ["subject", "body"]
    assert set(definitions["search_chats"].parameters_json_schema["properties"]) == {"query"}
    assert definitions["search_chats"].description.startswith("Searches the messages the user wrote")


def test_search_chats_reads_only_the_acting_users_messages():
    from chat.tools import ToolContext, search_chats

    users = [get_user_model().objects.create_user(name) for name in ("alice", "bob")]
    for user in users:
        session = ChatSession.objects.create(session_id=f"s-{user.username}", user=user, workflow_id="w", run_id="r")
        ChatMessage.objects.create(
            session=session, seq=1, role="user", content=f"{user.username} likes pasta", created_at="2026-12-01T00:00Z"
        )

    found = json.loads(search_chats(ToolContext(users[0], "elsewhere", 2, "call-2-0-0"), "PASTA"))
    nothing = search_chats(ToolContext(users[0], "elsewhere", 2, "call-2-0-0"), "risotto")

    assert [(hit["session_id"], hit["snippet"]) for hit in found] == [("s-alice", "alice likes pasta")]
    assert nothing == "No earlier message contains 'risotto'."


def test_the_demo_model_calls_the_built_in_tools_when_asked_and_sums_up_what_they_answered(settings):
    from chat.assistant import StoredCall, StoredStep, StoredTurn, stream_step
    from chat.tools import tool_definitions

    settings.CHAT_ASSISTANT_MODEL, settings.CHAT_DEMO_WORD_DELAY = "demo", 0
    tools = tool_definitions()

    def ask(*conversation: StoredTurn) -> object:
        return asyncio.run(stream_step(conversation, lambda piece: None, budget_chars=10_000, tools=tools))

    search = ask(StoredTurn("user", "Search my chats for pasta."))
    email = ask(StoredTurn("user", "hello"), StoredTurn("user", "please email me a summary"))
    hits = json.dumps([{"session_id": "0123456789", "seq": 3, "snippet": "pasta with basil"}])
    step = StoredStep(search.text, (StoredCall("call-2-0-0", "search_chats", "{}", hits),))
    answered = ask(StoredTurn("user", "search my chats for pasta"), StoredTurn("assistant", "", (step,)))
    plain = ask(StoredTurn("user", "hi"))
    markdown = ask(StoredTurn("user", "show me some Markdown"))

    assert [(call.name, json.loads(call.args)) for call in search.calls] == [("search_chats", {"query": "pasta"})]
    [call] = email.calls
    assert call.name == "send_email"
    assert json.loads(call.args)["body"] == "What you asked in this chat:\n- hello\n- please email me a summary"
    assert answered.calls == []
    assert answered.text == "(demo model) I found 1 earlier message:\n- “pasta with basil” (chat 01234567, message 3)"
    assert (plain.calls, plain.text.startswith("(demo model) You said: “hi”")) == ([], True)
    assert "**Markdown**" not in plain.text
    assert "| send_email | yes |" in markdown.text
    assert '```python\nprint("a code block, with a Copy button")\n```' in markdown.text


def test_the_demo_user_has_an_address_for_send_email_also_when_it_was_made_before(settings):
    from django.core.management import call_command

    settings.DEBUG = True
    get_user_model().objects.create_user("demo")  # as make run made it before the assistant could email
    call_command("create_demo_user", stdout=io.StringIO())

    assert get_user_model().objects.get(username="demo").email == "demo@example.com"
