"""A test server's lifecycle: bound to its own socket, run on its own thread and event loop, waited on by tests.

`ModelServer` and `MailServer` are one each; a subclass serves on `self._sock` in `_start()`, undoes that in
`_stop()`, and calls `_notify()` (or `notify_all()` under `self._changed`) on each change a test may wait for.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")


class LoopServer:
    """The server on its own thread and event loop, on 127.0.0.1 and a free port unless given one."""

    _name: ClassVar[str]  # "model server": in its thread's name and its timeout errors

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Bound here rather than by the server, so the port is known (and held) before the loop starts.
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        thread_name = f"{self._name.replace(' ', '-')}-{self.port}"
        self._thread = threading.Thread(target=self._loop.run_forever, name=thread_name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            self._sock.close()  # never started: nothing else closes them
            self._loop.close()
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_until(self, condition: Callable[[Self], T], *, timeout: float = 5, what: str = "condition") -> T:
        """Blocks until `condition(server)` is truthy, woken by each change the server makes; TimeoutError after."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (result := condition(self)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self._name}: timed out after {timeout}s waiting for {what}; {self._progress()}"
                    )
                self._changed.wait(remaining)
            return result

    async def _start(self) -> None:
        """Serves on `self._sock`, on the server's loop."""
        raise NotImplementedError

    async def _stop(self) -> None:
        """Stops serving, on the server's loop, before the loop stops."""
        raise NotImplementedError

    def _progress(self) -> str:
        """What the server has seen so far, for a timeout's message; called holding `self._changed`."""
        raise NotImplementedError

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on the server's loop from another thread and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()
