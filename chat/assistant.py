"""The assistant: the model that settings name, its prompt, the context it is given, and one streamed reply.

pydantic-ai speaks to the provider. Retries are Temporal's (the turn activity's retry policy), so the provider
SDK's own are off: a failure reaches Temporal, and a retried attempt is a visible `reset` on the stream.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models import Model, infer_model
from pydantic_ai.models.function import AgentInfo, FunctionModel

from chat.conf import chat_settings
from chat.types import Role

DEMO = "demo"


@dataclass(frozen=True)
class StoredTurn:
    """One message of the conversation as the model is shown it."""

    role: Role
    content: str


@dataclass
class Reply:
    """A reply being written: its text so far, and once done, the model's name and usage."""

    text: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0


async def _demo_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    last = next(
        (part.content for part in reversed(messages[-1].parts) if isinstance(part, UserPromptPart)),
        "",
    )
    words = (
        f"(demo model) You said: “{last}”. This reply is written word by word, as a real model's would be; "
        "set CHAT_ASSISTANT_MODEL (and OPENAI_BASE_URL) to talk to a real one."
    ).split(" ")
    for index, word in enumerate(words):
        await asyncio.sleep(chat_settings.CHAT_DEMO_WORD_DELAY)
        yield word if index == 0 else f" {word}"


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


def get_agent() -> Agent:
    """The agent for the current settings, built once per configuration. Keyed by the settings it reads rather than
    cleared when one changes: a build that read a setting just before it changed can't outlive the change."""
    return _agent(
        chat_settings.CHAT_ASSISTANT_MODEL,
        chat_settings.CHAT_ASSISTANT_SYSTEM_PROMPT,
        chat_settings.OPENAI_BASE_URL,
        chat_settings.OPENAI_API_KEY,
    )


@lru_cache(maxsize=4)
def _agent(model: str, instructions: str, base_url: str, api_key: str) -> Agent:
    return Agent(
        build_model(model, base_url=base_url, api_key=api_key),
        instructions=instructions,
        # The provider SDK's own retries would hide failures from Temporal, which retries the whole turn.
        model_settings={"max_retries": 0},
    )


def context_window(conversation: Sequence[StoredTurn], budget_chars: int) -> tuple[list[ModelMessage], str]:
    """The history and the prompt the model is given: the last user message, and as many earlier messages as
    fit in `budget_chars`, newest first, whole messages only."""
    *earlier, prompt = conversation
    kept: list[StoredTurn] = []
    used = len(prompt.content)
    for turn in reversed(earlier):
        used += len(turn.content)
        if used > budget_chars:
            break
        kept.append(turn)
    history: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart(turn.content)])
        if turn.role == Role.USER
        else ModelResponse(parts=[TextPart(turn.content)])
        for turn in reversed(kept)
    ]
    return history, prompt.content


async def stream_reply(conversation: Sequence[StoredTurn], on_text: Callable[[str], Any], budget_chars: int) -> Reply:
    """Streams the reply to the conversation's last user message, calling `on_text` with each new piece."""
    history, prompt = context_window(conversation, budget_chars)
    reply = Reply()
    async with get_agent().run_stream(prompt, message_history=history) as run:
        async for piece in run.stream_text(delta=True, debounce_by=None):
            reply.text += piece
            on_text(piece)
        usage = run.usage
        reply.model = run.response.model_name or chat_settings.CHAT_ASSISTANT_MODEL
    reply.tokens_in, reply.tokens_out = usage.input_tokens, usage.output_tokens
    return reply
