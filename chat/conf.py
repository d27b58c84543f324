"""The chat app's settings: each one's default and check, here and nowhere else.

Read them as `chat_settings.CHAT_TURN_TIMEOUT`. The project sets any of them from the environment under the same
name (chatproject.settings); .env.example lists them with these defaults (tests/test_structure.py holds the two
together). The session workflow's own options keep their defaults in chat.types.SessionOptions, which the workflow
needs without Django; their settings default to those.
"""

from redis.connection import parse_url

from chat.types import SessionOptions
from temporal_integration.app_settings import AppSettings, Setting, at_least_zero, not_empty, positive

POSITIVE = "set a number greater than 0."
AT_LEAST_ZERO = "set 0 or more."


def _event_log(value: str) -> bool:
    if value == "database":
        return True
    try:
        parse_url(value)
    except ValueError:
        return False
    return True


def _tools(value: list[str]) -> bool:
    from chat.tools import check_tools  # it reads these settings

    return check_tools(value)


chat_settings = AppSettings(
    {
        # Sessions (passed to each session's workflow as its options)
        "CHAT_SESSION_IDLE_TIMEOUT": Setting(SessionOptions.idle_timeout_seconds, positive, POSITIVE),
        "CHAT_MESSAGE_MAX_LENGTH": Setting(SessionOptions.max_message_length, positive, POSITIVE),
        "CHAT_ACTIVITY_TIMEOUT": Setting(SessionOptions.activity_timeout_seconds, positive, POSITIVE),
        "CHAT_TURN_TIMEOUT": Setting(SessionOptions.turn_timeout_seconds, positive, POSITIVE),
        "CHAT_TURN_HEARTBEAT_TIMEOUT": Setting(SessionOptions.turn_heartbeat_seconds, positive, POSITIVE),
        "CHAT_TURN_ATTEMPTS": Setting(SessionOptions.turn_attempts, positive, POSITIVE),
        # 0: continue-as-new only when Temporal suggests it
        "CHAT_MAX_MESSAGES_PER_RUN": Setting(0, at_least_zero, AT_LEAST_ZERO),
        # The API
        "CHAT_REPLY_WAIT_TIMEOUT": Setting(120.0, positive, POSITIVE),
        "CHAT_REPLY_WAITS_PER_USER": Setting(10, positive, POSITIVE),  # at once, in each web process
        # The assistant
        "CHAT_ASSISTANT_MODEL": Setting("demo", not_empty, "set a model name, or `demo`."),
        "CHAT_ASSISTANT_SYSTEM_PROMPT": Setting("You are a helpful assistant. Answer clearly and concisely."),
        "CHAT_DEMO_WORD_DELAY": Setting(0.04, at_least_zero, AT_LEAST_ZERO),
        "CHAT_ASSISTANT_CONTEXT_CHARS": Setting(24000, positive, POSITIVE),
        "CHAT_USER_DAILY_TOKENS": Setting(200_000, at_least_zero, AT_LEAST_ZERO),  # 0: no limit
        "OPENAI_BASE_URL": Setting(""),  # empty: OpenAI's own
        # Its tools (chat.tools): dotted paths of plain functions
        "CHAT_ASSISTANT_TOOLS": Setting(
            ["chat.tools.search_chats", "chat.tools.send_email"], _tools, "a list of dotted paths of functions."
        ),
        "CHAT_ASSISTANT_MAX_TOOL_CALLS": Setting(SessionOptions.max_tool_calls, positive, POSITIVE),
        "CHAT_TOOL_APPROVAL_TIMEOUT": Setting(SessionOptions.tool_approval_timeout_seconds, positive, POSITIVE),
        "OPENAI_API_KEY": Setting(""),
        # The event log (chat.events)
        "CHAT_EVENT_LOG": Setting(
            "database", _event_log, "set `database` or a Redis URL such as redis://127.0.0.1:6379/0."
        ),
        "CHAT_EVENT_LOG_POLL_INTERVAL": Setting(0.05, positive, POSITIVE),
        "CHAT_EVENT_LOG_SUBSCRIBER_BUFFER": Setting(1000, positive, POSITIVE),
        "CHAT_EVENT_LOG_REDIS_MAXLEN": Setting(100_000, positive, POSITIVE),
        # Seconds an ended session's events are kept (for clients still catching up), then removed.
        "CHAT_EVENT_RETENTION": Setting(7 * 24 * 3600.0, positive, POSITIVE),
    }
)


def session_options() -> SessionOptions:
    """The options each new session's workflow is started with."""
    return SessionOptions(
        idle_timeout_seconds=chat_settings.CHAT_SESSION_IDLE_TIMEOUT,
        max_message_length=chat_settings.CHAT_MESSAGE_MAX_LENGTH,
        activity_timeout_seconds=chat_settings.CHAT_ACTIVITY_TIMEOUT,
        turn_timeout_seconds=chat_settings.CHAT_TURN_TIMEOUT,
        turn_heartbeat_seconds=chat_settings.CHAT_TURN_HEARTBEAT_TIMEOUT,
        turn_attempts=chat_settings.CHAT_TURN_ATTEMPTS,
        max_tool_calls=chat_settings.CHAT_ASSISTANT_MAX_TOOL_CALLS,
        tool_approval_timeout_seconds=chat_settings.CHAT_TOOL_APPROVAL_TIMEOUT,
        max_messages_per_run=chat_settings.CHAT_MAX_MESSAGES_PER_RUN or None,
    )
