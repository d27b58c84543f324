"""The scripted model server against the real OpenAI SDK and pydantic-ai's OpenAI path; no Temporal server."""

import asyncio
import json
import time
from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelRequest, ToolCallPart, UserPromptPart
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import ToolDefinition

from devtools.model_server import CallTools, DropAfter, Fail, Hang, ModelServer, Reply, ToolCall, demo_tool_step

USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def client(model_server) -> AsyncIterator[AsyncOpenAI]:
    """The real OpenAI SDK client on the server, making one attempt a call (its default is three)."""
    async with AsyncOpenAI(base_url=model_server.url, api_key="test-key", max_retries=0) as client:
        yield client


async def test_streamed_reply_arrives_in_scripted_chunks_then_usage(model_server, client):
    model_server.script(Reply("one two three four", chunk_delay=0.05))

    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    elapsed = time.monotonic() - started

    first, *content, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert [chunk.choices[0].delta.content for chunk in content] == ["one ", "two ", "three ", "four"]
    assert finish.choices[0].finish_reason == "stop"
    assert all(chunk.choices[0].finish_reason is None for chunk in [first, *content])
    assert usage.choices == []
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens, usage.usage.total_tokens) == (2, 4, 6)
    assert {(chunk.id, chunk.object, chunk.model) for chunk in chunks} == {
        ("chatcmpl-000001", "chat.completion.chunk", "gpt-test")
    }
    assert elapsed >= 3 * 0.05  # three pauses between four words


async def test_stream_without_include_usage_ends_at_the_finish_chunk(model_server, client):
    stream = await client.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    chunks = [chunk async for chunk in stream]

    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "You said: hello there"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


async def test_non_streamed_reply_is_a_chat_completion_with_usage(model_server, client):
    model_server.script(Reply("Fine, thanks.", chunk_delay=0))

    completion = await client.chat.completions.create(model="gpt-test", messages=USER)

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Fine, thanks."
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 2)


async def test_default_reply_repeats_the_last_user_message_the_same_way_each_time(model_server, client):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "You said: first"},
        {"role": "user", "content": [{"type": "text", "text": "second  question"}]},
    ]

    replies = [
        (await client.chat.completions.create(model="gpt-test", messages=messages)).choices[0].message.content
        for _ in range(2)
    ]

    assert replies == ["You said: second  question"] * 2
    assert [request.chunks_sent for request in model_server.requests] == [4, 4]


async def test_500_raises_internal_server_error_and_the_next_request_succeeds(model_server, client):
    model_server.script(Fail(500))

    with pytest.raises(openai.InternalServerError) as failure:
        await client.chat.completions.create(model="gpt-test", messages=USER)
    completion = await client.chat.completions.create(model="gpt-test", messages=USER)

    assert failure.value.status_code == 500
    assert failure.value.type == "server_error"
    assert completion.choices[0].message.content == "You said: hello there"
    assert [request.outcome for request in model_server.requests] == ["failed", "completed"]


async def test_429_raises_rate_limit_error_carrying_retry_after(model_server, client):
    model_server.script(Fail(429, retry_after=2))

    with pytest.raises(openai.RateLimitError) as failure:
        await client.chat.completions.create(model="gpt-test", messages=USER, stream=True)

    assert failure.value.response.headers["retry-after"] == "2"
    assert failure.value.response.headers["retry-after-ms"] == "2000"
    assert failure.value.code == "rate_limit_exceeded"


async def test_dropped_stream_raises_in_the_middle_of_iteration_after_k_chunks(model_server, client):
    model_server.script(DropAfter(2, text="one two three four", chunk_delay=0))
    stream = await client.chat.completions.create(model="gpt-test", messages=USER, stream=True)

    received = [(await anext(stream)).choices[0].delta.content for _ in range(3)]
    with pytest.raises(openai.APIConnectionError):
        await anext(stream)

    assert received == ["", "one ", "two "]  # the role chunk, then two words
    assert model_server.outcomes == ["dropped"]


async def test_dropped_non_streamed_request_gets_no_answer(model_server, client):
    model_server.script(DropAfter(0))

    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="gpt-test", messages=USER)


async def test_hang_answers_nothing_until_released(model_server, client):
    model_server.script(Hang(text="finally"))
    call = asyncio.create_task(client.chat.completions.create(model="gpt-test", messages=USER))

    await model_server.wait_until_async(lambda server: server.outcomes == ["hanging"])
    assert not call.done()
    model_server.release()
    completion = await asyncio.wait_for(call, timeout=5)

    assert completion.choices[0].message.content == "finally"


