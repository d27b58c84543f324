"""The process's Temporal clients: the bridge that lets sync Django code use one, and the web server loop's own.

A `temporalio.client.Client` belongs to the event loop it was connected on and is not thread-safe. Django views run
in sync threads (runserver, the web process's thread pool), so their client lives on one dedicated loop thread per
process and every call is submitted to that loop (`run_on_client`). Async code on a loop of its own (the API's
start and message door in chatproject.asgi) awaits a client connected on that loop instead (`run_on_loop`): no
thread between the request and the RPC.
"""

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from temporal_integration.conf import CONNECTION_SETTINGS, TemporalConfig, get_config

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Statuses that mean "the server can't take this now" (down, too slow, rate-limiting), not "your request was wrong".
# CANCELLED is how the SDK reports its own client-side rpc_timeout ("Timeout expired"); nothing else cancels here.
_UNAVAILABLE_STATUSES = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.CANCELLED,
}
# After a failed connect, callers fail at once for this long instead of each waiting out a connect of their own.
_FAIL_FAST_SECONDS = 2.0


class TemporalUnavailable(Exception):
    """The Temporal server could not be reached, or did not answer in time."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"Temporal at {address} is unavailable ({reason}). Try again shortly.")
        self.address = address


def unavailable(exc: RPCError) -> TemporalUnavailable | None:
    """The TemporalUnavailable an RPC error amounts to, or None when the server answered and refused."""
    if exc.status in _UNAVAILABLE_STATUSES:
        return TemporalUnavailable(get_config().address, exc.message)
    return None


def _backstop_timeout(config: TemporalConfig) -> float:
    # Each RPC carries rpc_timeout itself; this only catches a call that never returns.
    return 2 * config.rpc_timeout.total_seconds() + 1


def _connect_timeout(config: TemporalConfig) -> float:
    # The SDK's connect_timeout doesn't cut short a server that accepts TCP and never answers; this does.
    return config.rpc_timeout.total_seconds() + 1


class _Failures:
    """The last failed connect: callers fail at once for _FAIL_FAST_SECONDS after it instead of each waiting out a
    connect of their own."""

    def __init__(self) -> None:
        self._last: tuple[float, TemporalUnavailable] | None = None

    def check(self) -> None:
        if self._last and time.monotonic() - self._last[0] < _FAIL_FAST_SECONDS:
            raise TemporalUnavailable(self._last[1].address, "a connect failed moments ago")

    def record(self, exc: TemporalUnavailable) -> None:
        self._last = (time.monotonic(), exc)


async def connect(config: TemporalConfig | None = None, runtime: Runtime | None = None) -> Client:
    """Connects a new client on the running loop; raises TemporalUnavailable if the server can't be reached."""
    config = config or get_config()
    try:
        return await Client.connect(
            config.address,
            namespace=config.namespace,
            api_key=config.api_key,
            tls=config.tls,
            connect_timeout=config.rpc_timeout,
            runtime=runtime,
        )
    except RuntimeError as exc:  # the SDK's core reports connection failures as RuntimeError
        raise TemporalUnavailable(config.address, str(exc).split(":", 1)[0]) from exc


