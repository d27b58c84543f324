"""The assistant's tools: plain typed functions that CHAT_ASSISTANT_TOOLS names by dotted path.

A tool's first parameter is a ToolContext (the acting user, the session, the call's id); the others are what the
model fills in. pydantic-ai builds the JSON schema the model is shown from the signature and the docstring, and
validates the model's arguments against it before the tool runs. Whatever the tool returns is what the model is
told, as text; an exception it raises is told to the model too, and the reply goes on.

    from chat.tools import ToolContext, tool

    @tool(needs_approval=True, retry_safe=False)
    def send_email(ctx: ToolContext, subject: str, body: str) -> str:
        \"\"\"Sends an email to the user's own address.\"\"\"

`needs_approval`: the call waits, in the session's workflow, for the user to approve or deny it. `retry_safe=False`:
the call runs at most once; an attempt that died while it ran is reported as an unknown outcome instead of being run
again. A plain function without @tool needs no approval and is safe to retry.
"""

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache, wraps
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.utils.module_loading import import_string

from chat.conf import chat_settings

if TYPE_CHECKING:
    from pydantic_ai.tools import Tool, ToolDefinition

# What the model is told of a result is cut to this many characters (the database keeps the same).
RESULT_CHARS = 4000
SEARCH_LIMIT = 10
SNIPPET_CHARS = 120


@dataclass(frozen=True)
class ToolContext:
    """Who the assistant acts for, and the call: its id is the idempotency key of the call's effect."""

    user: AbstractBaseUser
    session_id: str
    reply_seq: int
    call_id: str


class InvalidArguments(ValueError):
    """The model's arguments don't fit the tool's signature; the message says how, for the model to correct."""


@dataclass(frozen=True)
class AssistantTool:
    function: Callable[..., Any]
    needs_approval: bool = False
    retry_safe: bool = True

    @property
    def name(self) -> str:
        return self.function.__name__

    @cached_property
    def _pydantic(self) -> "Tool":
        # Imported here: the web process names tools (its settings check) but never runs one.
        from pydantic_ai.tools import Tool

        return Tool(_model_facing(self.function), name=self.name, takes_ctx=False)

    @property
    def definition(self) -> "ToolDefinition":
        return self._pydantic.tool_def

    def validate(self, args: str | dict[str, Any]) -> dict[str, Any]:
        """The model's arguments (JSON text or an object) checked against the signature."""
        from pydantic_core import ValidationError

        validator = self._pydantic.function_schema.validator
        try:
            if isinstance(args, str):
                return validator.validate_json(args or "{}")
            return validator.validate_python(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'arguments'}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            raise InvalidArguments(f"Invalid arguments for {self.name}: {problems}.") from exc

    def run(self, ctx: ToolContext, args: str | dict[str, Any]) -> str:
        result = self.function(ctx, **self.validate(args))
        text = result if isinstance(result, str) else json.dumps(result, default=str, ensure_ascii=False)
        return text[:RESULT_CHARS]

    def __call__(self, ctx: ToolContext, *args: Any, **kwargs: Any) -> Any:
        return self.function(ctx, *args, **kwargs)


def _model_facing(function: Callable[..., Any]) -> Callable[..., Any]:
    """The function as the model sees it, for pydantic-ai's schema: without its first parameter (the ToolContext is
    ours to give). pydantic-ai's own `takes_ctx` wants that parameter typed as its RunContext."""
    signature = inspect.signature(function)
    context, *rest = signature.parameters

    @wraps(function)
    def facing(**kwargs: Any) -> Any:
        raise NotImplementedError  # never called: AssistantTool.run calls the function itself

    facing.__signature__ = signature.replace(parameters=[signature.parameters[name] for name in rest])
    facing.__annotations__ = {name: hint for name, hint in function.__annotations__.items() if name != context}
    return facing


