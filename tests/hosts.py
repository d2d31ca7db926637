"""Hosts simulated on this machine: Linux network namespaces, each joined by a veth pair.

A worker "host" is a network namespace whose only way out is its veth link to this
machine. PostgreSQL and the broker stay on this machine; a relay on the link's address
(10.231.N.1) forwards to them, one per host and service, so a test can cut a host's link
(a partition: its processes keep running and reach nothing) or take one service away
from one host while the others keep it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

PREFIX = "ffh"  # namespaces and links this harness made; removed again before and after


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def remove_leftovers() -> None:
    """Namespaces a killed earlier run of the tests left behind (deleting a namespace
    deletes its end of the veth pair, and with it the pair)."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            ip("netns", "delete", name, check=False)


class Relay:
    """Forwards TCP connections from (address, port) to 127.0.0.1:target; `block()` drops
    every connection and refuses new ones until `unblock()`."""

    def __init__(self, address: str, port: int, target: int) -> None:
        self.address, self.port, self.target = address, port, target
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.unblock()

    def unblock(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.address, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def block(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            held, self._sockets = self._sockets, set()
        for sock in [listener, *held]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    close = block

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # blocked or closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class Host:
    """One namespace `ffh<index>` with the link ffh<index>h (here) to ffh<index>n (there)."""

    def __init__(self, index: int, services: dict[str, int]) -> None:
        self.index = index
        self.namespace = f"{PREFIX}{index}"
        self.here, self.there = f"{PREFIX}{index}h", f"{PREFIX}{index}n"
        self.address = f"10.231.{index}.1"  # this machine's end: the relays listen here
        self.own_address = f"10.231.{index}.2"
        self.services = services  # name -> port on 127.0.0.1, relayed on the same port
        self.relays: dict[str, Relay] = {}

    def up(self) -> None:
        ip("netns", "add", self.namespace)
        ip("link", "add", self.here, "type", "veth", "peer", "name", self.there)
        ip("link", "set", self.there, "netns", self.namespace)
        ip("addr", "add", f"{self.address}/30", "dev", self.here)
        ip("link", "set", self.here, "up")
        ip("-n", self.namespace, "addr", "add", f"{self.own_address}/30", "dev", self.there)
        ip("-n", self.namespace, "link", "set", self.there, "up")
        ip("-n", self.namespace, "link", "set", "lo", "up")
        for name, port in self.services.items():
            self.relays[name] = Relay(self.address, port, port)

    def down(self) -> None:
        for relay in self.relays.values():
            relay.close()
        ip("netns", "delete", self.namespace, check=False)

    def cut(self) -> None:
        """A partition: the link goes down; nothing here or there is told."""
        ip("link", "set", self.here, "down")

    def heal(self) -> None:
        ip("link", "set", self.here, "up")

    def url(self, url: str) -> str:
        """A service URL of this machine as this host reaches it (through its relay)."""
        parts = urlsplit(url)
        netloc = parts.netloc.replace(parts.hostname or "", self.address, 1)
        return urlunsplit(parts._replace(netloc=netloc))

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]


@contextlib.contextmanager
def hosts(count: int, services: dict[str, int]) -> Iterator[list[Host]]:
    """`count` hosts, removed again whatever happens inside."""
    if os.geteuid() != 0:
        raise RuntimeError("simulating hosts needs root (ip netns)")
    remove_leftovers()
    made = [Host(index, services) for index in range(1, count + 1)]
    try:
        for host in made:
            host.up()
        yield made
    finally:
        for host in made:
            host.down()
        remove_leftovers()
