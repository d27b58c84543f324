"""The assistant's reply, carried to the session's event log as it is written, from the turn's activity."""

import asyncio
import contextlib

from temporalio import activity

from chat.events import Event, get_event_log
from chat.models import ChatEvent
from chat.types import ModelStep, Turn

# Appends to the event log are batched: a client sees the reply in steps of about this long.
FLUSH_SECONDS = 0.05
# How often the turn heartbeats (the SDK sends at most one per max_heartbeat_throttle_interval). A stop reaches the
# activity with a heartbeat's answer.
BEAT_SECONDS = 0.1


class ReplyStream:
    """Carries a reply's text to the session's event log as it is written, and keeps the activity's heartbeat.

    One task appends, so deltas land in the order they were written; `close()` lets its last append finish and
    appends what is left before anything else (the stored reply's event) goes to the log.
    """

    def __init__(self, turn: Turn | ModelStep, attempt: int, written: str = "") -> None:
        self.turn = turn
        self.attempt = attempt
        self.written = written  # the text of the turn's earlier model steps, which a reset must not lose
        self.text = ""
        self._pending = ""
        self._log = get_event_log()
        self._closing = asyncio.Event()
        # Set by the reply's first words (they go out at once: the time to the first token is what a reader feels)
        # and by close(); later words wait for the next flush.
        self._nudge = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._beat: asyncio.Task | None = None

    async def start(self) -> None:
        # Its own task: a heartbeat must not wait behind appends, or a turn that is alive could time out.
        self._beat = asyncio.create_task(self._keep_beating())
        if self.attempt > 1:  # clients drop this turn's text so far: the step is written again, after the earlier ones
            try:
                await self._append(ChatEvent.Type.RESET)
                if self.written:
                    await self._append(ChatEvent.Type.DELTA, text=self.written)
            except BaseException:
                await self.close()
                raise
        self._task = asyncio.create_task(self._keep_flushing())

    def write(self, piece: str) -> None:
        if not self.text:
            self._nudge.set()
        self.text += piece
        self._pending += piece

    async def close(self) -> None:
        self._closing.set()
        self._nudge.set()
        if self._task is not None:
            await self._task
        if self._beat is not None:
            await self._beat

    async def _keep_beating(self) -> None:
        while not self._closing.is_set():  # also while the model is still thinking
            activity.heartbeat(len(self.text))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), BEAT_SECONDS)

    async def _keep_flushing(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), FLUSH_SECONDS)
            self._nudge.clear()
            await self._flush()
        await self._flush()  # what was written while the last append was on its way

    async def _flush(self) -> None:
        if self._pending:
            text, self._pending = self._pending, ""
            await self._append(ChatEvent.Type.DELTA, text=text)

    async def _append(self, type_: ChatEvent.Type, **data: str) -> None:
        event = Event(self.turn.session_id, type_, {"turn": self.turn.reply_seq, "attempt": self.attempt, **data})
        await self._log.aappend(self.turn.session_id, [event])
