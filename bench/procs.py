"""The processes a run starts (Temporal dev server, project worker, raw worker, web server) and its database.

Each process is stopped by the PID it was started with; its output goes to a log in the run's temp dir.
"""

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
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from urllib.request import urlopen

import psutil

from bench import project
from bench.raw_worker import RawDB
from bench.results import THROTTLE

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TEMPORAL_CLI = str(Path(PYTHON).parent / "temporal")
# The web server candidates `make bench-servers` compares; uvicorn is the one the project ships (Procfile,
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
# The peer: FastAPI with the same SDK (bench.fastapi_peer), under the same server and settings as the project's API.
PEER = SERVERS["uvicorn"].replace("chatproject.asgi:application", "bench.fastapi_peer:app")
# The local model server's pace: seconds to its first token (then one word every 30 ms).
MODEL_FIRST_TOKEN = 0.2
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
# The project's processes' environment, besides the run's database, Temporal server and task queue.
PROJECT_ENV = {
    "DJANGO_SETTINGS_MODULE": os.environ.get("BENCH_DJANGO_SETTINGS", "chatproject.settings"),
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 32,
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    "CHAT_THROTTLE_SESSION_START": THROTTLE,
    "CHAT_THROTTLE_MESSAGE_POST": THROTTLE,
    "CHAT_USER_DAILY_TOKENS": "0",
    "DJANGO_ENV_FILE": "",  # a developer's .env (its search attribute, say) must not change the figures
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:  # an ephemeral port: never one of `make run`'s (7233, 8233, 8000)
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


class Process:
    """A child process logging to `<log_dir>/<name>.log`; with `ready_line`, started once it logs that line."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, ready_line: str = "") -> None:
        self.name, self.log = name, log_dir / f"{name}.log"
        with self.log.open("w") as out:
            self.popen = psutil.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.popen.pid
        if ready_line:
            wait_for(lambda: self.check_alive() and ready_line in self.log.read_text(), f"{name} to log {ready_line!r}")

    def check_alive(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log.read_text()[-3000:]}")
        return True

    def _tree(self, read: Callable[[psutil.Process], float]) -> float:
        """The sum of `read` over the process and its live children (a web server's workers)."""
        total = 0.0
        for process in [self.popen, *self.popen.children()]:
            with contextlib.suppress(psutil.NoSuchProcess):  # a server may replace a worker at any time
                total += read(process)
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time."""
        return self._tree(lambda process: sum(process.cpu_times()[:2]))

    def rss_mb(self) -> float:
        return self._tree(lambda process: process.memory_info().rss) / 2**20

    def threads(self) -> int:
        return int(self._tree(psutil.Process.num_threads))

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()  # a server's master process stops its own workers on SIGTERM
            try:
                self.popen.wait(30)
            except psutil.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class WebServer(Process):
    """The API under one of the candidate servers, answering /healthz."""

    def __init__(self, kind: str, env: dict[str, str], log_dir: Path, command: str | None = None) -> None:
        if command is None and kind not in SERVERS:
            raise SystemExit(f"BENCH_SERVER={kind!r}: use one of {', '.join(SERVERS)}")
        self.kind, port = kind, free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = (command or SERVERS[kind]).format(host="127.0.0.1", port=port)
        super().__init__(kind, [PYTHON, *command.split()], env, log_dir)
        wait_for(lambda: self.check_alive() and self._healthy(), f"{kind} to answer /healthz")

    def _healthy(self) -> bool:
        with contextlib.suppress(OSError), urlopen(f"{self.url}/healthz", timeout=5) as response:
            return response.status == 200
        return False


def database(tmp: Path, stack: ExitStack) -> tuple[str, str]:
    """(URL, engine): a fresh SQLite file in the run's dir or, when DATABASE_URL names a PostgreSQL server, a new
    bench_<random> database there, dropped by `stack`."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        return f"sqlite:///{tmp / 'bench.sqlite3'}", "SQLite"
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = stack.enter_context(psycopg.connect(base, autocommit=True))  # kept open to drop the database at the end
    admin.execute(f"CREATE DATABASE {name}")
    stack.callback(admin.execute, f"DROP DATABASE {name} WITH (FORCE)")
    version = admin.execute("SHOW server_version").fetchone()[0]
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}")), f"PostgreSQL {version}"


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


class Rig:
    """What every measurement runs on: a database, a Temporal dev server, the project's worker and the raw worker."""

    def __init__(self, tmp: Path, stack: ExitStack) -> None:
        self.tmp, run, port = tmp, uuid.uuid4().hex[:6], free_port()
        self.database_url, self.engine = database(tmp, stack)
        self.address, self.raw_task_queue = f"127.0.0.1:{port}", f"bench-raw-{run}"
        ports = ["--port", str(port), "--http-port", str(free_port()), "--metrics-port", str(free_port())]
        args = [TEMPORAL_CLI, "server", "start-dev", "--headless", "--ip", "127.0.0.1", *ports, "--log-level", "error"]
        self.temporal = stack.enter_context(Process("temporal", args, dict(os.environ), tmp, "Temporal Server:"))
        # The assistant: the local model server at a set pace (bench.phases.first_token), by the real provider path.
        model_args = ["--port", str(free_port()), "--first-token-delay", str(MODEL_FIRST_TOKEN), "--chunk-delay"]
        model_args.append("0.03")
        model = Process("model", [PYTHON, "-m", "tests.model_server", *model_args], dict(os.environ), tmp, "model at")
        self.model = stack.enter_context(model)
        self.model_url = f"http://127.0.0.1:{model_args[1]}/v1"
        assistant = {"CHAT_ASSISTANT_MODEL": "openai:bench-model", "OPENAI_BASE_URL": self.model_url}
        self.env = os.environ | PROJECT_ENV | assistant | {"DATABASE_URL": self.database_url}
        self.env |= {"TEMPORAL_ADDRESS": self.address, "OPENAI_API_KEY": "bench"}
        self.env["TEMPORAL_TASK_QUEUE"] = f"bench-{run}"
        manage(self.env, "migrate", "--noinput")
        self.setup = json.loads(manage(self.env, "shell", "-c", SETUP).splitlines()[-1])
        RawDB(self.database_url, self.setup["busy_timeout"]).create_tables()
        worker = Process("worker", [PYTHON, "manage.py", "run_temporal_worker"], self.env, tmp, "worker polling")
        self.worker = stack.enter_context(worker)
        options = [self.address, self.database_url, self.setup["busy_timeout"], self.raw_task_queue]
        raw_args = [PYTHON, "-m", "bench.raw_worker", json.dumps([*options, project.worker_defaults()])]
        raw_env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        self.raw_worker = stack.enter_context(Process("raw-worker", raw_args, raw_env, tmp, "raw worker polling"))
        log(f"{self.engine}; temporal pid {self.temporal.pid}, worker {self.worker.pid}, raw {self.raw_worker.pid}")
        self.processes = {"temporal": self.temporal, "worker": self.worker, "raw worker": self.raw_worker}
        self.processes["model server"] = self.model

    @staticmethod
    @contextmanager
    def started(name: str, keep_logs: bool = False) -> Iterator["Rig"]:
        """Starts it all, logs in a new temp dir; stops each process at the end, last started first, also when
        SIGTERM or SIGHUP (make's, a CI's, a developer's kill) unwinds the run like Ctrl-C. The logs are removed
        unless `keep_logs` or the run failed."""
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.default_int_handler)  # raises KeyboardInterrupt
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        log(f"logs in {tmp}")
        try:
            with ExitStack() as stack:
                yield Rig(tmp, stack)
        except BaseException:
            log(f"failed; the processes' logs are in {tmp}")
            raise
        if not keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)

    def check_alive(self) -> None:
        for process in self.processes.values():
            process.check_alive()
