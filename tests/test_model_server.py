"""The scripted model server against the real OpenAI SDK and pydantic-ai's OpenAI path; no Temporal server."""

import asyncio
import time
from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from devtools.model_server import DropAfter, Fail, Hang, Reply

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