class ClientBridge:
    """An event loop running forever on a daemon thread, the one client connected on it, and its connect state."""

    def __init__(self, config: TemporalConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._client: Client | None = None
        self._connect_lock = threading.Lock()
        self._failures = _Failures()
        self._thread = threading.Thread(target=self.loop.run_forever, name="temporal-client-loop", daemon=True)
        self._thread.start()

    @property
    def backstop_timeout(self) -> float:
        return _backstop_timeout(self.config)

    def client(self) -> Client:
        """The connected client, connecting on first use; raises TemporalUnavailable if it can't."""
        if self._client is not None:  # connected: no lock for the threads of every request to queue on
            return self._client
        timeout = _connect_timeout(self.config)
        # Waiters outwait the connect under way, then fail fast on its failure rather than start their own.
        if not self._connect_lock.acquire(timeout=timeout + 1):
            raise TemporalUnavailable(self.config.address, "another request is still connecting")
        try:
            if self._client is None:
                self._failures.check()
                try:
                    self._client = self._wait(connect(self.config), timeout)
                except TemporalUnavailable as exc:
                    self._failures.record(exc)
                    raise
                logger.info("connected to Temporal at %s", self.config.address)
            return self._client
        finally:
            self._connect_lock.release()

    def run(self, call: Callable[[Client], Awaitable[T]], *, timeout: float | None = None) -> T:
        """Runs `call(client)` on the loop and returns its result; RPC errors of an unreachable server become
        TemporalUnavailable."""
        client = self.client()
        with _unavailable_translated():
            return self._wait(call(client), timeout or self.backstop_timeout)

    def _wait(self, coro: Awaitable[T], timeout: float) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("run_on_client() was called from the client's own loop; await the call instead.")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TemporalUnavailable(self.config.address, f"no answer within {timeout:g}s") from None

    def close_later(self) -> None:
        """Lets calls already on the loop finish, then stops it and its thread."""
        self.loop.call_soon_threadsafe(self.loop.call_later, self.backstop_timeout + 1, self.loop.stop)


class LoopClient:
    """The client connected on one event loop, for async code running on that loop; its connect state."""

    def __init__(self, config: TemporalConfig) -> None:
        self.config = config
        self._client: Client | None = None
        self._connect_lock = asyncio.Lock()
        self._failures = _Failures()

    async def client(self) -> Client:
        """The connected client, connecting on first use; raises TemporalUnavailable if it can't."""
        if self._client is not None:
            return self._client
        async with self._connect_lock:  # waiters outwait the connect under way, then fail fast on its failure
            if self._client is None:
                self._failures.check()
                try:
                    self._client = await _within(connect(self.config), _connect_timeout(self.config), self.config)
                except TemporalUnavailable as exc:
                    self._failures.record(exc)
                    raise
                logger.info("connected to Temporal at %s on the server's loop", self.config.address)
        return self._client

    async def run(self, call: Callable[[Client], Awaitable[T]]) -> T:
        client = await self.client()
        with _unavailable_translated():
            return await _within(call(client), _backstop_timeout(self.config), self.config)


async def _within(call: Awaitable[T], seconds: float, config: TemporalConfig) -> T:
    try:
        async with asyncio.timeout(seconds) as deadline:
            return await call
    except TimeoutError:
        if not deadline.expired():
            raise
        raise TemporalUnavailable(config.address, f"no answer within {seconds:g}s") from None


@contextmanager
def _unavailable_translated() -> Iterator[None]:
    """RPC errors of an unreachable server become TemporalUnavailable; the server's refusals go through."""
    try:
        yield
    except RPCError as exc:
        translated = unavailable(exc)
        if translated is None:
            raise
        raise translated from exc


_bridge: ClientBridge | None = None
_bridge_lock = threading.Lock()
_loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClient] = weakref.WeakKeyDictionary()


def client_bridge() -> ClientBridge:
    """This process's bridge, created on first use with the current settings."""
    global _bridge
    with _bridge_lock:
        if _bridge is None:
            _bridge = ClientBridge(get_config())
        return _bridge


def get_temporal_client() -> Client:
    """This process's one connected client, created on first use.

    It is bound to the bridge's loop thread: await its methods there, through `run_on_client`.
    """
    return client_bridge().client()


def run_on_client(call: Callable[[Client], Awaitable[T]], *, timeout: float | None = None) -> T:
    """Runs `call(client)` on the client's loop and returns its result; for sync code such as views."""
    return client_bridge().run(call, timeout=timeout)


async def run_on_loop(call: Callable[[Client], Awaitable[T]]) -> T:
    """Awaits `call(client)` with the running loop's own client (connected on first use); for async code on a loop
    that lives as long as the process, such as the web server's."""
    loop = asyncio.get_running_loop()
    with _bridge_lock:
        loop_client = _loop_clients.get(loop)
        if loop_client is None:
            loop_client = _loop_clients[loop] = LoopClient(get_config())
    return await loop_client.run(call)


def reset_temporal_client() -> None:
    """Forgets the clients, so the next call connects anew with the current settings (tests, reconfiguration)."""
    global _bridge
    with _bridge_lock:
        old, _bridge = _bridge, None
        _loop_clients.clear()
        get_config.cache_clear()
    if old is not None:
        old.close_later()


@receiver(setting_changed)
def _follow_settings(*, setting: str, **kwargs: object) -> None:
    # Tests (override_settings, pytest-django's `settings`) and reconfiguration take effect at the next call.
    if setting in CONNECTION_SETTINGS:
        reset_temporal_client()
    elif setting.startswith("TEMPORAL_"):
        get_config.cache_clear()
