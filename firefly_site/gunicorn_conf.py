"""gunicorn's settings for `make serve` (`gunicorn -c firefly_site/gunicorn_conf.py`)."""

import os

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