async def test_a_hang_scripted_after_release_hangs_again(model_server, client):
    model_server.script(Hang())
    model_server.release()
    await client.chat.completions.create(model="gpt-test", messages=USER)  # released before it arrived

    model_server.script(Hang())
    call = asyncio.create_task(client.chat.completions.create(model="gpt-test", messages=USER))

    await model_server.wait_until_async(lambda server: server.outcomes == ["completed", "hanging"])
    model_server.release()
    await asyncio.wait_for(call, timeout=5)


async def test_hang_after_chunks_stalls_the_stream_until_released(model_server, client):
    model_server.script(Hang(after_chunks=1, text="one two", chunk_delay=0))
    stream = await client.chat.completions.create(model="gpt-test", messages=USER, stream=True)

    assert (await anext(stream)).choices[0].delta.role == "assistant"
    assert (await anext(stream)).choices[0].delta.content == "one "
    next_chunk = asyncio.ensure_future(anext(stream))
    await model_server.wait_until_async(lambda server: server.outcomes == ["hanging"])
    assert not next_chunk.done()
    model_server.release()

    assert (await asyncio.wait_for(next_chunk, timeout=5)).choices[0].delta.content == "two"


async def test_slow_first_token_outlasts_a_shorter_read_timeout(model_server, client):
    model_server.script(Reply(first_token_delay=3))
    stream = await client.with_options(timeout=0.5).chat.completions.create(
        model="gpt-test", messages=USER, stream=True
    )

    with pytest.raises(openai.APITimeoutError):
        await anext(stream)  # the headers came at once; the first chunk did not

    await model_server.wait_until_async(lambda server: server.outcomes == ["client_gone"], timeout=2)
    assert model_server.requests[0].chunks_sent == 0


async def test_slow_first_token_delays_the_first_chunk(model_server, client):
    model_server.script(Reply("a b", chunk_delay=0, first_token_delay=0.2))
    started = time.monotonic()
    stream = await client.chat.completions.create(model="gpt-test", messages=USER, stream=True)

    chunks = [chunk async for chunk in stream]

    assert time.monotonic() - started >= 0.2
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "a b"


async def test_a_client_that_goes_away_is_seen_at_once(model_server, client):
    model_server.script(Hang())
    call = asyncio.create_task(client.chat.completions.create(model="gpt-test", messages=USER))
    await model_server.wait_until_async(lambda server: server.outcomes == ["hanging"])

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    await model_server.wait_until_async(lambda server: server.outcomes == ["client_gone"], timeout=2)


async def test_requests_are_recorded_as_received(model_server, client):
    messages = [{"role": "system", "content": "Be brief."}, *USER]

    stream = await client.chat.completions.create(
        model="gpt-test", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    [chunk async for chunk in stream]

    # The client stops reading at [DONE]; the server marks the request completed a moment later.
    await model_server.wait_until_async(lambda server: server.outcomes == ["completed"])
    (request,) = model_server.requests
    assert (request.method, request.path, request.model) == ("POST", "/v1/chat/completions", "gpt-test")
    assert request.messages == messages
    assert (request.stream, request.include_usage) == (True, True)
    assert request.headers["authorization"] == "Bearer test-key"


async def test_wait_for_requests_gives_up_at_its_deadline(model_server):
    with pytest.raises(TimeoutError, match=r"1 request\(s\); outcomes so far: \[\]"):
        await model_server.wait_for_requests_async(1, timeout=0.05)


async def test_responses_api_is_refused_with_a_message_naming_chat_completions(model_server, client):
    with pytest.raises(openai.NotFoundError, match="openai-chat:"):
        await client.responses.create(model="gpt-test", input="hello")

    assert model_server.requests == []
    assert model_server.all_requests[0].path == "/v1/responses"


@pytest.fixture
async def agent(model_server) -> AsyncIterator[Agent]:
    """An agent on pydantic-ai's Chat Completions model; entering it closes the provider's HTTP client after."""
    provider = OpenAIProvider(base_url=model_server.url, api_key="test-key")
    async with Agent(OpenAIChatModel("gpt-test", provider=provider), instructions="Be brief.") as agent:
        yield agent


async def test_pydantic_ai_streams_the_text_as_sent_with_usage(model_server, agent):
    model_server.script(Reply("Streaming works fine.", chunk_delay=0.01))

    async with agent.run_stream("hello there", model_settings={"max_retries": 0}) as result:
        deltas = [delta async for delta in result.stream_text(delta=True, debounce_by=None)]
        usage = result.usage

    assert deltas == ["Streaming ", "works ", "fine."]
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (1, 4, 3)
    (request,) = model_server.requests
    assert request.include_usage
    assert request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]


