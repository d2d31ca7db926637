"""A small HTTP/1.1 client on asyncio streams for bench/load.py: keep-alive, cookies, timings.

Hundreds of simulated people in one process: one coroutine and one connection each, so
the client spends its time waiting on sockets rather than switching threads.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

# gunicorn closes a connection after `keepalive` (5 s) idle: reconnect before that, so a
# request is never written into a socket the server is closing.
IDLE_RECONNECT_S = 4.0
REQUEST_TIMEOUT_S = 30.0


class ConnectionFailed(Exception):
    """The request got no complete answer: refused, reset, closed early or timed out."""


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes
    ms: float

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """One person's connection to the server, with their cookies and default headers."""

    host: str
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _last_used: float = 0.0

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            # Already reset by the server: closed either way.
            with suppress(OSError):
                await writer.wait_closed()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        stale = time.monotonic() - self._last_used > IDLE_RECONNECT_S
        if self._reader is None or self._reader.at_eof() or stale:
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        assert self._writer is not None
        return self._reader, self._writer

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return await self.request("GET", path, headers)

    async def post_form(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> Response:
        head = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return await self.request("POST", path, head, urlencode(form).encode())

    async def post_json(self, path: str, data: Any) -> Response:
        head = {"Content-Type": "application/json"}
        return await self.request("POST", path, head, json.dumps(data).encode())

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        """Send one request and read its whole answer; ConnectionFailed when none came."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in {**self.headers, **(headers or {})}.items():
            lines.append(f"{name}: {value}")
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                reader, writer = await self._connection()
                writer.write(raw)
                await writer.drain()
                status, head, content = await _read_response(reader)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise ConnectionFailed(f"{method} {path}: {exc!r}") from exc
        ms = (time.perf_counter() - started) * 1000
        self._last_used = time.monotonic()
        for cookie in head.get("set-cookie", []):
            name, _, rest = cookie.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        if "close" in ",".join(head.get("connection", [])).lower():
            await self.close()
        return Response(status, head, content, ms)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, list[str]], bytes]:
    status_line = (await reader.readuntil(b"\r\n")).decode("latin-1")
    status = int(status_line.split(" ", 2)[1])
    head: dict[str, list[str]] = {}
    while True:
        line = (await reader.readuntil(b"\r\n")).decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        head.setdefault(name.strip().lower(), []).append(value.strip())
    if "chunked" in ",".join(head.get("transfer-encoding", [])).lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        return status, head, b"".join(chunks)
    if "content-length" in head:
        return status, head, await reader.readexactly(int(head["content-length"][0]))
    if status in (204, 304) or 100 <= status < 200:
        return status, head, b""
    return status, head, await reader.read()
