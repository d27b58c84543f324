"""A real, local OpenAI-compatible Chat Completions server that streams and fails as a test scripts it.

The app's model path (pydantic-ai → the OpenAI SDK → HTTP) runs unchanged against it: point `base_url` at
`ModelServer.url`. Each request takes the next scripted step (`Reply`, `CallTools`, `Fail`, `DropAfter`, `Hang`), or
the default reply when none is left: `"You said: <the last user message>"`, or `"Tool results: <the trailing tool
messages' contents, joined by ' | '>"` when the last message is a tool's, one word a chunk, so two runs agree. Every
request is recorded (`.requests`) for assertions on what the model was sent, tools and tool results included.

As a process of its own, for a developer to point the app at (`OPENAI_BASE_URL=http://127.0.0.1:8001/v1`):

    python -m devtools.model_server --port 8001 [--chunk-delay 0.02] [--first-token-delay 0.2] [--tools]

`--tools` calls the app's tools with no API key: a user message saying "search my chats for X" is answered with a
`search_chats` call `{"query": "X"}`, one saying "email me" with a `send_email` call, when the request offers them.

It serves `POST /v1/chat/completions` only. pydantic-ai's `openai:` model names use the Responses API
(`/v1/responses`); name the model `openai-chat:<name>` to reach this server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import logging
import math
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from devtools.serving import LoopServer

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CHUNK_DELAY = 0.02


@dataclass(frozen=True)
class Reply:
    """A successful answer, streamed one word a chunk every `chunk_delay` seconds after `first_token_delay`.

    `text=None` gives the default reply. A non-streamed request gets the whole answer after the time the stream
    would have taken.
    """

    text: str | None = None
    chunk_delay: float = DEFAULT_CHUNK_DELAY
    first_token_delay: float = 0.0


@dataclass(frozen=True)
class Fail:
    """An HTTP error with an OpenAI-shaped JSON body; `retry_after` (seconds) sets `Retry-After` and `retry-after-ms`.

    The SDK reads `retry-after-ms` first, so a fraction of a second is honoured; `Retry-After` is rounded up.
    """

    status: int = 500
    retry_after: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class DropAfter:
    """Closes the connection after `chunks` content chunks of a streamed reply, before its finish chunk.

    A non-streamed request has its connection closed with no answer at all.
    """

    chunks: int
    text: str | None = None
    chunk_delay: float = DEFAULT_CHUNK_DELAY


@dataclass(frozen=True)
class Hang:
    """Accepts the request and answers nothing until `ModelServer.release()`, then replies as `Reply(text)` would.

    `after_chunks=None` hangs before the response headers; a number hangs a streamed reply after that many content
    chunks (a non-streamed request then hangs before its answer).
    """

    after_chunks: int | None = None
    text: str | None = None
    chunk_delay: float = DEFAULT_CHUNK_DELAY


@dataclass(frozen=True)
class ToolCall:
    """One function call of a `CallTools` step; `arguments` given as a string are sent verbatim (invalid JSON too).

    `id=None` gives `call_<request seq>_<index of the call>`.
    """

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class CallTools:
    """An answer that calls tools (finish reason `tool_calls`): `text` first, one word a chunk, then each call as
    OpenAI streams it, its name in one delta and its JSON arguments in a few more, every `chunk_delay` seconds."""

    calls: tuple[ToolCall, ...]
    text: str = ""
    chunk_delay: float = DEFAULT_CHUNK_DELAY


Step = Reply | CallTools | Fail | DropAfter | Hang


@dataclass
class RecordedRequest:
    """One request the server received, and what it did with it; the server thread updates `outcome` as it goes."""

    seq: int
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any
    step: Step | None = None
    chunks_sent: int = 0  # content and tool-call chunks (the role and finish chunks aside)
    # "pending", "hanging", "completed", "failed", "dropped", "client_gone", "stopped" (by ModelServer.stop()),
    # "rejected" (not a chat completion request)
    outcome: str = "pending"

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", []) if isinstance(self.body, dict) else []

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def stream(self) -> bool:
        return bool(isinstance(self.body, dict) and self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options") if isinstance(self.body, dict) else None
        return bool(self.stream and isinstance(options, dict) and options.get("include_usage"))

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""

    @property
    def last_role(self) -> str | None:
        return self.messages[-1].get("role") if self.messages else None

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The tools the request offered, as sent: `[{"type": "function", "function": {"name": ...}}, ...]`."""
        tools = self.body.get("tools") if isinstance(self.body, dict) else None
        return tools if isinstance(tools, list) else []

    @property
    def tool_names(self) -> list[str]:
        return [tool.get("function", {}).get("name", "") for tool in self.tools]

    @property
    def tool_messages(self) -> list[dict[str, str]]:
        """The tool results the request carried, in order: `{"tool_call_id": ..., "content": ...}` each."""
        return [
            {"tool_call_id": message.get("tool_call_id", ""), "content": content_text(message.get("content"))}
            for message in self.messages
            if message.get("role") == "tool"
        ]


