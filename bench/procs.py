"""The processes a run starts (Temporal dev server, model server, project worker, raw worker, web servers, by
devtools.processes) and its database.

Each process is stopped by the PID it was started with; its output goes to a log in the run's temp dir.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench import project
from bench.raw_worker import RawDB
from bench.results import THROTTLE
from devtools import processes
from devtools.processes import REPO, ChildProcess, DevServer, WorkerProcess, free_port, project_env

PYTHON = sys.executable
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
# The bench user and its API token, another user's (line 11), and the database settings the raw side must share with
# Django's.
SETUP = """
import json
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
user = get_user_model().objects.create_user("bench")
other = get_user_model().objects.create_user("bench-other")
db = settings.DATABASES["default"]
print(json.dumps({"user_id": str(user.pk), "token": Token.objects.create(user=user).key,
                  "other_token": Token.objects.create(user=other).key,
                  "busy_timeout": db.get("OPTIONS", {}).get("timeout", 5), "conn_max_age": db["CONN_MAX_AGE"]}))
"""
# The project's processes' environment, besides devtools.processes.project_env.
PROJECT_ENV = {
    "DJANGO_SETTINGS_MODULE": os.environ.get("BENCH_DJANGO_SETTINGS", "chatproject.settings"),
    "DJANGO_DEBUG": "false",
    "CHAT_THROTTLE_SESSION_START": THROTTLE,
    "CHAT_THROTTLE_MESSAGE_POST": THROTTLE,
    "CHAT_USER_DAILY_TOKENS": "0",
    "CHAT_REPLY_WAITS_PER_USER": "100",  # line 11: one user waits on 50 replies at once (25 small)
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class WebServer(processes.WebServer):
    """The API under one of the candidate servers (SERVERS), or under `command`; its log is `<log_dir>/<kind>.log`."""

    def __init__(self, kind: str, env: dict[str, str], log_dir: Path, command: str | None = None) -> None:
        if command is None and kind not in SERVERS:
            raise SystemExit(f"BENCH_SERVER={kind!r}: use one of {', '.join(SERVERS)}")
        self.kind = kind
        super().__init__(env, log_dir / f"{kind}.log", command=command or SERVERS[kind], name=kind)


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
        self.tmp, run = tmp, uuid.uuid4().hex[:6]
        self.database_url, self.engine = database(tmp, stack)
        self.raw_task_queue = f"bench-raw-{run}"
        temporal = DevServer(log=tmp / "temporal.log", search_attributes=())
        self.temporal = stack.enter_context(temporal).wait_ready()
        self.address = self.temporal.address
        # The assistant: the local model server at a set pace (bench.phases.first_token), by the real provider path.
        model_port = free_port()
        model_args = [PYTHON, "-m", "devtools.model_server", "--port", str(model_port)]
        model_args += ["--first-token-delay", str(MODEL_FIRST_TOKEN), "--chunk-delay", "0.03"]
        model_args += ["--tools"]  # "search my chats for …" is answered with a search_chats call (line 9)
        model = ChildProcess("model", model_args, env=os.environ, log=tmp / "model.log")
        self.model = stack.enter_context(model).wait_for_output("model at")
        self.model_url = f"http://127.0.0.1:{model_port}/v1"
        assistant = {"CHAT_ASSISTANT_MODEL": "openai:bench-model", "OPENAI_BASE_URL": self.model_url}
        self.env = project_env(
            database_url=self.database_url,
            temporal_address=self.address,
            task_queue=f"bench-{run}",
            **PROJECT_ENV,
            **assistant,
            OPENAI_API_KEY="bench",
        )
        manage(self.env, "migrate", "--noinput")
        self.setup = json.loads(manage(self.env, "shell", "-c", SETUP).splitlines()[-1])
        RawDB(self.database_url, self.setup["busy_timeout"]).create_tables()
        self.worker = stack.enter_context(WorkerProcess(self.env, log=tmp / "worker.log")).wait_ready()
        options = [self.address, self.database_url, self.setup["busy_timeout"], self.raw_task_queue]
        raw_args = [PYTHON, "-m", "bench.raw_worker", json.dumps([*options, project.worker_defaults()])]
        raw_env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        raw_worker = ChildProcess("raw-worker", raw_args, env=raw_env, log=tmp / "raw-worker.log")
        self.raw_worker = stack.enter_context(raw_worker).wait_for_output("raw worker polling")
        log(f"{self.engine}; temporal pid {self.temporal.pid}, worker {self.worker.pid}, raw {self.raw_worker.pid}")
        self.processes = {"temporal": self.temporal, "worker": self.worker, "raw worker": self.raw_worker}
        self.processes["model server"] = self.model
        self._stack, self.restarts = stack, 0

    def restart_worker(self) -> WorkerProcess:
        """SIGKILLs the project's worker and starts another in its place at once; returns it (not yet polling)."""
        self.worker.kill()
        self.restarts += 1
        log = self.tmp / f"worker-{self.restarts}.log"
        self.worker = self._stack.enter_context(WorkerProcess(self.env, log=log))
        self.processes["worker"] = self.worker
        return self.worker

    def second_worker(self) -> WorkerProcess:
        """Another project worker on the same task queue, started now (not yet polling); the caller stops it."""
        return WorkerProcess(self.env, log=self.tmp / "worker-second.log")

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
