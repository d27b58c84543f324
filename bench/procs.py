"""The processes a run starts (Temporal dev server, project worker, raw worker, web server) and its database.

Each process is a context manager that stops exactly the PID it started; its output goes to a log in the run's dir.
"""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit, urlunsplit
from urllib.request import urlopen

from temporalio.client import Client

from bench import project
from bench.raw_activities import RawDB
from bench.results import THROTTLE

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TEMPORAL_CLI = str(Path(PYTHON).parent / "temporal")
RESERVED_PORTS = {7233, 8233, 8000}  # a developer's `make run` may be using them


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in RESERVED_PORTS and port + 1000 not in RESERVED_PORTS:
            return port


def wait_for(ready: Callable[[], bool], what: str, timeout: float = 60, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class Process:
    """One child process, its output in `<log_dir>/<name>.log`; with `ready_line`, started once it logs that."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, ready_line: str = "") -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("w") as out:
            self.popen = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.popen.pid
        if ready_line:
            wait_for(lambda: self.check_alive() and ready_line in self.log.read_text(), f"{name} to log {ready_line!r}")

    def check_alive(self) -> bool:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)  # a server's master process stops its own workers on SIGTERM
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def temporal_server(log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    args = [TEMPORAL_CLI, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
            "--http-port", str(free_port()), "--metrics-port", str(free_port()), "--log-level", "error"]  # fmt: skip
    process = Process("temporal", args, dict(os.environ), log_dir)
    address = f"127.0.0.1:{port}"

    async def answers() -> bool:
        with contextlib.suppress(Exception):
            await (await Client.connect(address)).count_workflows()  # answered once the namespace is ready
            return True
        return False

    wait_for(lambda: process.check_alive() and asyncio.run(answers()), f"the Temporal dev server on {address}")
    return process, address


# The web server candidates `make bench-servers` compares; gunicorn-gthread is the one the project ships (Procfile,
# docs/deploy.md), and the one `make bench` uses unless BENCH_SERVER names another. --no-control-socket: gunicorn
# 27's default control socket is one path per user (~/.gunicorn), which another gunicorn here may be using.
GUNICORN = "-m gunicorn chatproject.wsgi --bind {host}:{port} --no-control-socket"
SERVERS = {
    "gunicorn-gthread": f"{GUNICORN} --workers 2 --threads 16 --worker-class gthread",
    "gunicorn-gthread-8": f"{GUNICORN} --workers 2 --threads 8 --worker-class gthread",
    "gunicorn-gthread-4": f"{GUNICORN} --workers 2 --threads 4 --worker-class gthread",
    "gunicorn-sync": f"{GUNICORN} --workers 4",
    "uvicorn": "-m uvicorn chatproject.asgi:application --host {host} --port {port} --workers 2 --no-access-log "
    "--loop uvloop --http httptools",
    "granian": "-m granian --interface wsgi chatproject.wsgi:application --host {host} --port {port} --workers 2 "
    "--blocking-threads 8 --no-access-log",
}


class WebServer(Process):
    """The API under one of the candidate servers, answering /healthz."""

    def __init__(self, kind: str, env: dict[str, str], log_dir: Path) -> None:
        if kind not in SERVERS:
            raise SystemExit(f"BENCH_SERVER={kind!r}: use one of {', '.join(SERVERS)}")
        self.kind = kind
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(kind, [PYTHON, *SERVERS[kind].format(host="127.0.0.1", port=port).split()], env, log_dir)
        wait_for(lambda: self.check_alive() and self._healthy(), f"{kind} to answer /healthz")

    def _healthy(self) -> bool:
        with contextlib.suppress(OSError), urlopen(f"{self.url}/healthz", timeout=5) as response:
            return response.status == 200
        return False


def database(tmp: Path, stack: ExitStack) -> tuple[str, str]:
    """(URL, engine): a fresh SQLite file in the run's dir, or (DATABASE_URL set) a bench_<random> PostgreSQL
    database, dropped by `stack`."""
    base = os.environ.get("DATABASE_URL", "").strip()
    if not base or base.startswith("sqlite"):
        return f"sqlite:///{tmp / 'bench.sqlite3'}", "SQLite"
    import psycopg

    parts, name = urlsplit(base), f"bench_{uuid.uuid4().hex[:10]}"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        version = conn.execute("SHOW server_version").fetchone()[0]

    def drop() -> None:
        with contextlib.suppress(Exception), psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    stack.callback(drop)
    return urlunsplit(parts._replace(path=f"/{name}")), f"PostgreSQL {version}"


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


# The bench user and its API token, and the database settings the raw side must share with Django's.
SETUP = """
import json
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
user = get_user_model().objects.create_user("bench")
db = settings.DATABASES["default"]
print(json.dumps({"user_id": str(user.pk), "token": Token.objects.create(user=user).key,
                  "busy_timeout": db.get("OPTIONS", {}).get("timeout", 5), "conn_max_age": db["CONN_MAX_AGE"]}))
"""


@dataclass(frozen=True)
class Rig:
    """What every measurement runs on: a database, a Temporal dev server, the project's worker and the raw worker."""

    tmp: Path
    database_url: str
    engine: str
    address: str
    env: dict[str, str]  # the project's processes' environment
    setup: dict  # from SETUP
    raw_options: dict  # the raw worker's, from which it also takes the project worker's defaults
    temporal: Process
    worker: Process
    raw_worker: Process

    @classmethod
    @contextmanager
    def started(cls, name: str, keep_logs: bool = False) -> Iterator["Rig"]:
        """Starts it all, logs in a new temp dir; stops each process at the end, last started first, also when
        SIGTERM or SIGHUP (make's, a CI's, a developer's kill) unwinds the run like Ctrl-C. The logs are removed
        unless `keep_logs` or the run failed."""
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        log(f"logs in {tmp}")
        try:
            with ExitStack() as stack:
                yield cls._start(tmp, stack)
        except BaseException:
            log(f"failed; the processes' logs are in {tmp}")
            raise
        if not keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def _start(cls, tmp: Path, stack: ExitStack) -> "Rig":
        run = uuid.uuid4().hex[:6]
        url, engine = database(tmp, stack)
        log(f"database: {engine} ({url})")
        temporal, address = temporal_server(tmp)
        stack.enter_context(temporal)
        log(f"temporal dev server pid {temporal.pid} on {address}")
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("BENCH_DJANGO_SETTINGS", "chatproject.settings"),
               "DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 32,
               "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "DATABASE_URL": url, "TEMPORAL_ADDRESS": address,
               "TEMPORAL_TASK_QUEUE": f"bench-{run}", "CHAT_THROTTLE_SESSION_START": THROTTLE,
               "CHAT_THROTTLE_MESSAGE_POST": THROTTLE}  # fmt: skip
        manage(env, "migrate", "--noinput")
        setup = json.loads(manage(env, "shell", "-c", SETUP).splitlines()[-1])
        RawDB(url, setup["busy_timeout"]).create_tables()
        worker = Process("worker", [PYTHON, "manage.py", "run_temporal_worker"], env, tmp, "worker polling task queue")
        stack.enter_context(worker)
        raw_options = {"address": address, "database_url": url, "busy_timeout": setup["busy_timeout"],
                       "worker": {"task_queue": f"bench-raw-{run}", **project.worker_defaults()}}  # fmt: skip
        raw_env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        raw_worker = Process("raw-worker", [PYTHON, "-m", "bench.raw_worker", json.dumps(raw_options)], raw_env, tmp,
                             "raw worker polling task queue")  # fmt: skip
        stack.enter_context(raw_worker)
        log(f"worker pid {worker.pid}; raw worker pid {raw_worker.pid}")
        return cls(tmp, url, engine, address, env, setup, raw_options, temporal, worker, raw_worker)

    def check_alive(self) -> None:
        for process in (self.temporal, self.worker, self.raw_worker):
            process.check_alive()


def proc_status(pid: int, field: str) -> int:
    """A /proc/PID/status field in kB (VmRSS) or a count (Threads)."""
    return int(
        next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field)).split()[1]
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (a web server's workers), in seconds."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += (task / "children").read_text().split()
    total = 0
    for p in [pid, *children]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")
