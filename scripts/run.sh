#!/usr/bin/env bash
# Start the web server, Celery workers and Celery beat; stop them all on Ctrl-C.
# WEB=gunicorn (`make serve`) runs the production web server instead of runserver.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${PORT:-8000}
# The demo runs in debug (development keys, plain HTTP); a deployment never sets this.
export DEBUG=${DEBUG:-true}
# Next to the embedded database and broker (FIREFLY_VAR_DIR, README).
VAR=${FIREFLY_VAR_DIR:-var}
LOGS=$VAR/log
mkdir -p "$LOGS"

# Threads suit steps that wait on I/O (HTTP calls, sleeps, people); run CPU-heavy
# steps on a separate prefork worker (see README). One worker process per core: each
# has its own consumer and its own GIL, so a wide fan-out is dispatched twice as fast
# as by one process with twice the threads. Keep in step with bench/engine.py.
WORKERS=${WORKERS:-2}
WORKER_ARGS=${WORKER_ARGS:---pool threads --concurrency 32}

WEB=${WEB:-runserver}

# A stop asked for (Ctrl-C, SIGINT or SIGTERM to make or to this script) is no failure: it
# ends with one line and status 0, and make, which re-raises the signal it got, exits 130
# (143 on SIGTERM) without a "***" line. A process that dies by itself ends it with 1.
pids=()
stop() {
  trap '' INT TERM
  kill "${pids[@]}" "${watcher[@]}" 2>/dev/null
  wait 2>/dev/null
  # On its own line, after the "^C" a terminal echoes.
  [[ -t 1 ]] && echo
  echo "Firefly stopped."
  exit "${1:-0}"
}
trap stop INT TERM

# make passes a SIGTERM on to this script but not a SIGINT sent to make alone (it leaves
# that to the terminal, which signals the whole group). make stops catching the signal it
# received, so that shows in /proc: then stop as if this script had been sent it.
watcher=()
if [[ $(cat "/proc/$PPID/comm" 2>/dev/null) == make ]]; then
  make_pid=$PPID
  catches_int() {
    local mask
    mask=$(awk '/^SigCgt:/ {print $2}' "/proc/$make_pid/status" 2>/dev/null) || return 1
    [[ -n $mask ]] && (((16#$mask >> 1) & 1))
  }
  if catches_int; then
    (while catches_int; do sleep 1; done; kill -TERM $$) &
    watcher=($!)
  fi
fi

if [[ $WEB == gunicorn ]]; then
  # Workers, threads and address from WEB_CONCURRENCY, WEB_THREADS, WEB_BIND (README).
  "$VENV/bin/gunicorn" -c firefly_site/gunicorn_conf.py firefly_site.wsgi >"$LOGS/web.log" 2>&1 &
else
  "$VENV/bin/python" manage.py runserver "127.0.0.1:$PORT" --noreload >"$LOGS/web.log" 2>&1 &
fi
pids+=($!)
for n in $(seq "$WORKERS"); do
  # shellcheck disable=SC2086
  "$VENV/bin/celery" -A firefly_site worker $WORKER_ARGS -n "worker$n@%h" -l INFO \
    >"$LOGS/worker$n.log" 2>&1 &
  pids+=($!)
done
"$VENV/bin/celery" -A firefly_site beat -l INFO >"$LOGS/beat.log" 2>&1 &
pids+=($!)

# Shown without their passwords: the banner ends up in terminals, logs and screenshots.
database=$("$VENV/bin/python" -m firefly_site.redact "${DATABASE_URL:-}")
broker=$("$VENV/bin/python" -m firefly_site.redact "${CELERY_BROKER_URL:-}")

# Only in debug and only when they exist: production never advertises demo passwords.
logins=$("$VENV/bin/python" manage.py demo_logins 2>/dev/null)

address=${WEB_BIND:-127.0.0.1:$PORT}
[[ $WEB == gunicorn ]] || address=127.0.0.1:$PORT
cat <<MSG

  Firefly is running at http://$address/ (web server: $WEB)
${logins:+  $logins
}  Database: ${database:-SQLite ($VAR/firefly.sqlite3)}; broker: ${broker:-files in $VAR/broker}
  Logs: $LOGS/web.log, $LOGS/worker*.log, $LOGS/beat.log. Stop with Ctrl-C.

MSG
wait -n "${pids[@]}"
echo "A Firefly process stopped by itself; see $LOGS/. Shutting down the others." >&2
stop 1
