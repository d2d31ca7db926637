"""Real races for tests: threads released together by a barrier, each on its own connection."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

from django.core.management import call_command
from django.db import connection

from pipelines import audit
from pipelines.models import AuditEntry, Run


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once in threads; each returns its value or its exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[index] = call()
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start the call in a thread of its own; the list gets its value or its exception."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as exc:
            result.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def chain_is_intact(run: Run) -> bool:
    entries = list(AuditEntry.objects.filter(run=run).order_by("seq"))
    run.refresh_from_db()
    return audit.verify_chain(f"run {run.pk}", entries, (run.audit_seq, run.audit_head)) is None


def verify_audit(*args: str) -> str:
    """`manage.py verify_audit` over the whole database (it raises on a broken chain)."""
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()
