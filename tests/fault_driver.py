"""Starts runs on a deployment the fault tests own: `python -m tests.fault_driver KIND:N ...`.

KIND is `chain` (N noop steps in a line), `fanout` (a start, N parallel noop branches and
a join) or `slow` (a noop, a sleep of N seconds, two noops). The pipelines are created
first, then the runs started one after the other; prints their ids on one line.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

import django


def steps(kind: str, n: int) -> list[dict[str, Any]]:
    if kind == "chain":
        return [
            {"name": f"s{i}", "type": "noop", **({"after": [f"s{i - 1}"]} if i else {})}
            for i in range(n)
        ]
    if kind == "fanout":
        branches = [f"b{i}" for i in range(n)]
        return [
            {"name": "start", "type": "noop"},
            *({"name": b, "type": "noop", "after": ["start"]} for b in branches),
            {"name": "join", "type": "noop", "after": branches},
        ]
    if kind == "slow":
        return [
            {"name": "before", "type": "noop"},
            {"name": "slow", "type": "sleep", "after": ["before"], "config": {"seconds": n}},
            {"name": "after", "type": "noop", "after": ["slow"]},
            {"name": "last", "type": "noop", "after": ["after"]},
        ]
    raise SystemExit(f"unknown kind {kind!r}: chain, fanout or slow")


def main(argv: list[str]) -> None:
    wanted = [arg.partition(":") for arg in argv]
    if not wanted or any(not n.isdigit() for _, _, n in wanted):
        raise SystemExit(__doc__)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "firefly_site.test_settings")
    django.setup()
    from pipelines import services

    names = []
    for kind, _, n in wanted:
        names.append(f"{kind}-{n}-{uuid.uuid4().hex[:8]}")
        services.pipeline_create(spec={"name": names[-1], "steps": steps(kind, int(n))})
    print(" ".join(str(services.run_start(pipeline=name, inputs={}).pk) for name in names))


if __name__ == "__main__":
    main(sys.argv[1:])
