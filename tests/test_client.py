"""The sync bridge to the process's one Temporal client."""

import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.processes import free_port
from temporal_integration.client import TemporalUnavailable, get_temporal_client, run_on_client
from temporal_integration.conf import temporal_settings


def test_every_thread_gets_the_same_client(dev_server):
    barrier = threading.Barrier(8)

    def get() -> object:
        barrier.wait()
        return get_temporal_client()

    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(lambda _: get(), range(8)))

    assert len({id(client) for client in clients}) == 1
    assert clients[0].namespace == temporal_settings.TEMPORAL_NAMESPACE


def test_many_threads_start_workflows_through_the_bridge_at_once(dev_server):
    task_queue = f"nobody-polls-{uuid.uuid4()}"  # started workflows just wait; nothing runs them

    def start(n: int) -> str:
        handle = run_on_client(
            lambda client: client.start_workflow(
                "ChatSessionWorkflow", args=["1", f"b{n}"], id=f"bridge-{task_queue}-{n}", task_queue=task_queue
            )
        )
        return handle.id

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(start, range(32)))

    assert ids == [f"bridge-{task_queue}-{n}" for n in range(32)]
    described = run_on_client(lambda client: client.get_workflow_handle(ids[-1]).describe())
    assert described.task_queue == task_queue


def test_an_unreachable_server_raises_temporal_unavailable(temporal_address):
    address = f"127.0.0.1:{free_port()}"
    temporal_address(address)

    with pytest.raises(TemporalUnavailable, match=f"Temporal at {address} is unavailable"):
        run_on_client(lambda client: client.count_workflows())


def test_the_client_reconnects_once_the_server_is_back(temporal_address, dev_server):
    temporal_address(f"127.0.0.1:{free_port()}")
    with pytest.raises(TemporalUnavailable):
        get_temporal_client()

    temporal_address(dev_server.address)

    assert run_on_client(lambda client: client.count_workflows()).count >= 0


def test_callers_waiting_on_a_failed_connect_fail_at_once_instead_of_queueing(temporal_address, settings):
    settings.TEMPORAL_RPC_TIMEOUT = 2.0
    # A listening socket that never answers: connects hang until their timeout, the worst kind of outage.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        temporal_address(f"127.0.0.1:{black_hole.getsockname()[1]}")
        barrier = threading.Barrier(4)

        def attempt(_: int) -> str:
            barrier.wait()
            try:
                get_temporal_client()
            except TemporalUnavailable as exc:
                return str(exc)
            return "connected?!"

        with ThreadPoolExecutor(4) as pool:
            reasons = list(pool.map(attempt, range(4)))

    assert sum("a connect failed moments ago" in reason for reason in reasons) == 3, reasons
    assert sum("no answer within 3s" in reason for reason in reasons) == 1, (
        reasons
    )  # the one connect tried, rpc_timeout + 1
