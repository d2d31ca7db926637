"""A bare Celery task for bench/engine.py's RAW scenario (the floor without durability).

The worker loads it with `celery -A firefly_site worker -I bench.rawtasks`. The last task
of a chain sets a Redis key (in the broker, or in the local Redis when the broker is
RabbitMQ), so the benchmark sees the chain finish without a result backend.
"""

from __future__ import annotations

import time

import redis

from bench.common import signal_redis_url
from firefly_site.celery import app

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(signal_redis_url(app.conf.broker_url))
    return _client


@app.task(name="bench.rawtasks.noop", ignore_result=True)
def noop(done_key: str | None = None) -> None:
    """Do nothing; when given `done_key`, record the finish time there (expires in 1 h)."""
    if done_key:
        _redis().set(done_key, repr(time.time()), ex=3600)