def content_text(content: Any) -> str:
    """The text of a message's `content`: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def split_words(text: str) -> list[str]:
    """Chunks of one word each with the whitespace after it, so that the chunks join back into `text`."""
    return re.findall(r"^\s+|\S+\s*", text)


def split_arguments(arguments: str, pieces: int = 3) -> list[str]:
    """`arguments` in at most `pieces` consecutive parts, as OpenAI streams a call's arguments in several deltas."""
    size = max(1, math.ceil(len(arguments) / pieces))
    return [arguments[start : start + size] for start in range(0, len(arguments), size)]


def default_reply(request: RecordedRequest) -> str:
    if request.last_role == "tool":
        trailing = list(itertools.takewhile(lambda message: message.get("role") == "tool", reversed(request.messages)))
        return "Tool results: " + " | ".join(content_text(message.get("content")) for message in reversed(trailing))
    said = request.last_user_text.strip()
    return f"You said: {said}" if said else "You said nothing."


SEARCH_CHATS = "search_chats"
SEND_EMAIL = "send_email"
SEARCH_REQUEST = re.compile(r"search my chats for\s+(?P<query>.+)", re.IGNORECASE | re.DOTALL)


def demo_tool_step(request: RecordedRequest, *, chunk_delay: float = DEFAULT_CHUNK_DELAY) -> CallTools | None:
    """The `--tools` answer to a user message asking to search the chats or to be emailed, when the request offers
    that tool; None (the default reply) otherwise, and always after a tool result."""
    if request.last_role != "user":
        return None
    text = request.last_user_text.strip()
    if SEARCH_CHATS in request.tool_names and (match := SEARCH_REQUEST.search(text)):
        query = match["query"].strip().rstrip(".?!").strip("\"'“”")
        return CallTools((ToolCall(SEARCH_CHATS, {"query": query}),), chunk_delay=chunk_delay)
    if SEND_EMAIL in request.tool_names and "email me" in text.lower():
        words = text.split()
        subject = " ".join(words[:8]) + ("…" if len(words) > 8 else "")
        body = f"You asked: {text}"
        return CallTools((ToolCall(SEND_EMAIL, {"subject": subject, "body": body}),), chunk_delay=chunk_delay)
    return None


def prompt_tokens(request: RecordedRequest) -> int:
    """Stands in for a tokenizer: the words in the request's messages, at least one."""
    return max(1, sum(len(content_text(message.get("content")).split()) for message in request.messages))


