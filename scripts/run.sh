#!/usr/bin/env bash
# Start the web server, Celery workers and Celery beat; stop them all on Ctrl-C.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${PORT:-8000}
# The demo runs in debug (development keys, plain HTTP); a deployment never sets this.
export DEBUG=${DEBUG:-true}
mkdir -p var/log

# Threads suit steps that wait on I/O (HTTP calls, sleeps, people); run CPU-heavy
# steps on a separate prefork worker (see README). One worker process per core: each
# has its own consumer and its own GIL, so a wide fan-out is dispatched twice as fast
# as by one process with twice the threads. Keep in step with bench/engine.py.
WORKERS=${WORKERS:-2}
WORKER_ARGS=${WORKER_ARGS:---pool threads --concurrency 32}

pids=()
stop() { kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; exit 0; }
trap stop INT TERM

"$VENV/bin/python" manage.py runserver "127.0.0.1:$PORT" --noreload >var/log/web.log 2>&1 &
pids+=($!)
for n in $(seq "$WORKERS"); do
  # shellcheck disable=SC2086
  "$VENV/bin/celery" -A firefly_site worker $WORKER_ARGS -n "worker$n@%h" -l INFO \
    >"var/log/worker$n.log" 2>&1 &
  pids+=($!)
done
"$VENV/bin/celery" -A firefly_site beat -l INFO >var/log/beat.log 2>&1 &
pids+=($!)

# Shown without their passwords: the banner ends up in terminals, logs and screenshots.
database=$("$VENV/bin/python" -m firefly_site.redact "${DATABASE_URL:-}")
broker=$("$VENV/bin/python" -m firefly_site.redact "${CELERY_BROKER_URL:-}")

cat <<MSG

  Firefly is running at http://127.0.0.1:$PORT/
  Demo logins: see README (their passwords are printed above only when first created).
  Database: ${database:-SQLite (var/firefly.sqlite3)}; broker: ${broker:-files in var/broker}
  Logs: var/log/web.log, var/log/worker*.log, var/log/beat.log. Stop with Ctrl-C.

MSG
wait -n "${pids[@]}"
echo "A Firefly process stopped; see var/log/. Shutting down." >&2
stop
