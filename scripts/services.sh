#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and (given a third URL) RabbitMQ answer on the test URLs'
# hosts; start them (or install them from Debian's packages) when they run on this
# machine and are down.
set -euo pipefail
db_url=${1:-postgres://postgres@127.0.0.1:5432/firefly}
broker_url=${2:-redis://127.0.0.1:6379/15}
amqp_url=${3:-}

hostport() {  # scheme://[user@]host:port/... -> "host port"
  local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}
  echo "${rest%%:*} ${rest##*:}"
}
local_host() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }
can_install() { command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; }

read -r pg_host pg_port <<<"$(hostport "$db_url")"
read -r redis_host redis_port <<<"$(hostport "$broker_url")"

pg_up() { pg_isready -q -h "$pg_host" -p "$pg_port" 2>/dev/null; }
redis_up() { (exec 3<>"/dev/tcp/$redis_host/$redis_port" && printf 'PING\r\n' >&3 && read -r -t 2 reply <&3 && [[ $reply == +PONG* ]]) 2>/dev/null; }

wait_until() {  # wait_until NAME CHECK
  for _ in $(seq 60); do "$2" && return 0; sleep 0.5; done
  echo "$1 did not come up" >&2; return 1
}

if ! pg_up; then
  local_host "$pg_host" || { echo "PostgreSQL at $pg_host:$pg_port does not answer" >&2; exit 1; }
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    can_install || { echo "PostgreSQL is not installed; install it or set TEST_DATABASE_URL" >&2; exit 1; }
    echo "Installing PostgreSQL..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    version=$(ls /etc/postgresql | sort -V | tail -1)
    sed -i 's/^\(local\|host\)\(.*\)\(peer\|scram-sha-256\|md5\)$/\1\2trust/' "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  echo "Starting PostgreSQL..."
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
  wait_until PostgreSQL pg_up
fi

if ! redis_up; then
  local_host "$redis_host" || { echo "Redis at $redis_host:$redis_port does not answer" >&2; exit 1; }
  if ! command -v redis-server >/dev/null; then
    can_install || { echo "Redis is not installed; install it or set TEST_BROKER_URL" >&2; exit 1; }
    echo "Installing Redis..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  echo "Starting Redis..."
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$redis_port" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_until Redis redis_up
fi
echo "PostgreSQL ($pg_host:$pg_port) and Redis ($redis_host:$redis_port) are up."

[[ -n $amqp_url ]] || exit 0
read -r amqp_host amqp_port <<<"$(hostport "$amqp_url")"
# An AMQP server answers a protocol header it does not speak with its own ("AMQP...").
amqp_up() { (exec 3<>"/dev/tcp/$amqp_host/$amqp_port" && printf 'AMQP\x01\x01\x00\x0a' >&3 && read -r -t 3 -n 4 reply <&3 && [[ $reply == AMQP ]]) 2>/dev/null; }
if ! amqp_up; then
  local_host "$amqp_host" || { echo "RabbitMQ at $amqp_host:$amqp_port does not answer" >&2; exit 1; }
  if ! command -v rabbitmq-server >/dev/null; then
    can_install || { echo "RabbitMQ is not installed; install it or set TEST_AMQP_URL" >&2; exit 1; }
    echo "Installing RabbitMQ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  echo "Starting RabbitMQ..."
  service rabbitmq-server start >/dev/null 2>&1 || rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_until RabbitMQ amqp_up
fi
echo "RabbitMQ ($amqp_host:$amqp_port) is up."
