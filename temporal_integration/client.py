"""The process's Temporal client, and the bridge that lets sync Django code use it.

A `temporalio.client.Client` belongs to the event loop it was connected on and is not
thread-safe. Django views run in sync threads (runserver, gunicorn), so the client lives
on one dedicated loop thread per process and every call is submitted to that loop.
"""

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

import temporalio.runtime
from temporalio.client import Client
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode

from temporal_integration.conf import TemporalConfig, get_config

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


class _LoopThread:
    """An event loop running forever on a daemon thread, owning this process's client."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.client: Client | None = None
        self.connect_lock = threading.Lock()
        self.last_failure: tuple[float, TemporalUnavailable] | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, name="temporal-client-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float) -> T:
        if threading.current_thread() is self.thread:
            raise RuntimeError("run_on_client() was called from the client's own loop; await the call instead.")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TemporalUnavailable(get_config().address, f"no answer within {timeout:g}s") from None


_loop_thread: _LoopThread | None = None
_loop_thread_lock = threading.Lock()
_forked = False
# What a forked child inherited (the parent's loop thread object and SDK runtime) stays referenced: dropping
# the last reference to a runtime created in another process can hang in the SDK's native code.
_inherited: list[object] = []


def _after_fork_in_child() -> None:
    global _forked, _loop_thread_lock
    _forked = True
    _loop_thread_lock = threading.Lock()  # a lock held by another thread at fork time would never be released


os.register_at_fork(after_in_child=_after_fork_in_child)


def _current_loop_thread() -> _LoopThread:
    global _loop_thread, _forked
    with _loop_thread_lock:
        # After a fork (gunicorn with preload, multiprocessing) the child inherits the object but not its thread,
        # and the SDK's core runtime refuses to work across forks: the child needs a runtime of its own.
        if _loop_thread is None or _loop_thread.pid != os.getpid():
            if _forked:
                # The SDK offers no way to read the default runtime without creating one: peek, don't create.
                inherited_runtime = getattr(getattr(temporalio.runtime, "_runtime_ref", None), "_default_runtime", None)
                _inherited.extend(ref for ref in (_loop_thread, inherited_runtime) if ref is not None)
                Runtime.set_default(Runtime(telemetry=TelemetryConfig()), error_if_already_set=False)
                _forked = False
            _loop_thread = _LoopThread()
        return _loop_thread


def _backstop_timeout() -> float:
    # Each RPC carries rpc_timeout itself; this only catches a call that never returns.
    return 2 * get_config().rpc_timeout.total_seconds() + 1


def get_temporal_client() -> Client:
    """This process's one connected client, created on first use.

    It is bound to the bridge's loop thread: await its methods there, through `run_on_client`.
    """
    return _connected(_current_loop_thread())


def _connected(loop_thread: _LoopThread) -> Client:
    # The SDK's connect_timeout doesn't cut short a server that accepts TCP and never answers; this does.
    timeout = get_config().rpc_timeout.total_seconds() + 1
    # Waiters outwait the connect under way, then fail fast on its failure rather than start their own.
    if not loop_thread.connect_lock.acquire(timeout=timeout + 1):
        raise TemporalUnavailable(get_config().address, "another request is still connecting")
    try:
        if loop_thread.client is None:
            failure = loop_thread.last_failure
            if failure and time.monotonic() - failure[0] < _FAIL_FAST_SECONDS:
                raise TemporalUnavailable(failure[1].address, "a connect failed moments ago")
            try:
                loop_thread.client = loop_thread.run(connect(), timeout=timeout)
            except TemporalUnavailable as exc:
                loop_thread.last_failure = (time.monotonic(), exc)
                raise
            logger.info("connected to Temporal at %s", get_config().address)
        return loop_thread.client
    finally:
        loop_thread.connect_lock.release()


def run_on_client(call: Callable[[Client], Awaitable[T]], *, timeout: float | None = None) -> T:
    """Runs `call(client)` on the client's loop and returns its result; for sync code such as views."""
    loop_thread = _current_loop_thread()  # once: a reset meanwhile must not pair this client with another loop
    client = _connected(loop_thread)
    try:
        return loop_thread.run(call(client), timeout or _backstop_timeout())
    except RPCError as exc:
        if exc.status in _UNAVAILABLE_STATUSES:
            raise TemporalUnavailable(get_config().address, exc.message) from exc
        raise


def reset_temporal_client() -> None:
    """Forgets the client, so the next call connects anew with the current settings (tests, reconfiguration)."""
    global _loop_thread
    with _loop_thread_lock:
        old, _loop_thread = _loop_thread, None
        get_config.cache_clear()
    if old is not None and old.pid == os.getpid():
        # Calls already on the old loop finish there; then the loop and its thread go.
        old.loop.call_soon_threadsafe(old.loop.call_later, _backstop_timeout() + 1, old.loop.stop)
