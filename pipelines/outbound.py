"""The one guard every outbound HTTP call goes through (no request forgery to internal hosts)."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

# The allow-list each kind of call is checked against (the setting's name).
HTTP_STEPS = "FIREFLY_HTTP_ALLOWED_HOSTS"
WEBHOOKS = "FIREFLY_WEBHOOK_ALLOWED_HOSTS"
ADDRESSES = "FIREFLY_OUTBOUND_ALLOWED_ADDRESSES"

DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Named apart from the ranges below so that a refusal says what the address is. Each is
# also link-local, shared or private; the list makes sure, whatever Python calls them.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
SHARED = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A top-level label starts with a letter: that keeps the resolver's numeric forms
# (`127.1`, `0x7f.1`, `2130706433`) out, whatever the C library makes of them.
_TOP_LABEL = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")


class Refused(ValueError):
    """An outbound URL the guard will not send to; `part` names what is wrong with it."""

    def __init__(self, url: str, part: str, reason: str) -> None:
        self.url = url
        self.part = part
        self.reason = reason
        super().__init__(f"{part} {reason}")


class Unresolved(requests.ConnectionError):
    """The host has no address now (the resolver failed): a network error, tried again later."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the address it will be sent to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def host_header(self) -> str:
        return self.host if self.port == DEFAULT_PORTS[self.scheme] else f"{self.host}:{self.port}"


def check(url: str, *, allowed: str) -> Target:
    """Parse `url` as requests will send it, and refuse it unless every rule holds.

    `allowed` names the host allow-list setting (HTTP_STEPS or WEBHOOKS). Raises Refused,
    or Unresolved when the resolver fails.
    """
    scheme, host, port, normalized = _parse(url)
    _check_host_syntax(url, host)
    _check_listed(url, scheme, host, port, allowed)
    return Target(normalized, scheme, host, port, _resolve(url, host, port))


def _parse(url: str) -> tuple[str, str, int, str]:
    if "\\" in url:
        raise Refused(url, "URL", "contains a backslash, which parsers read differently.")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise Refused(url, "URL", "contains whitespace or control characters.")
    try:
        parts = parse_url(url)
    except LocationParseError as exc:
        raise Refused(url, "URL", f"cannot be parsed: {exc}") from exc
    scheme = (parts.scheme or "").lower()
    if scheme not in DEFAULT_PORTS:
        raise Refused(url, "scheme", f"{parts.scheme or ''!r} is not http or https.")
    # The raw authority too: parse_url's reading is what requests sends, but a URL with
    # user-info is refused whichever way a parser reads it.
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    if parts.auth is not None or "@" in authority:
        raise Refused(url, "user-info", "(user@host) is not allowed in an outbound URL.")
    if not parts.host:
        raise Refused(url, "host", "is missing.")
    port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise Refused(url, "port", f"{port} is out of range.")
    return scheme, parts.host.lower(), port, parts.url


def _check_host_syntax(url: str, host: str) -> None:
    if "%" in host:
        raise Refused(url, "host", f"{host!r} has a zone or an escape; neither is allowed.")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise Refused(url, "host", f"{host!r} is not a valid IPv6 address.") from exc
        return
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return
    labels = host.split(".")
    if (
        len(host) > 253
        or not all(_LABEL.fullmatch(label) for label in labels)
        or not _TOP_LABEL.fullmatch(labels[-1])
    ):
        raise Refused(url, "host", f"{host!r} is neither a DNS name nor a plain IP address.")


def _allow_list(allowed: str) -> set[tuple[str, int | None]]:
    """Entries are `host` (the scheme's default port only) or `host:port`, exact names."""
    entries = set()
    for entry in getattr(settings, allowed):
        parts = parse_url(f"//{entry.strip()}")
        if parts.host:
            entries.add((parts.host.lower(), parts.port))
    return entries


def _check_listed(url: str, scheme: str, host: str, port: int, allowed: str) -> None:
    entries = _allow_list(allowed)
    listed = ", ".join(getattr(settings, allowed)) or "empty"
    if not any(h == host for h, _ in entries):
        raise Refused(url, "host", f"{host!r} is not in {allowed} ({listed}).")
    default = port == DEFAULT_PORTS[scheme]
    if (host, port) not in entries and not (default and (host, None) in entries):
        raise Refused(url, "port", f"{port} of {host!r} is not in {allowed} ({listed}).")


