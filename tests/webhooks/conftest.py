"""Fixtures for webhook tests: a real receiver on 127.0.0.1, runs driven in-process."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import transaction

from approvals import services as approvals
from pipelines import dispatch
from pipelines import services as pipelines
from pipelines.models import Run
from tests.approvals.conftest import drive, open_task
from webhooks import crypto
from webhooks import services as webhooks
from webhooks.models import Webhook


class Receiver:
    """An HTTP server on 127.0.0.1 answering with `answers` in turn (the last one repeats)."""

    def __init__(
        self, answers: list[int], delay: float = 0.0, port: int = 0, location: str = ""
    ) -> None:
        self.answers = answers
        self.delay = delay
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                receiver.received.append({"headers": dict(self.headers), "body": body})
                time.sleep(receiver.delay)
                answer = receiver.answers[min(len(receiver.received), len(receiver.answers)) - 1]
                self.send_response(answer)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receive(settings: Any) -> Iterator[Any]:
    made: list[Receiver] = []

    def make(
        answers: list[int] | None = None, delay: float = 0.0, port: int = 0, location: str = ""
    ) -> Receiver:
        made.append(Receiver(answers or [200], delay, port, location))
        port = made[-1].server.server_address[1]
        allowed = settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS
        settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS = [*allowed, f"127.0.0.1:{port}"]
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def hook_settings(settings: Any) -> Any:
    # Receivers listen on 127.0.0.1 on any port: the address and each port must be listed.
    settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1", "127.0.0.1:9"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.1"]
    settings.FIREFLY_WEBHOOK_TIMEOUT_S = 0.5
    settings.FIREFLY_WEBHOOK_MAX_ATTEMPTS = 5
    return settings


class Offline:
    def __init__(self, capture: Any) -> None:
        self.capture = capture
        self.queued: list[int] = []
        self.attempts: list[int] = []  # the attempt each queued message names

    def enqueue(self, delivery_id: int, attempt: int = 1) -> None:
        self.queued.append(delivery_id)
        self.attempts.append(attempt)

    def __call__(self) -> Any:
        """A block whose after-commit callbacks run when it ends, as after a real commit."""
        return self.capture(execute=True)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any) -> Offline:
    """After-commit callbacks run, but nothing reaches the broker; collects delivery ids."""
    done = Offline(django_capture_on_commit_callbacks)
    monkeypatch.setattr(dispatch, "advance_run", lambda run_id: None)
    monkeypatch.setattr(dispatch, "execute_steps", lambda ids, countdown=0: None)
    monkeypatch.setattr(webhooks, "enqueue", done.enqueue)
    monkeypatch.setattr(dispatch, "relay_outbox", relay_in_process)
    return done


def relay_in_process() -> None:
    """The outbox relay, run here after commit instead of by a worker."""
    transaction.on_commit(pipelines.outbox_relay)


def gated_run(users: dict[str, Any], offline: Offline, name: str = "hooked", **review: Any) -> Run:
    """A run waiting for review (the task.opened event committed)."""
    pipelines.pipeline_create(
        member_role="starter",
        spec={
            "name": name,
            "steps": [
                {"name": "build", "type": "noop"},
                {
                    "name": "review",
                    "type": "approval",
                    "after": ["build"],
                    "config": {"assignee_role": "reviewers", **review},
                },
            ],
        },
    )
    with offline():
        run = pipelines.run_start(pipeline=name, inputs={}, actor=users["starter"])
        return drive(run)


def approve_and_finish(run: Run, users: dict[str, Any], offline: Offline) -> Run:
    with offline():
        approvals.task_approve(task_id=open_task(run).pk, user=users["r1"])
        return drive(run)


def verify(secret: str, headers: dict[str, str], body: str, tolerance: int = 300) -> bool:
    """What a receiver does (the README shows the same): any one signature may match."""
    timestamp = headers["Firefly-Timestamp"]
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    expected = f"sha256={mac.hexdigest()}"
    fresh = abs(time.time() - int(timestamp)) <= tolerance
    given = [part.strip() for part in headers["Firefly-Signature"].split(",")]
    return fresh and any(hmac.compare_digest(expected, part) for part in given)


def stored_secret(hook: Webhook) -> str:
    """The plaintext of a webhook's current secret, as the row holds it now."""
    return crypto.decrypt(Webhook.objects.get(pk=hook.pk).secret_encrypted)
