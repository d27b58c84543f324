"""The assistant: the model that settings name, its prompt, the context it is given, and one model step.

A reply's turn is a loop run by the session's workflow: a model step (here: one streamed request, whose text goes
out as it is written, which may end asking for tool calls), then the calls (chat.tools, each its own activity), then
the next step, until the model answers with text alone. pydantic-ai speaks to the provider; its direct API makes one
request per step, and the project's workflow, not an agent loop in an activity, runs the tools.

Retries are Temporal's (the step activity's retry policy), so the provider SDK's own are off: a failure reaches
Temporal, and a retried attempt is a visible `reset` on the stream.
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from pydantic_ai.direct import model_request_stream
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters, infer_model
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.tools import ToolDefinition

from chat.conf import chat_settings
from chat.types import Role

DEMO = "demo"


@dataclass(frozen=True)
class StoredCall:
    """A tool call of an earlier step, as the model is shown it: what it asked for and what it was told."""

    call_id: str
    name: str
    args: str  # JSON text
    result: str


@dataclass(frozen=True)
class StoredStep:
    """A model step that asked for tool calls: the text it wrote first, and its calls."""

    text: str
    calls: tuple[StoredCall, ...]


@dataclass(frozen=True)
class StoredTurn:
    """One message of the conversation as the model is shown it. An assistant's reply carries the steps in which it
    called tools; the one being written has no content yet."""

    role: Role
    content: str
    steps: tuple[StoredStep, ...] = ()

    @property
    def size(self) -> int:
        return len(self.content) + sum(
            len(step.text) + sum(len(call.args) + len(call.result) for call in step.calls) for step in self.steps
        )

    @property
    def final_text(self) -> str:
        """The text written after the last tool call (the content holds every step's text, in order)."""
        written = "".join(step.text for step in self.steps)
        return self.content[len(written) :] if self.content.startswith(written) else self.content


@dataclass(frozen=True)
class RequestedCall:
    name: str
    args: str  # JSON text, as the model wrote it (not yet validated)


@dataclass
class Reply:
    """A model step being written: its text so far, and once done, the calls it asked for, the model, its usage."""

    text: str = ""
    calls: list[RequestedCall] = field(default_factory=list)
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0


# What the demo model adds when asked about Markdown, so the page's rendering can be seen with no API key.
DEMO_MARKDOWN = """

Replies are **Markdown**, rendered as they stream:

- a list, with `inline code` and [a link](https://docs.temporal.io/)
- a table:

| tool | needs approval |
|---|---|
| search_chats | no |
| send_email | yes |

```python
print("a code block, with a Copy button")
```"""

DEMO_SEARCH = re.compile(r"search (?:my|our) (?:chats|messages|conversations) for\s+[\"“']?(.+?)[\"”']?[.?!]*$", re.I)


async def _demo_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | dict[int, DeltaToolCall]]:
    """The offline model: it echoes, and calls the built-in tools when asked in so many words ("search my chats for
    pasta", "email me a summary"), so a fresh checkout shows tools with no API key."""
    last = messages[-1]
    returns = [part for part in last.parts if isinstance(part, ToolReturnPart)]
    offered = {tool.name for tool in info.function_tools}
    if returns:
        text = "(demo model) " + " ".join(_demo_summary(part.tool_name, str(part.content)) for part in returns)
    else:
        prompt = next((part.content for part in reversed(last.parts) if isinstance(part, UserPromptPart)), "")
        prompt = prompt if isinstance(prompt, str) else ""
        found = DEMO_SEARCH.search(prompt.strip())
        if found and "search_chats" in offered:
            yield "Let me look through your chats."
            yield {0: DeltaToolCall("search_chats", json.dumps({"query": found.group(1)}))}
            return
        if "email me" in prompt.lower() and "send_email" in offered:
            said = [part.content for message in messages for part in message.parts if isinstance(part, UserPromptPart)]
            body = "What you asked in this chat:\n" + "\n".join(f"- {text}" for text in said if isinstance(text, str))
            yield "I'll email you a summary once you approve it."
            yield {0: DeltaToolCall("send_email", json.dumps({"subject": "Your chat, summarised", "body": body}))}
            return
        stop = "" if prompt.rstrip()[-1:] in (".", "!", "?", "…") else "."  # no second full stop after the quote's
        text = (
            f"(demo model) You said: “{prompt}”{stop} This reply is written word by word, as a real model's would be; "
            "set CHAT_ASSISTANT_MODEL (and OPENAI_BASE_URL) to talk to a real one."
        )
        if "markdown" in prompt.lower():
            text += DEMO_MARKDOWN
    for index, word in enumerate(text.split(" ")):
        await asyncio.sleep(chat_settings.CHAT_DEMO_WORD_DELAY)
        yield word if index == 0 else f" {word}"


def _demo_summary(tool: str, result: str) -> str:
    """What the demo model makes of a tool's result: the search's hits as a short list, anything else as it came."""
    try:
        hits = json.loads(result)
    except ValueError:
        return f"{tool} answered: {result}"
    if not isinstance(hits, list) or not all(isinstance(hit, dict) and "snippet" in hit for hit in hits):
        return f"{tool} answered: {result}"
    found = "\n".join(
        f"- “{hit['snippet']}” (chat {str(hit.get('session_id'))[:8]}, message {hit.get('seq')})" for hit in hits
    )
    return f"I found {len(hits)} earlier message{'' if len(hits) == 1 else 's'}:\n{found}"