def tool(*, needs_approval: bool = False, retry_safe: bool = True) -> Callable[[Callable[..., Any]], AssistantTool]:
    """Declares a function a tool that needs the user's approval, or that must not run twice."""

    def wrap(function: Callable[..., Any]) -> AssistantTool:
        return AssistantTool(function, needs_approval=needs_approval, retry_safe=retry_safe)

    return wrap


def get_tools() -> dict[str, AssistantTool]:
    """The tools CHAT_ASSISTANT_TOOLS names, by name."""
    return _load(tuple(chat_settings.CHAT_ASSISTANT_TOOLS))


@lru_cache(maxsize=4)
def _load(paths: tuple[str, ...]) -> dict[str, AssistantTool]:
    tools: dict[str, AssistantTool] = {}
    for path in paths:
        try:
            found = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"CHAT_ASSISTANT_TOOLS: {path!r} can't be imported: {exc}") from exc
        if not isinstance(found, AssistantTool):
            if not callable(found):
                raise ImproperlyConfigured(f"CHAT_ASSISTANT_TOOLS: {path!r} is not a function.")
            found = AssistantTool(found)
        if found.name in tools:
            raise ImproperlyConfigured(f"CHAT_ASSISTANT_TOOLS: two tools are named {found.name!r}.")
        tools[found.name] = found
    return tools


def check_tools(paths: list[str]) -> bool:
    """The setting's check: a list of strings; each must load (which raises naming the path when it doesn't)."""
    if not isinstance(paths, list | tuple) or not all(isinstance(path, str) for path in paths):
        return False
    _load(tuple(paths))
    return True


def tool_definitions() -> list["ToolDefinition"]:
    """What the model is shown of each tool. The worker builds them as it starts, so a function pydantic-ai can't
    describe stops it there, naming the setting."""
    definitions = []
    for name, found in get_tools().items():
        try:
            definitions.append(found.definition)
        except Exception as exc:
            raise ImproperlyConfigured(f"CHAT_ASSISTANT_TOOLS: {name!r} can't be a tool: {exc}") from exc
    return definitions


# The built-in tools


@tool()
def search_chats(ctx: ToolContext, query: str) -> str:
    """Searches the messages the user wrote in their chats, all of them, for a text (case-insensitive).

    Returns the newest matches (at most 10), each with its session id, seq and a snippet.

    Args:
        query: The text to look for.
    """
    from chat.selectors import messages_matching

    query = query.strip()
    if not query:
        return "Give a text to search for."
    # This turn's own question is left out: it contains the text, and the user knows it.
    found = messages_matching(user=ctx.user, query=query, limit=SEARCH_LIMIT, skip=(ctx.session_id, ctx.reply_seq - 1))
    matches = [
        {"session_id": message.session.session_id, "seq": message.seq, "snippet": snippet(message.content, query)}
        for message in found
    ]
    if not matches:
        return f"No earlier message contains {query!r}."
    return json.dumps(matches, ensure_ascii=False)


def snippet(content: str, query: str) -> str:
    """The part of a message around the first place it contains `query`, on one line."""
    at = content.lower().find(query.lower())
    start = max(0, at - SNIPPET_CHARS // 3)
    snippet = content[start : start + SNIPPET_CHARS].replace("\n", " ")
    return ("…" if start else "") + snippet + ("…" if start + SNIPPET_CHARS < len(content) else "")


@tool(needs_approval=True, retry_safe=False)
def send_email(ctx: ToolContext, subject: str, body: str) -> str:
    """Sends an email to the user's own address (it needs the user's approval first).

    Args:
        subject: The email's subject line.
        body: The email's text.
    """
    address = getattr(ctx.user, "email", "")
    if not address:
        raise ValueError("the user's account has no email address")
    # The call id rides along, so a mail system can tell a duplicate from a second email.
    EmailMessage(subject, body, to=[address], headers={"X-Chat-Tool-Call": ctx.call_id}).send()
    return f"Sent to {address}."
