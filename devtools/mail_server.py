"""A real, local SMTP server (aiosmtpd) that records every message it receives, and can hold one unacknowledged.

Point Django at it with `EMAIL_URL=<MailServer.url>` (`smtp://127.0.0.1:<port>`), or give `.port` to the SMTP backend.
Each message is recorded (`.messages`, parsed as `email.message.EmailMessage`) as soon as its DATA has arrived, before
the server answers it. `hold()` keeps the next message's `250` back until `release()`: the message is there, its sender
has no acknowledgement yet, which is what a sender killed between the two sees.

As a process of its own, printing each message it receives:

    python -m devtools.mail_server --port 8025
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import weakref
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import cast

from aiosmtpd.smtp import SMTP, Envelope, Session

from devtools.serving import LoopServer


class MailServer(LoopServer):
    """The server on its own thread and event loop, on 127.0.0.1 and a free port unless given one.

    `on_message` is called on the server's thread with each message, once recorded.
    """

    _name = "mail server"

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        on_message: Callable[[EmailMessage], None] | None = None,
    ) -> None:
        super().__init__(port, host=host)
        self.on_message = on_message
        self._messages: list[EmailMessage] = []
        self._hold_next = False
        self._gate: asyncio.Event | None = None  # the held message's: set by release()
        self._held = False
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def url(self) -> str:
        """The server as django-environ's `EMAIL_URL` reads it (the SMTP backend, this host and port)."""
        return f"smtp://{self.host}:{self.port}"

    def stop(self) -> None:
        """Closes every connection (a held message's included, unanswered) and stops the loop."""
        super().stop()

    @property
    def messages(self) -> list[EmailMessage]:
        """The messages received so far, in order."""
        with self._changed:
            return list(self._messages)

    @property
    def held(self) -> bool:
        """Whether a message is recorded and waiting for `release()` before its sender gets the `250`."""
        with self._changed:
            return self._held

    def hold(self) -> None:
        """Records the next message but keeps its DATA unanswered until `release()`."""
        with self._changed:
            self._hold_next = True

    def release(self) -> None:
        """Answers the held message; withdraws a `hold()` that no message has met yet."""
        with self._changed:
            self._hold_next = False
            gate, self._gate = self._gate, None
        if gate is not None:
            self._loop.call_soon_threadsafe(gate.set)

    def wait_for_messages(self, count: int, timeout: float = 5) -> list[EmailMessage]:
        """The messages, once at least `count` have arrived."""
        return self.wait_until(
            lambda server: len(messages := server.messages) >= count and messages,
            timeout=timeout,
            what=f"{count} message(s)",
        )

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        """aiosmtpd's hook for a message's content: records it, then answers unless a hold keeps it."""
        # SMTP carries lines ended by CRLF; they read back as the "\n" Python's own messages use. The default policy
        # parses into an EmailMessage (the stubs say Message, compat32's class).
        content = (envelope.original_content or b"").replace(b"\r\n", b"\n")
        message = cast(EmailMessage, BytesParser(policy=default_policy).parsebytes(content))
        gate = None
        with self._changed:
            self._messages.append(message)
            if self._hold_next:
                self._hold_next = False
                gate = self._gate = asyncio.Event()
                self._held = True
            self._changed.notify_all()
        if self.on_message is not None:
            self.on_message(message)
        if gate is not None:
            try:
                await gate.wait()
            finally:  # released, or the connection closed under it
                with self._changed:
                    self._held = False
                    self._changed.notify_all()
        return "250 OK"

    def _progress(self) -> str:
        return f"{len(self._messages)} message(s) received"

    def _connection(self) -> SMTP:
        # The host as the greeting's name: the default looks up this machine's FQDN, which can take seconds.
        connection = SMTP(self, hostname=self.host, enable_SMTPUTF8=True, loop=self._loop)
        self._connections.add(connection)
        return connection

    async def _start(self) -> None:
        self._server = await self._loop.create_server(self._connection, sock=self._sock)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
        # Each closed connection cancels its session's task; let them finish before the loop stops.
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()


def describe(message: EmailMessage) -> str:
    """A message as the command line prints it: its recipients, subject and text."""
    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content().rstrip() if body is not None else "(no text body)"
    return f"To: {message['To']}\nSubject: {message['Subject']}\n\n{text}\n{'-' * 72}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.mail_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each message shows at once under a process manager
    # Ctrl-C and SIGTERM stop it cleanly: blocked before the server's thread starts (it inherits the mask), taken here.
    # SIGINT gets a handler first: a background job starts with it ignored, and an ignored signal never arrives.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    with MailServer(args.port, on_message=lambda message: print(describe(message))) as server:
        print(f"SMTP server at {server.url} (EMAIL_URL={server.url}); Ctrl-C stops it")
        received = signal.sigwait(stop_signals)
    print(f"stopped by {signal.Signals(received).name}")


if __name__ == "__main__":
    main()
