"""The processes a bench run starts, and the database it runs on; every one is stopped by the PID it started."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from temporalio.client import Client

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TEMPORAL_CLI = str(Path(sys.executable).parent / "temporal")
RESERVED_PORTS = {7233, 8233, 8000}  # a developer's `make run` may be using them
THROTTLE = "1000000/min"


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in RESERVED_PORTS and port + 1000 not in RESERVED_PORTS:
            return port


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class Process:
    """One child process, its output in a log file; stop() terminates exactly this PID (and waits for it)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("w") as out:
            self.popen = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def temporal_server(log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    args = [TEMPORAL_CLI, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
            "--http-port", str(free_port()), "--metrics-port", str(free_port()), "--log-level", "error"]  # fmt: skip
    process = Process("temporal", args, dict(os.environ), log_dir)
    address = f"127.0.0.1:{port}"

    async def reachable() -> bool:
        try:
            client = await Client.connect(address)
            await client.count_workflows()  # the frontend answers only once the namespace is ready
            return True
        except Exception:
            return False

    def ready() -> bool:
        process.check_alive()
        return asyncio.run(reachable())

    wait_for(ready, timeout=60, what=f"the Temporal dev server on {address}", interval=0.3)
    return process, address


def django_env(database_url: str, temporal_address: str, task_queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("BENCH_DJANGO_SETTINGS", "chatproject.settings"),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 32,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "CHAT_THROTTLE_SESSION_START": THROTTLE,
        "CHAT_THROTTLE_MESSAGE_POST": THROTTLE,
    }


def wait_for_log(process: Process, text: str, timeout: float = 60) -> None:
    def seen() -> bool:
        process.check_alive()
        return text in process.output()

    wait_for(seen, timeout=timeout, what=f"{process.name} to log {text!r}")


def project_worker(env: dict[str, str], log_dir: Path, name: str = "worker") -> Process:
    """`manage.py run_temporal_worker` as the project runs it (its defaults: 20 activities, 100 workflow tasks)."""
    args = [PYTHON, "manage.py", "run_temporal_worker", "--task-queue", env["TEMPORAL_TASK_QUEUE"]]
    process = Process(name, args, env, log_dir)
    wait_for_log(process, "worker polling task queue")
    return process


def raw_worker(address: str, task_queue: str, database_url: str, log_dir: Path, name: str = "raw-worker") -> Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    process = Process(name, [PYTHON, "-m", "bench.raw_worker", address, task_queue, database_url], env, log_dir)
    wait_for_log(process, "raw worker polling task queue")
    return process


def server_command(kind: str, host: str, port: int | str) -> list[str]:
    """The web server candidates `make bench-servers` compares; gunicorn-gthread is the one the project ships
    (Procfile, docs/deploy.md), and the one `make bench` uses unless BENCH_SERVER names another."""
    bind = f"{host}:{port}"
    # --no-control-socket: gunicorn 27's default control socket is one path per user (~/.gunicorn), which
    # another gunicorn on this machine (a developer's, a test's) may be using.
    gunicorn = [PYTHON, "-m", "gunicorn", "chatproject.wsgi", "--bind", bind, "--no-control-socket"]
    commands = {
        "gunicorn-gthread": [*gunicorn, "--workers", "2", "--threads", "16", "--worker-class", "gthread"],
        "gunicorn-gthread-8": [*gunicorn, "--workers", "2", "--threads", "8", "--worker-class", "gthread"],
        "gunicorn-gthread-4": [*gunicorn, "--workers", "2", "--threads", "4", "--worker-class", "gthread"],
        "gunicorn-sync": [*gunicorn, "--workers", "4"],
        "uvicorn": [PYTHON, "-m", "uvicorn", "chatproject.asgi:application", "--host", host, "--port", str(port),
                    "--workers", "2", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
        "granian": [PYTHON, "-m", "granian", "--interface", "wsgi", "chatproject.wsgi:application", "--host", host,
                    "--port", str(port), "--workers", "2", "--blocking-threads", "8", "--no-access-log"],
    }  # fmt: skip
    if kind not in commands:
        raise SystemExit(f"BENCH_SERVER={kind!r}: use one of {', '.join(commands)}")
    return commands[kind]


SERVERS = ("gunicorn-gthread", "gunicorn-gthread-8", "gunicorn-gthread-4", "gunicorn-sync", "uvicorn", "granian")


class WebServer:
    """The API under one of the candidate servers; by default as the Procfile runs it: gunicorn, 2 gthread workers
    of 16 threads each."""

    def __init__(self, env: dict[str, str], log_dir: Path, kind: str = "gunicorn-gthread") -> None:
        self.kind = kind
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = Process(kind, server_command(kind, "127.0.0.1", port), env, log_dir)
        self.pid = self.process.pid
        wait_for(self._healthy, timeout=60, what=f"{kind} to answer /healthz", interval=0.3)

    def _healthy(self) -> bool:
        self.process.check_alive()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.process.stop(30)  # each server's master process stops its own workers on SIGTERM


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


CREATE_USER = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
user = get_user_model().objects.create_user("bench")
print(user.pk, Token.objects.create(user=user).key)
"""


def prepare_database(env: dict[str, str]) -> tuple[str, str]:
    """Migrates, then creates the bench user and its API token; returns (user_id, token)."""
    manage(env, "migrate", "--noinput")
    user_id, token = manage(env, "shell", "-c", CREATE_USER).split()[-2:]
    return user_id, token


class Database:
    """A fresh SQLite file under the run's temp dir, or (DATABASE_URL set) a bench_<random> PostgreSQL database."""

    def __init__(self, tmp: Path) -> None:
        base = os.environ.get("DATABASE_URL", "").strip()
        self.created_pg: str | None = None
        self.admin_url: str | None = None
        if not base or base.startswith("sqlite"):
            self.url = f"sqlite:///{tmp / 'bench.sqlite3'}"
            self.engine = "SQLite"
            return
        import psycopg

        parts = urlsplit(base)
        name = f"bench_{uuid.uuid4().hex[:10]}"
        self.admin_url = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            self.version = conn.execute("SHOW server_version").fetchone()[0]
        self.created_pg = name
        self.url = urlunsplit(parts._replace(path=f"/{name}"))
        self.engine = f"PostgreSQL {self.version}"

    def drop(self) -> None:
        if not self.created_pg:
            return
        import psycopg

        with contextlib.suppress(Exception), psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.created_pg}" WITH (FORCE)')
        self.created_pg = None


def proc_status(pid: int, field: str) -> int | None:
    """A /proc/PID/status field in kB (VmRSS, VmHWM) or a count (Threads); None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (gunicorn's workers), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total