async def test_pydantic_ai_makes_one_attempt_with_max_retries_0_and_three_without(model_server, agent):
    model_server.script(Fail(500), *[Fail(500, retry_after=0.01)] * 3)

    with pytest.raises(ModelHTTPError) as once:
        await agent.run("hello", model_settings={"max_retries": 0})
    with pytest.raises(ModelHTTPError):
        await agent.run("hello")  # the OpenAI SDK's own default: two retries

    assert once.value.status_code == 500
    assert len(model_server.requests) == 4
    assert model_server.pending == 0


SEARCH_SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
EMAIL_SCHEMA = {
    "type": "object",
    "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
    "required": ["subject", "body"],
}
TOOLS = [
    {"type": "function", "function": {"name": "search_chats", "parameters": SEARCH_SCHEMA}},
    {"type": "function", "function": {"name": "send_email", "parameters": EMAIL_SCHEMA}},
]


async def test_streamed_tool_calls_reassemble_into_the_scripted_calls(model_server, client):
    model_server.script(
        CallTools(
            (
                ToolCall("search_chats", {"query": "pizza dough"}),
                ToolCall("send_email", {"subject": "Dough", "body": "500 g flour, 325 g water"}, id="call_mine"),
            ),
            chunk_delay=0,
        )
    )

    async with client.chat.completions.stream(
        model="gpt-test", messages=USER, tools=TOOLS, stream_options={"include_usage": True}
    ) as stream:
        completion = await stream.get_final_completion()

    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [
        (call.id, call.function.name, json.loads(call.function.arguments)) for call in choice.message.tool_calls
    ] == [
        ("call_1_0", "search_chats", {"query": "pizza dough"}),
        ("call_mine", "send_email", {"subject": "Dough", "body": "500 g flour, 325 g water"}),
    ]
    assert completion.usage.completion_tokens == model_server.requests[0].chunks_sent


async def test_streamed_tool_calls_arrive_as_openai_sends_them(model_server, client):
    model_server.script(CallTools((ToolCall("search_chats", {"query": "pizza"}),), chunk_delay=0))

    stream = await client.chat.completions.create(model="gpt-test", messages=USER, tools=TOOLS, stream=True)
    role, first, *pieces, finish = [chunk async for chunk in stream]

    assert (role.choices[0].delta.role, role.choices[0].delta.content) == ("assistant", None)  # no text: null
    (opening,) = first.choices[0].delta.tool_calls
    assert (opening.index, opening.id, opening.type) == (0, "call_1_0", "function")
    assert (opening.function.name, opening.function.arguments) == ("search_chats", "")
    assert 1 < len(pieces) <= 3
    assert all(piece.choices[0].delta.tool_calls[0].id is None for piece in pieces)
    assert "".join(piece.choices[0].delta.tool_calls[0].function.arguments for piece in pieces) == '{"query":"pizza"}'
    assert (finish.choices[0].delta.tool_calls, finish.choices[0].finish_reason) == (None, "tool_calls")


async def test_text_streams_before_the_tool_calls(model_server, client):
    model_server.script(CallTools((ToolCall("search_chats", {"query": "pizza"}),), text="Let me look.", chunk_delay=0))

    async with client.chat.completions.stream(model="gpt-test", messages=USER, tools=TOOLS) as stream:
        events = [event async for event in stream]
        completion = await stream.get_final_completion()

    words = [
        (index, event.delta) for index, event in enumerate(events) if event.type == "content.delta" and event.delta
    ]
    first_call = next(index for index, event in enumerate(events) if event.type.startswith("tool_calls."))
    assert [word for _, word in words] == ["Let ", "me ", "look."]
    assert words[-1][0] < first_call
    assert completion.choices[0].message.content == "Let me look."
    assert completion.choices[0].message.tool_calls[0].function.name == "search_chats"


async def test_non_streamed_tool_calls_come_in_the_message(model_server, client):
    model_server.script(CallTools((ToolCall("search_chats", {"query": "pizza"}, id="call_x"),), chunk_delay=0))

    completion = await client.chat.completions.create(model="gpt-test", messages=USER, tools=TOOLS)

    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [
        (call.id, call.type, call.function.name, call.function.arguments) for call in choice.message.tool_calls
    ] == [("call_x", "function", "search_chats", '{"query":"pizza"}')]


