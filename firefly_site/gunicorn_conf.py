"""gunicorn's settings for `make serve` (`gunicorn -c firefly_site/gunicorn_conf.py`)."""

import os
import shutil
from pathlib import Path
from typing import Any

# Processes (each with its own GIL and database connections) times threads per process.
# Pages wait on PostgreSQL more than they compute: a few threads per process keep a core
# busy. Every thread may hold a connection: see docs/deploy.md ("Sizing").
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
# Loopback by default: a reverse proxy in front terminates TLS (docs/deploy.md).
bind = os.environ.get("WEB_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}").split(",")
# A request still running after this long is killed with its worker (which gunicorn
# replaces); long work belongs in steps, on the Celery workers.
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# The addresses whose X-Forwarded-* headers gunicorn believes (the reverse proxy's).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("WEB_ACCESS_LOG", "-")
errorlog = "-"

# Each worker process counts in its own files under this directory, and /metrics adds
# them all up (prometheus-client's multiprocess mode). It is emptied when gunicorn
# starts, and a worker that exits is marked dead so its live gauges stop counting.
_var = Path(os.environ.get("FIREFLY_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))
metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_var / "prometheus")))


def on_starting(server: Any) -> None:
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
