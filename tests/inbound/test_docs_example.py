"""docs/api.md's curl examples, run as written against a live server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from inbound import services as inbound
from inbound.models import InboundDelivery
from pipelines import services
from tests.inbound.conftest import PAYMENT

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def snippet(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```sh\n(.*?)```", DOCS.read_text(), re.S)
    assert found, f"no {marker} block in docs/api.md"
    return found.group(1)


@pytest.mark.parametrize(
    ("marker", "fmt", "inputs"),
    [
        ("inbound-curl", "hmac-sha256", {"amount": 120.5, "payee": "ACME"}),
        ("inbound-curl-firefly", "firefly", {"amount": 99, "payee": "Initech"}),
    ],
)
def test_the_documented_curl_example_starts_a_run(
    live_server: Any, marker: str, fmt: str, inputs: dict[str, Any]
) -> None:
    services.pipeline_create(spec={**PAYMENT, "name": "payments-docs"})
    hook = inbound.hook_create(
        pipeline="payments-docs",
        name="payments",
        signature_format=fmt,
        delivery_id_header="X-Delivery",
        input_mapping={"amount": "data.amount", "payee": "data.payee.name"},
    )
    env = {**os.environ, "URL": f"{live_server.url}{hook.path}", "SECRET": hook.new_secret}
    done = subprocess.run(
        ["bash", "-euc", snippet(marker)], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert '"run"' in done.stdout, done.stdout
    [delivery] = InboundDelivery.objects.filter(hook=hook)
    assert delivery.outcome == "accepted", delivery.reason
    assert delivery.run is not None
    assert delivery.run.inputs == inputs