async def test_arguments_given_as_a_string_are_sent_verbatim(model_server, client):
    model_server.script(
        CallTools((ToolCall("search_chats", '{"query": 42, oops'), ToolCall("send_email", "")), chunk_delay=0)
    )

    async with client.chat.completions.stream(model="gpt-test", messages=USER, tools=TOOLS) as stream:
        completion = await stream.get_final_completion()

    assert [(call.id, call.function.arguments) for call in completion.choices[0].message.tool_calls] == [
        ("call_1_0", '{"query": 42, oops'),
        ("call_1_1", ""),
    ]


async def test_offered_tools_and_tool_results_are_recorded(model_server, client):
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "search_chats", "arguments": "{}"}},
                {"id": "call_b", "type": "function", "function": {"name": "search_chats", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "3 chats found"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "no chats found"}]},
    ]

    await client.chat.completions.create(model="gpt-test", messages=messages, tools=TOOLS)

    (request,) = model_server.requests
    assert request.tools == TOOLS
    assert request.tool_names == ["search_chats", "send_email"]
    assert request.tool_messages == [
        {"tool_call_id": "call_a", "content": "3 chats found"},
        {"tool_call_id": "call_b", "content": "no chats found"},
    ]


async def test_a_request_without_tools_records_none(model_server, client):
    await client.chat.completions.create(model="gpt-test", messages=USER)

    (request,) = model_server.requests
    assert (request.tools, request.tool_names, request.tool_messages) == ([], [], [])


async def test_default_reply_after_tool_results_echoes_the_trailing_ones(model_server, client):
    messages = [
        {"role": "tool", "tool_call_id": "call_old", "content": "an earlier result"},
        {"role": "user", "content": "search my chats for pizza"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "call_a", "content": "3 chats found"},
        {"role": "tool", "tool_call_id": "call_b", "content": "email sent"},
    ]

    completion = await client.chat.completions.create(model="gpt-test", messages=messages)

    assert completion.choices[0].message.content == "Tool results: 3 chats found | email sent"
    assert completion.choices[0].finish_reason == "stop"


async def test_pydantic_ai_reads_a_streamed_tool_call_into_a_tool_call_part(model_server):
    model_server.script(CallTools((ToolCall("search_chats", {"query": "pizza"}),), text="Searching.", chunk_delay=0))
    parameters = ModelRequestParameters(
        function_tools=[ToolDefinition(name="search_chats", parameters_json_schema=SEARCH_SCHEMA)]
    )
    messages = [ModelRequest(parts=[UserPromptPart("search my chats for pizza")])]
    provider = OpenAIProvider(base_url=model_server.url, api_key="test-key")

    async with (
        OpenAIChatModel("gpt-test", provider=provider) as model,
        model.request_stream(messages, {"max_retries": 0}, parameters) as streamed,
    ):
        [event async for event in streamed]
    response = streamed.get()

    (call,) = [part for part in response.parts if isinstance(part, ToolCallPart)]
    assert (call.tool_name, call.tool_call_id, call.args_as_dict()) == ("search_chats", "call_1_0", {"query": "pizza"})
    assert response.finish_reason == "tool_call"
    assert model_server.requests[0].tool_names == ["search_chats"]


@pytest.fixture
async def demo_client() -> AsyncIterator[AsyncOpenAI]:
    """A client on a server answering as `python -m devtools.model_server --tools` does."""
    with ModelServer(default_step=demo_tool_step) as server:
        async with AsyncOpenAI(base_url=server.url, api_key="test-key", max_retries=0) as client:
            yield client


async def ask(client: AsyncOpenAI, text: str, tools: list = TOOLS) -> openai.types.chat.ChatCompletionMessage:
    completion = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": text}], tools=tools
    )
    return completion.choices[0].message


async def test_tools_demo_searches_the_chats_for_what_follows(demo_client):
    message = await ask(demo_client, "Please Search my chats for pizza dough.")

    (call,) = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("search_chats", {"query": "pizza dough"})


async def test_tools_demo_emails_a_summary_of_the_request(demo_client):
    message = await ask(demo_client, "Email me the pizza recipe")

    (call,) = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "send_email",
        {"subject": "Email me the pizza recipe", "body": "You asked: Email me the pizza recipe"},
    )


async def test_tools_demo_gives_the_default_reply_when_the_tool_is_not_offered(demo_client):
    message = await ask(demo_client, "search my chats for pizza", tools=TOOLS[1:])

    assert (message.content, message.tool_calls) == ("You said: search my chats for pizza", None)