def _resolve(url: str, host: str, port: int) -> str:
    """Every address the name has must be allowed; the first is the one connected to."""
    name = host[1:-1] if host.startswith("[") else host
    try:
        found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolved(f"host {host!r} does not resolve: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    if not addresses:
        raise Unresolved(f"host {host!r} has no address")
    exceptions = {ipaddress.ip_address(a) for a in getattr(settings, ADDRESSES)}
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        why = None if address in exceptions else forbidden(address)
        if why:
            raise Refused(
                url,
                "address",
                f"{address} (of host {host!r}) is {why}; list it in {ADDRESSES} to allow it.",
            )
    return addresses[0].split("%")[0]


def forbidden(address: IPAddress) -> str | None:
    """Why an address may not be reached (None when it is a public unicast address)."""
    if address in METADATA:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo:
            embedded = address.teredo[1]
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            why = forbidden(embedded)
            if why:
                return f"an IPv6 form of {embedded}, which is {why}"
    for test, why in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_unspecified, "unspecified"),
        (address.is_reserved, "reserved"),
        (isinstance(address, ipaddress.IPv4Address) and address in SHARED, "shared (100.64/10)"),
        (address.is_private, "private"),
        (not address.is_global, "not a public address"),
    ):
        if test:
            return why
    return None


class _PinnedAdapter(HTTPAdapter):
    """Connects to the checked address, whatever name the request carries.

    The name stays in the Host header and, for https, in the TLS server name and the
    certificate check: the server sees the request it was meant to get, and nothing
    looks the name up a second time (a second answer could point somewhere else).
    """

    def __init__(self, target: Target) -> None:
        super().__init__(max_retries=0)
        self.target = target
        self.pools: list[HTTPConnectionPool] = []

    def close(self) -> None:
        super().close()
        for pool in self.pools:
            pool.close()

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        sent = parse_url(request.url)
        target = self.target
        port = sent.port or DEFAULT_PORTS.get(sent.scheme or "", 0)
        if (sent.scheme, (sent.host or "").lower(), port) != (
            target.scheme,
            target.host,
            target.port,
        ):
            raise Refused(request.url, "URL", "differs from the one that was checked.")
        pool: HTTPConnectionPool
        if target.scheme == "https":
            name = target.host.strip("[]")
            pool = HTTPSConnectionPool(
                target.address, target.port, server_hostname=name, assert_hostname=name
            )
        else:
            pool = HTTPConnectionPool(target.address, target.port)
        self.pools.append(pool)
        return pool


def pinned_session(target: Target) -> requests.Session:
    """A session whose every connection goes to `target.address` (for target.url only)."""
    session = requests.Session()
    # No proxies or .netrc from the environment: the request goes to the checked address,
    # with no credentials it was not given.
    session.trust_env = False
    adapter = _PinnedAdapter(target)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def send(
    method: str,
    url: str,
    *,
    allowed: str,
    max_redirects: int,
    timeout: float,
    headers: dict[str, str] | None = None,
    verify: bool | str = True,
    **body: Any,
) -> requests.Response:
    """Send one request through the guard, following up to `max_redirects` redirects.

    Each hop is checked again (and must stay on the first host). The Location of a
    redirect that is not followed is checked too, so a redirect toward a forbidden
    place is refused even when `max_redirects` is 0; an allowed one is returned as is.
    `body` is `json=` or `data=`, sent again on each hop.
    """
    # The Host header is the checked name's, never one the caller passed.
    own_headers = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
    target = check(url, allowed=allowed)
    first_host = target.host
    for hop in range(max_redirects + 1):
        with pinned_session(target) as session:
            response = session.request(
                method,
                target.url,
                headers={**own_headers, "Host": target.host_header},
                timeout=timeout,
                allow_redirects=False,
                verify=verify,
                **body,
            )
        if not response.is_redirect:
            return response
        location = urljoin(target.url, response.headers["Location"])
        try:
            target = check(location, allowed=allowed)
        except Refused as exc:
            raise Refused(location, f"redirect {exc.part}", exc.reason) from exc
        if target.host != first_host:
            raise Refused(
                location, "redirect host", f"{target.host!r} is another host than {first_host!r}."
            )
        if hop == max_redirects:
            break
    if max_redirects:
        raise Refused(url, "redirect", f"chain is longer than {max_redirects} hops.")
    return response
