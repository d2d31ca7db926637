"""A PostgreSQL and a Redis of the test's own, with Firefly processes on them, to restart."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
# initdb refuses to run as root; the servers run as this OS user.
PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"{name} not found on PATH nor in /usr/lib/postgresql/*/bin")
    return found


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv


def run_bounded(argv: list[str], timeout: float, **kwargs: object) -> str:
    """Run a command in its own process group; on timeout the whole group is killed."""
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kwargs,  # type: ignore[call-overload]
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RuntimeError(f"{argv[:3]} took over {timeout}s") from None
    text: str = out.decode(errors="replace")
    if process.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}:\n{text[-3000:]}")
    return text


class OwnPostgres:
    """A cluster in a temporary folder on a free port (trust auth, fsync on)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.sockets = folder / "sockets"
        self.log = folder / "postgres.log"
        self.port = free_port()
        self.up = False

    def init(self) -> None:
        self.sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.folder, PG_USER)
            shutil.chown(self.sockets, PG_USER)
        run_bounded(
            as_postgres(
                [pg_binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
            ),
            timeout=120,
        )
        self.start()

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.sockets} -c fsync=on "
            "-c synchronous_commit=on -c max_connections=200"
        )
        argv = [pg_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w"]
        run_bounded(as_postgres([*argv, "-t", str(int(timeout)), "-o", options, *args]), timeout)

    def start(self) -> None:
        self._ctl("start")
        self.up = True

    def restart(self) -> None:
        """A fast shutdown (open transactions rolled back, connections cut), then up again."""
        self._ctl("restart", "-m", "fast")
        self.up = True

    def stop(self) -> None:
        if not self.up:
            return
        try:
            self._ctl("stop", "-m", "fast", timeout=30)
        except RuntimeError:
            self._ctl("stop", "-m", "immediate", timeout=30)
        self.up = False

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class OwnRedis:
    """redis-server on a free port, keeping nothing on disk: a restart loses every message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.log = folder / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not answering on {self.port}; see {self.log}")

    def stop(self) -> None:
        """SIGKILL: nothing saved, so everything it held (queued and unacked) is gone."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


class Process:
    """A Firefly process (worker, beat) on the own services, in its own process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.wanted = False  # started and not stopped since: a supervisor would restart it
        self.respawned = 0

    def start(self) -> None:
        self.wanted = True
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        self.wanted = False
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        self.wanted = False
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class Deployment:
    """Firefly on an own PostgreSQL and Redis: migrated database, workers, beat, and
    management commands, all as subprocesses with the given settings."""

    def __init__(
        self, postgres: OwnPostgres, redis: OwnRedis, folder: Path, settings: dict[str, str]
    ) -> None:
        self.postgres, self.redis, self.folder = postgres, redis, folder
        self.database_url = postgres.create_database("firefly_restarts")
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings",
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": redis.url(),
            "PYTHONPATH": str(ROOT),
            "FIREFLY_VAR_DIR": str(folder / "var"),
            "FIREFLY_ANCHOR_FILE": str(folder / "anchors.jsonl"),
            "CONN_MAX_AGE": "0",
            **settings,
        }
        self.processes: list[Process] = []
        self.manage("migrate", "--noinput", timeout=240)

    def manage(self, *args: str, timeout: float = 120) -> str:
        return self.python("manage.py", *args, timeout=timeout)

    def python(self, *args: str, timeout: float = 120) -> str:
        return run_bounded([sys.executable, *args], timeout, cwd=ROOT, env=self.env)

    def driver(self, *args: str, timeout: float = 120) -> str:
        """tests/fault_driver.py on this deployment; returns its last line of output."""
        out = self.python("-m", "tests.fault_driver", *args, timeout=timeout)
        return out.strip().splitlines()[-1]

    def worker(self, name: str, concurrency: int = 8) -> Process:
        node = f"{name}-{os.getpid()}@{os.uname().nodename}"
        argv = [sys.executable, "-m", "celery", "-A", "firefly_site", "worker", "-P", "threads"]
        argv += ["-c", str(concurrency), "-n", node, "-l", "WARNING"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        process = Process(node, argv, self.env, self.folder / f"worker-{name}.log")
        self.processes.append(process)
        process.start()
        self.wait_ready(process)
        return process

    def wait_ready(self, process: Process, timeout: float = 60.0) -> None:
        """Pinged through this deployment's broker: the suite's Celery app has another,
        and a new app would take it too (Celery prefers CELERY_BROKER_URL from the
        environment to broker_url, but not to the read and write URLs)."""
        url = self.redis.url()
        app = Celery("firefly-own", broker_read_url=url, broker_write_url=url)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not process.alive():
                    tail = process.log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{process.name} exited early:\n{tail}")
                try:
                    if app.control.ping(destination=[process.name], timeout=0.5):
                        return
                except app.connection_for_write().connection_errors:
                    # A pooled connection from before a broker restart: the next one is new.
                    time.sleep(0.2)
            tail = process.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{process.name} not ready after {timeout}s:\n{tail}")
        finally:
            app.close()

    def beat(self) -> Process:
        argv = [sys.executable, "-m", "celery", "-A", "firefly_site", "beat", "-l", "INFO"]
        argv += ["-s", str(self.folder / "celerybeat-schedule")]
        process = Process("beat", argv, self.env, self.folder / "beat.log")
        self.processes.append(process)
        process.start()
        return process

    def supervise(self) -> None:
        """Start again a process that exited by itself, as the units' Restart=always do
        (docs/deploy.md): a Celery worker can exit when the broker goes away under it."""
        for process in self.processes:
            if process.wanted and not process.alive():
                process.respawned += 1
                process.start()

    def stop_processes(self) -> None:
        for process in self.processes:
            process.stop()

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Read straight from the own database, outside Django."""
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
            return list(conn.execute(sql, params).fetchall())

    def logs(self) -> str:
        """The tail of every log, for a failing test's report."""
        parts = []
        for log in sorted(self.folder.rglob("*.log")):
            text = log.read_text(errors="replace")
            parts.append(f"--- {log.name}\n{text[-2500:]}")
        return "\n".join(parts)


def keep_logs(folder: Path) -> None:
    """The logs outlive the temporary folder, in var/ as the other test workers' do."""
    kept = ROOT / "var" / "test-own-services"
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for log in folder.rglob("*.log"):
        shutil.copy(log, kept / log.name)


@contextmanager
def own_deployment(settings: dict[str, str]) -> Iterator[Deployment]:
    """A Deployment on services of its own; everything is stopped and removed whatever
    happens (a temporary folder, the servers, every process started)."""
    folder = Path(tempfile.mkdtemp(prefix="firefly-restarts-"))
    folder.chmod(0o755)  # the postgres OS user reaches its data folder through it
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        stack.callback(keep_logs, folder)
        postgres = OwnPostgres(folder / "postgres")
        (folder / "postgres").mkdir()
        stack.callback(postgres.stop)
        postgres.init()
        redis = OwnRedis(folder)
        stack.callback(redis.stop)
        redis.start()
        deployment = Deployment(postgres, redis, folder, settings)
        stack.callback(deployment.stop_processes)
        try:
            yield deployment
        except BaseException:
            # The folder goes with the deployment: keep its logs in the report.
            sys.stderr.write(deployment.logs())
            raise
