"""`/metrics` under gunicorn with several worker processes: every process's counters add up."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from pipelines import services
from tests.production import free_port, gunicorn, process, production_env, wait_http
from tokens.services import token_create

STARTS = 24


def started(body: str, pipeline: str) -> float:
    found = re.search(
        rf'^firefly_runs_started_total\{{pipeline="{pipeline}"\}} (\S+)$', body, re.MULTILINE
    )
    return float(found.group(1)) if found else 0.0


def test_every_worker_process_counts_into_one_metrics_page(
    transactional_db: Any, users: dict[str, Any], tmp_path: Any
) -> None:
    services.pipeline_create(
        member_role="starter",
        spec={"name": "counted-served", "steps": [{"name": "a", "type": "noop"}]},
    )
    _, key = token_create(user=users["starter"], name="metrics")
    env = production_env(
        tmp_path / "var",
        WEB_CONCURRENCY="3",
        WEB_THREADS="1",
        FIREFLY_THROTTLE_RUN_START="1000/min",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    with process(gunicorn(port), env, log) as web:
        wait_http(f"{base}/healthz", web, log)

        def start(_: int) -> int:
            response = requests.post(
                f"{base}/api/v1/pipelines/counted-served/runs/",
                json={"inputs": {}},
                headers={"Authorization": f"Token {key}"},
                timeout=30,
            )
            return response.status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            assert set(pool.map(start, range(STARTS))) == {201}, log.read_text()[-3000:]

        # Several processes answered, each counting in its own file...
        counting = {p.name for p in (tmp_path / "var" / "prometheus").glob("counter_*.db")}
        assert len(counting) >= 2, counting
        # ... and whichever process answers the scrape shows them all.
        for _ in range(6):
            body = requests.get(f"{base}/metrics", timeout=30).text
            assert started(body, "counted-served") == STARTS, body[:2000]
