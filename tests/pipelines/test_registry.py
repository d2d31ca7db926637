"""Built-in step types, run directly with a hand-built StepContext."""

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from pipelines import registry
from pipelines.context import Pause, StepContext
from pipelines.steptypes.basic import StepFailure


def make_ctx(config: dict[str, Any], *, attempt: int = 1, **fields: Any) -> StepContext:
    values: dict[str, Any] = {
        "run_id": 7,
        "step_name": "step",
        "generation": 1,
        "attempt": attempt,
        "inputs": {},
        "upstream": {},
        "config": config,
        "idempotency_key": "run-7-step-1",
        "logger": logging.getLogger("tests.pipelines"),
    }
    return StepContext(**{**values, **fields})


def handle(type_name: str, ctx: StepContext) -> Any:
    handler = registry.get(type_name).handler
    assert handler is not None
    return handler(ctx)


# Callables the python step type may call once this module is on the allow-list.
def returns_a_list(ctx: StepContext) -> list[str]:
    return ["not", "a", "dict"]


def returns_a_pause(ctx: StepContext) -> Pause:
    return Pause(reason="look first")


@pytest.fixture
def allow_this_module(settings):
    settings.FIREFLY_CALLABLE_MODULES = ["pipelines.demo", __name__]


@pytest.mark.parametrize("name", ["python", "http", "noop", "sleep", "fail"])
def test_built_in_automatic_types_are_registered(name):
    assert registry.is_registered(name)
    assert name in registry.names()
    kind = registry.get(name)
    assert kind.interactive is False
    assert kind.handler is not None


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.StepType(name="noop", config_schema={}))


def test_noop_returns_an_empty_dict():
    assert handle("noop", make_ctx({})) == {}


def test_sleep_sleeps_the_given_seconds():
    result = handle("sleep", make_ctx({"seconds": 0.05}))

    assert result["slept_s"] >= 0.05


def test_sleep_returns_early_when_cancelled():
    ctx = make_ctx({"seconds": 30})
    timer = threading.Timer(0.05, ctx.cancelled.set)
    timer.start()

    started = time.monotonic()
    result = handle("sleep", ctx)

    assert time.monotonic() - started < 2
    assert result["slept_s"] < 2


def test_fail_fails_the_first_times_attempts_then_succeeds():
    config = {"times": 2, "message": "not yet"}

    for attempt in (1, 2):
        with pytest.raises(StepFailure, match="not yet"):
            handle("fail", make_ctx(config, attempt=attempt))
    assert handle("fail", make_ctx(config, attempt=3)) == {"attempt": 3}


def test_fail_without_times_always_fails():
    with pytest.raises(StepFailure):
        handle("fail", make_ctx({}, attempt=50))


def test_python_calls_the_configured_function():
    ctx = make_ctx(
        {"callable": "pipelines.demo.steps.count_words"}, inputs={"text": "to be or not"}
    )

    assert handle("python", ctx) == {"words": 4, "chars": 12}


def test_python_refuses_a_callable_outside_the_allowed_modules():
    with pytest.raises(ValueError, match="outside the allowed modules"):
        handle("python", make_ctx({"callable": "os.getcwd"}))


def test_python_refuses_a_result_that_is_not_a_dict(allow_this_module):
    ctx = make_ctx({"callable": f"{__name__}.returns_a_list"})

    with pytest.raises(TypeError, match="returned list"):
        handle("python", ctx)


def test_python_passes_a_pause_through(allow_this_module):
    ctx = make_ctx({"callable": f"{__name__}.returns_a_pause"})

    assert handle("python", ctx) == Pause(reason="look first")


# --- http against a real local server --------------------------------------------------


class Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.httpd.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(("GET", self.path, dict(self.headers)))
                if self.path == "/json":
                    body = json.dumps({"ok": True, "key": self.headers["Idempotency-Key"]})
                    self._send(200, body.encode(), {"Content-Type": "application/json"})
                elif self.path == "/to-same-host":
                    self._send(302, b"", {"Location": "/json"})
                elif self.path == "/to-other-host":
                    self._send(302, b"", {"Location": server.url("/json", host="localhost")})
                else:
                    self._send(500, b"boom", {})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def server(settings) -> Iterator[Server]:
    srv = Server()
    # `localhost` is listed too, so that only the same-host rule refuses a redirect there.
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = [f"127.0.0.1:{srv.port}", f"localhost:{srv.port}"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.1", "::1"]
    thread = threading.Thread(
        target=srv.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join(timeout=5)


def http(url: str) -> Any:
    return handle("http", make_ctx({"url": url, "timeout_s": 5}))


def test_http_get_returns_status_and_json_body(server):
    result = http(server.url("/json"))

    assert result == {"status_code": 200, "body": {"ok": True, "key": "run-7-step-1"}}


def test_http_refuses_a_host_off_the_allow_list(server):
    with pytest.raises(ValueError, match="not in FIREFLY_HTTP_ALLOWED_HOSTS"):
        http(server.url("/json", host="example.com"))

    assert server.requests == []


def test_http_follows_a_redirect_on_the_same_host(server):
    result = http(server.url("/to-same-host"))

    assert result["status_code"] == 200
    assert [path for _, path, _ in server.requests] == ["/to-same-host", "/json"]


def test_http_refuses_a_redirect_to_another_host(server):
    with pytest.raises(ValueError, match="another host"):
        http(server.url("/to-other-host"))

    assert [path for _, path, _ in server.requests] == ["/to-other-host"]


def test_http_server_error_fails_the_step(server):
    with pytest.raises(requests.HTTPError, match="500"):
        http(server.url("/broken"))