def build_model(name: str, *, base_url: str = "", api_key: str = "") -> Model:
    """The model a setting names: `demo`, `openai:<model>` (Chat Completions, at OPENAI_BASE_URL), or any other
    pydantic-ai model string (`anthropic:...`, `google-gla:...`), configured by that provider's own variables."""
    if name == DEMO:
        return FunctionModel(stream_function=_demo_stream, model_name=DEMO)
    provider, _, model_name = name.partition(":")
    if provider == "openai" and model_name:
        # Chat Completions, not pydantic-ai's default Responses API for `openai:`: it is the API every
        # OpenAI-compatible server serves (OpenAI, Ollama, vLLM, LiteLLM). `openai-responses:` picks the other.
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        provider_ = OpenAIProvider(base_url=base_url or None, api_key=api_key or None)
        return OpenAIChatModel(model_name, provider=provider_)
    try:
        return infer_model(name)
    except Exception as exc:  # pydantic-ai's UserError, or a provider's missing API key
        raise ImproperlyConfigured(f"CHAT_ASSISTANT_MODEL={name!r}: {exc}") from exc


def get_model() -> Model:
    """The model for the current settings, built once per configuration. Keyed by the settings it reads rather than
    cleared when one changes: a build that read a setting just before it changed can't outlive the change."""
    return _model(chat_settings.CHAT_ASSISTANT_MODEL, chat_settings.OPENAI_BASE_URL, chat_settings.OPENAI_API_KEY)


@lru_cache(maxsize=4)
def _model(name: str, base_url: str, api_key: str) -> Model:
    return build_model(name, base_url=base_url, api_key=api_key)


def context_window(conversation: Sequence[StoredTurn], budget_chars: int, instructions: str) -> list[ModelMessage]:
    """The messages the model is sent: the last user message and the turn's steps since, and as many earlier
    messages (with their tool calls and results) as fit in `budget_chars`, newest first, whole messages only."""
    last_user = max(index for index, turn in enumerate(conversation) if turn.role == Role.USER)
    current, earlier = conversation[last_user:], conversation[:last_user]
    used = sum(turn.size for turn in current)
    kept: list[StoredTurn] = []
    for turn in reversed(earlier):
        used += turn.size
        if used > budget_chars:
            break
        kept.append(turn)
    messages = [message for turn in [*reversed(kept), *current] for message in _as_messages(turn)]
    last = messages[-1]  # the user's prompt, or the results of the calls just made
    assert isinstance(last, ModelRequest)
    messages[-1] = ModelRequest(parts=last.parts, instructions=instructions)
    return messages


def _as_messages(turn: StoredTurn) -> list[ModelMessage]:
    if turn.role == Role.USER:
        return [ModelRequest(parts=[UserPromptPart(turn.content)])]
    messages: list[ModelMessage] = []
    for step in turn.steps:
        text = [TextPart(step.text)] if step.text else []
        calls = [ToolCallPart(call.name, call.args, tool_call_id=call.call_id) for call in step.calls]
        messages.append(ModelResponse(parts=[*text, *calls]))
        results = [ToolReturnPart(call.name, call.result, tool_call_id=call.call_id) for call in step.calls]
        messages.append(ModelRequest(parts=results))
    if turn.final_text:
        messages.append(ModelResponse(parts=[TextPart(turn.final_text)]))
    return messages


async def stream_step(
    conversation: Sequence[StoredTurn],
    on_text: Callable[[str], Any],
    *,
    budget_chars: int,
    tools: Sequence[ToolDefinition] = (),
    note: str = "",
) -> Reply:
    """One model request: streams its text to `on_text` piece by piece, and returns it with the calls it asked
    for. `note` is added to the instructions (the tool-call limit, when reached)."""
    instructions = "\n\n".join(filter(None, [chat_settings.CHAT_ASSISTANT_SYSTEM_PROMPT, note]))
    messages = context_window(conversation, budget_chars, instructions)
    parameters = ModelRequestParameters(function_tools=list(tools))
    reply = Reply()
    # The provider SDK's own retries would hide failures from Temporal, which retries the step.
    settings: Any = {"max_retries": 0}
    async with model_request_stream(
        get_model(), messages, model_settings=settings, model_request_parameters=parameters
    ) as stream:
        async for event in stream:
            piece = ""
            if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                piece = event.part.content
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                piece = event.delta.content_delta
            if piece:
                reply.text += piece
                on_text(piece)
        response = stream.get()
    calls = [part for part in response.parts if isinstance(part, ToolCallPart)]
    reply.calls = [RequestedCall(part.tool_name, part.args_as_json_str()) for part in calls]
    reply.model = response.model_name or chat_settings.CHAT_ASSISTANT_MODEL
    reply.tokens_in, reply.tokens_out = response.usage.input_tokens, response.usage.output_tokens
    return reply