def error_body(status: int, message: str | None) -> dict[str, Any]:
    kinds = {
        400: ("invalid_request_error", None, "The request could not be read."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        404: ("invalid_request_error", "not_found", "Not found."),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again later."),
    }
    kind, code, default = kinds.get(
        status,
        ("server_error", None, "The server had an error while processing your request.")
        if status >= 500
        else ("invalid_request_error", None, "The request failed."),
    )
    return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class ModelServer(LoopServer):
    """The server on its own thread and event loop, on 127.0.0.1 and a free port unless given one."""

    _name = "model server"

    def __init__(
        self,
        port: int = 0,
        *,
        chunk_delay: float = DEFAULT_CHUNK_DELAY,
        first_token_delay: float = 0.0,
        host: str = "127.0.0.1",
        default_step: Callable[[RecordedRequest], Step | None] | None = None,
    ) -> None:
        super().__init__(port, host=host)
        self.chunk_delay = chunk_delay
        self.first_token_delay = first_token_delay
        # What an unscripted request gets when it returns a step; the default reply when it returns None.
        self.default_step = default_step
        self._steps: deque[Step] = deque()
        self._requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._released: asyncio.Event | None = None
        self._handlers: set[asyncio.Task] = set()
        self._stopping = False

    @property
    def url(self) -> str:
        """The base URL the OpenAI SDK takes (`base_url`, `OPENAI_BASE_URL`)."""
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        """Ends every request still being answered (hung ones included) and stops the loop."""
        super().stop()

    def script(self, *steps: Step) -> None:
        """Queues behaviours for the next requests, one step a request, in order; then the default reply again.

        A `Hang` scripted after `release()` hangs again: the release is withdrawn before the step is queued.
        """
        if self._thread.is_alive() and any(isinstance(step, Hang) for step in steps):
            self._call(self._rearm())
        with self._changed:
            self._steps.extend(steps)

    @property
    def pending(self) -> int:
        """Scripted steps no request has taken yet."""
        with self._changed:
            return len(self._steps)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The chat completion requests received so far (not the rejected ones, which `all_requests` keeps)."""
        return [request for request in self.all_requests if request.outcome != "rejected"]

    @property
    def outcomes(self) -> list[str]:
        """Each chat completion request's outcome so far, in order: `wait_until(lambda s: s.outcomes == [...])`."""
        return [request.outcome for request in self.requests]

    @property
    def all_requests(self) -> list[RecordedRequest]:
        with self._changed:
            return list(self._requests)

    def release(self) -> None:
        """Lets every hung request go on with its reply; a `Hang` already queued then passes straight through."""
        self._loop.call_soon_threadsafe(self._release)

    def wait_until_async(
        self, condition: Callable[[ModelServer], T], *, timeout: float = 5, what: str = "condition"
    ) -> Awaitable[T]:
        """`wait_until` for a test on an event loop (await it): the blocking wait runs on a worker thread."""
        return asyncio.to_thread(self.wait_until, condition, timeout=timeout, what=what)

    def wait_for_requests(self, count: int, *, timeout: float = 5) -> list[RecordedRequest]:
        """The requests, once at least `count` chat completion requests have arrived."""
        return self.wait_until(
            lambda server: len(requests := server.requests) >= count and requests,
            timeout=timeout,
            what=f"{count} request(s)",
        )

    def wait_for_requests_async(self, count: int, *, timeout: float = 5) -> Awaitable[list[RecordedRequest]]:
        return asyncio.to_thread(self.wait_for_requests, count, timeout=timeout)

    def _progress(self) -> str:
        return f"outcomes so far: {self.outcomes}"

    async def _start(self) -> None:
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_route("*", "/{tail:.*}", self._not_served)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=1
        )
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def _stop(self) -> None:
        self._stopping = True
        self._release()
        for task in list(self._handlers):
            task.cancel()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _rearm(self) -> None:
        assert self._released is not None
        self._released.clear()

    def _release(self) -> None:
        assert self._released is not None
        self._released.set()

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._changed:
            recorded = RecordedRequest(
                seq=len(self._requests) + 1,
                method=request.method,
                path=request.path,
                headers={name.lower(): value for name, value in request.headers.items()},
                body=body,
            )
            self._requests.append(recorded)
            self._changed.notify_all()
        return recorded

    def _finish(self, recorded: RecordedRequest, outcome: str) -> None:
        recorded.outcome = outcome
        self._notify()
        logger.info(
            "%s %s #%d %s: %s, %d chunk(s)",
            recorded.method,
            recorded.path,
            recorded.seq,
            type(recorded.step).__name__ if recorded.step else "-",
            outcome,
            recorded.chunks_sent,
        )

    async def _not_served(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        self._finish(recorded, "rejected")
        message = (
            f"{request.method} {request.path} is not served here: this test server speaks Chat Completions only "
            "(POST /v1/chat/completions; in pydantic-ai, an `openai-chat:` model rather than `openai:`)."
        )
        return web.json_response(error_body(404, message), status=404)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        recorded = await self._record(request)
        try:
            return await self._answer(request, recorded)
        except asyncio.CancelledError:
            # aiohttp cancels the handler as soon as the client disconnects (handler_cancellation), so a test sees a
            # cancelled or timed-out call at once, even while the server is sleeping or hung.
            if recorded.outcome in ("pending", "hanging"):
                self._finish(recorded, "stopped" if self._stopping else "client_gone")
            raise
        finally:
            self._handlers.discard(task)

    async def _answer(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        if not isinstance(recorded.body, dict) or not isinstance(recorded.body.get("messages"), list):
            self._finish(recorded, "failed")
            return web.json_response(error_body(400, "Expected a JSON body with a `messages` list."), status=400)
        with self._changed:
            step = self._steps.popleft() if self._steps else None
        if step is None:
            step = (self.default_step and self.default_step(recorded)) or Reply(
                chunk_delay=self.chunk_delay, first_token_delay=self.first_token_delay
            )
        recorded.step = step

        if isinstance(step, Fail):
            headers = {}
            if step.retry_after is not None:
                headers["Retry-After"] = str(math.ceil(step.retry_after))
                headers["retry-after-ms"] = str(round(step.retry_after * 1000))
            self._finish(recorded, "failed")
            return web.json_response(error_body(step.status, step.message), status=step.status, headers=headers)

        if isinstance(step, Hang) and (step.after_chunks is None or not recorded.stream):
            await self._hang(recorded)

        words = split_words(default_reply(recorded) if step.text is None else step.text)
        calls = step.calls if isinstance(step, CallTools) else ()
        deltas = [{"content": word} for word in words] + self._tool_call_deltas(recorded, calls)
        first_token_delay = step.first_token_delay if isinstance(step, Reply) else 0.0
        finish_reason = "tool_calls" if calls else "stop"
        if not recorded.stream:
            if isinstance(step, DropAfter):
                return self._drop(request, recorded)
            await asyncio.sleep(first_token_delay + step.chunk_delay * len(deltas))
            recorded.chunks_sent = len(deltas)
            self._finish(recorded, "completed")
            completion = self._completion(recorded, "".join(words), self._tool_calls(recorded, calls))
            return web.json_response(completion, headers=self._headers(recorded))

        response = web.StreamResponse(headers={**self._headers(recorded), "Content-Type": "text/event-stream"})
        drop = step.chunks if isinstance(step, DropAfter) else None
        try:
            await response.prepare(request)
            # The role arrives first with empty content (null before tool calls with no text), as OpenAI sends it;
            # it is not counted as a chunk.
            await asyncio.sleep(first_token_delay)
            content = None if calls and not words else ""
            await response.write(sse(self._chunk(recorded, {"role": "assistant", "content": content})))
            for index, delta in enumerate(deltas):
                if index == drop:
                    break
                if isinstance(step, Hang) and index == step.after_chunks:
                    await self._hang(recorded)
                if index:
                    await asyncio.sleep(step.chunk_delay)
                await response.write(sse(self._chunk(recorded, delta)))
                recorded.chunks_sent += 1
                self._notify()
            if drop is None:
                await response.write(sse(self._chunk(recorded, {}, finish_reason=finish_reason)))
                if recorded.include_usage:
                    await response.write(sse({**self._chunk(recorded), "choices": [], "usage": self._usage(recorded)}))
                await response.write(sse("[DONE]"))
                await response.write_eof()
        except ConnectionResetError:  # the client went away mid-answer (it cancelled, or timed out)
            self._finish(recorded, "client_gone")
            return response
        if drop is not None:  # also when asked for more chunks than there are words: before the finish chunk
            return self._drop(request, recorded, response)
        self._finish(recorded, "completed")
        return response

    async def _hang(self, recorded: RecordedRequest) -> None:
        assert self._released is not None
        recorded.outcome = "hanging"
        self._notify()
        await self._released.wait()
        recorded.outcome = "pending"

    def _drop(
        self, request: web.Request, recorded: RecordedRequest, response: web.StreamResponse | None = None
    ) -> web.StreamResponse:
        # Closing the socket mid-body (no terminating chunk) is what a crashed or cut-off upstream looks like.
        self._finish(recorded, "dropped")
        if request.transport is not None:
            request.transport.close()
        # aiohttp's attempt to finish this response meets the closed socket, which it takes quietly as a client gone.
        return response or web.Response()

    def _headers(self, recorded: RecordedRequest) -> dict[str, str]:
        return {"x-request-id": f"req_{recorded.seq}", "openai-model": recorded.model or ""}

    def _envelope(self, recorded: RecordedRequest, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{recorded.seq:06d}",
            "object": kind,
            "created": int(time.time()),
            "model": recorded.model,
            "system_fingerprint": None,
        }

    def _chunk(
        self, recorded: RecordedRequest, delta: dict[str, Any] | None = None, finish_reason: str | None = None
    ) -> dict[str, Any]:
        chunk = self._envelope(recorded, "chat.completion.chunk")
        chunk["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]
        if recorded.include_usage:
            chunk["usage"] = None  # null on every chunk but the last, as OpenAI sends it
        return chunk

    def _tool_calls(self, recorded: RecordedRequest, calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
        return [
            {
                "id": call.id or f"call_{recorded.seq}_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for index, call in enumerate(calls)
        ]

    def _tool_call_deltas(self, recorded: RecordedRequest, calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
        """Each call as OpenAI streams it: its id, type and name with empty arguments, then the arguments in pieces."""
        deltas = []
        for index, call in enumerate(self._tool_calls(recorded, calls)):
            first = {"index": index, **call, "function": {**call["function"], "arguments": ""}}
            deltas.append({"tool_calls": [first]})
            deltas += [
                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                for piece in split_arguments(call["function"]["arguments"])
            ]
        return deltas

    def _completion(self, recorded: RecordedRequest, text: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        completion = self._envelope(recorded, "chat.completion")
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
        if tool_calls:
            message["content"] = text or None
            message["tool_calls"] = tool_calls
        finish_reason = "tool_calls" if tool_calls else "stop"
        completion["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}]
        completion["usage"] = self._usage(recorded)
        return completion

    def _usage(self, recorded: RecordedRequest) -> dict[str, int]:
        prompt = prompt_tokens(recorded)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": recorded.chunks_sent,
            "total_tokens": prompt + recorded.chunks_sent,
        }


@contextlib.contextmanager
def running(
    port: int = 0,
    *,
    chunk_delay: float = DEFAULT_CHUNK_DELAY,
    first_token_delay: float = 0.0,
    default_step: Callable[[RecordedRequest], Step | None] | None = None,
) -> Iterator[ModelServer]:
    """A started server, stopped on the way out."""
    with ModelServer(
        port, chunk_delay=chunk_delay, first_token_delay=first_token_delay, default_step=default_step
    ) as server:
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.model_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--chunk-delay", type=float, default=DEFAULT_CHUNK_DELAY, help="seconds between chunks")
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="seconds before the first chunk")
    parser.add_argument(
        "--tools", action="store_true", help='answer "search my chats for X" and "email me" with tool calls'
    )
    args = parser.parse_args()
    default_step = functools.partial(demo_tool_step, chunk_delay=args.chunk_delay) if args.tools else None
    sys.stdout.reconfigure(line_buffering=True)  # its address shows at once under a process manager
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # Ctrl-C and SIGTERM stop it cleanly: blocked before the server's thread starts (it inherits the mask), taken here.
    # SIGINT gets a handler first: a background job starts with it ignored, and an ignored signal never arrives.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    with running(
        args.port, chunk_delay=args.chunk_delay, first_token_delay=args.first_token_delay, default_step=default_step
    ) as server:
        print(f"OpenAI-compatible test model at {server.url} (OPENAI_BASE_URL={server.url}); Ctrl-C stops it")
        received = signal.sigwait(stop_signals)
    print(f"stopped by {signal.Signals(received).name}")


if __name__ == "__main__":
    main()
