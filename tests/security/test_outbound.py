"""Outbound calls never reach internal addresses: each attack aimed at a real listener."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.exceptions import ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from orgs.models import Organization
from pipelines import outbound, services
from pipelines.models import AuditEntry, Run, SecurityEvent, StepRun
from tests.approvals.conftest import drive
from webhooks import services as webhooks
from webhooks.models import Webhook, WebhookDelivery
from webhooks.tasks import deliver_webhook

pytestmark = pytest.mark.django_db

HOSTS = Path("/etc/hosts")


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Listener:
    """An HTTP server that records every request; it answers 200, or redirects."""

    def __init__(self, address: str, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str, str]] = []  # method, path, Host header
        self.server_names: list[str | None] = []  # TLS SNI of each handshake
        self.redirect_to = ""
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                listener.requests.append((self.command, self.path, self.headers["Host"]))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b"" if listener.redirect_to else b'{"ok": true}'
                self.send_response(302 if listener.redirect_to else 200)
                if listener.redirect_to:
                    self.send_header("Location", listener.redirect_to)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server_class = _Server6 if ":" in address else ThreadingHTTPServer
        self.server = server_class((address, port), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda sock, name, context: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(address: str, port: int = 0, tls: ssl.SSLContext | None = None) -> Listener:
        made.append(Listener(address, port, tls))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


@pytest.fixture
def hosts() -> Iterator[Callable[..., str]]:
    """Points a fresh name at an address in /etc/hosts (the resolver reads it each time).

    Every line it writes carries this test's marker and is removed afterwards; lines
    other tests or people wrote in the meantime are left alone.
    """
    marker = f"# firefly-outbound-test-{secrets.token_hex(4)}"

    def lines_without(name: str | None) -> list[str]:
        return [
            line
            for line in HOSTS.read_text().splitlines()
            if not (line.endswith(marker) and (name is None or line.split()[1] == name))
        ]

    def point(name: str, *addresses: str) -> str:
        lines = lines_without(name) + [f"{a} {name} {marker}" for a in addresses]
        HOSTS.write_text("\n".join(lines) + "\n")
        return name

    yield point
    HOSTS.write_text("\n".join(lines_without(None)) + "\n")


def fresh_name() -> str:
    return f"outbound-{secrets.token_hex(4)}.test"


@dataclass
class Attack:
    url: str
    refusal: str  # what the error says (and so which rule refused it)


@dataclass
class Targets:
    victim: Listener
    victim6: Listener
    attacks: dict[str, Attack]


@pytest.fixture
def targets(settings: Any, listen: Any, hosts: Any) -> Targets:
    """A listener on 127.0.0.1 and one on ::1, and the URLs that try to reach them.

    Every attack's host and port is on both allow-lists, so that the rule each attack
    is about is the one that has to refuse it; no address is allowed.
    """
    victim, victim6 = listen("127.0.0.1"), listen("::1")
    port, port6 = victim.port, victim6.port
    name = hosts(fresh_name(), "127.0.0.1")
    attacks = {
        "backslash": Attack(
            f"http://127.0.0.1:{port}\\@allowed.example/", "URL contains a backslash"
        ),
        "user-info": Attack(f"http://allowed.example@127.0.0.1:{port}/", "user-info"),
        "name-to-loopback": Attack(f"http://{name}:{port}/", "address 127.0.0.1"),
        "hex": Attack(f"http://0x7f.1:{port}/", "host '0x7f.1' is neither"),
        "integer": Attack(f"http://2130706433:{port}/", "host '2130706433' is neither"),
        "short": Attack(f"http://127.1:{port}/", "host '127.1' is neither"),
        "ipv6-loopback": Attack(f"http://[::1]:{port6}/", "address ::1"),
        "ipv4-mapped": Attack(
            f"http://[::ffff:127.0.0.1]:{port}/", "an IPv6 form of 127.0.0.1, which is loopback"
        ),
        "unlisted-port": Attack(f"http://allowed.example:{port}/", f"port {port}"),
    }
    listed = [
        "allowed.example",
        f"127.0.0.1:{port}",
        f"{name}:{port}",
        f"0x7f.1:{port}",
        f"2130706433:{port}",
        f"127.1:{port}",
        f"[::1]:{port6}",
        f"[::ffff:127.0.0.1]:{port}",
    ]
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = listed
    settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS = listed
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = []
    return Targets(victim, victim6, attacks)


ATTACKS = [
    "backslash",
    "user-info",
    "name-to-loopback",
    "hex",
    "integer",
    "short",
    "ipv6-loopback",
    "ipv4-mapped",
    "unlisted-port",
]


def nothing_reached(targets: Targets) -> bool:
    return targets.victim.requests == [] and targets.victim6.requests == []


@pytest.fixture
def redirector(settings: Any, listen: Any, targets: Targets) -> Listener:
    """An allowed listener on 127.0.0.2: its exact address and port are listed."""
    listener = listen("127.0.0.2")
    for setting in ("FIREFLY_HTTP_ALLOWED_HOSTS", "FIREFLY_WEBHOOK_ALLOWED_HOSTS"):
        setattr(settings, setting, [*getattr(settings, setting), f"127.0.0.2:{listener.port}"])
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.2"]
    return listener


def http_step_run(url: str) -> Run:
    """A real pipeline with one `http` step, run through the services in this process."""
    name = f"call-{secrets.token_hex(3)}"
    services.pipeline_create(
        member_role="starter",
        spec={"name": name, "steps": [{"name": "call", "type": "http", "config": {"url": url}}]},
    )
    run = services.run_start(pipeline=name, inputs={})
    return drive(run)


def failed_step(run: Run) -> tuple[str, str]:
    """The http step's error, and the error its `step.failed` audit entry holds."""
    step = StepRun.objects.get(run=run, step_name="call")
    assert step.status == StepRun.Status.FAILED
    entry = AuditEntry.objects.get(run=run, event="step.failed")
    return step.error, entry.error_message


# --- the http step --------------------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_http_step_never_reaches_an_internal_address(targets, attack):
    aimed = targets.attacks[attack]

    run = http_step_run(aimed.url)

    assert run.status == Run.Status.FAILED
    error, audited = failed_step(run)
    assert aimed.refusal in error
    assert audited == error
    assert nothing_reached(targets)


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_http_step_is_never_redirected_to_an_internal_address(targets, redirector, attack):
    redirector.redirect_to = targets.attacks[attack].url

    run = http_step_run(f"http://127.0.0.2:{redirector.port}/start")

    error, _ = failed_step(run)
    assert "Refused: redirect " in error
    assert targets.attacks[attack].refusal in error
    assert [path for _, path, _ in redirector.requests] == ["/start"]
    assert nothing_reached(targets)


def test_an_http_step_reaches_an_address_that_is_listed(settings, listen, hosts):
    listener = listen("127.0.0.1")
    name = hosts(fresh_name(), "127.0.0.1")
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = [f"{name}:{listener.port}"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.1"]

    run = http_step_run(f"http://{name}:{listener.port}/ping")

    assert run.status == Run.Status.SUCCEEDED
    # Sent to the checked address, with the name the URL gave in the Host header.
    assert listener.requests == [("GET", "/ping", f"{name}:{listener.port}")]


def test_an_allowed_address_does_not_open_its_unlisted_ports(settings, listen, hosts):
    listener = listen("127.0.0.1")
    name = hosts(fresh_name(), "127.0.0.1")
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = [name]  # ports 80 and 443 only
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.1"]

    error, _ = failed_step(http_step_run(f"http://{name}:{listener.port}/"))

    assert f"port {listener.port} of {name!r} is not in FIREFLY_HTTP_ALLOWED_HOSTS" in error
    assert listener.requests == []


# --- webhooks -------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_webhook_aimed_at_an_internal_address_is_a_400_and_recorded(targets, users, attack):
    aimed = targets.attacks[attack]
    client = APIClient()
    client.force_authenticate(users["boss"])

    response = client.post(
        "/api/v1/webhooks/", {"url": aimed.url, "events": ["run.finished"]}, format="json"
    )

    assert response.status_code == 400
    [message] = response.json()["error"]["details"]["url"]
    assert aimed.refusal in message
    event = SecurityEvent.objects.get()
    assert (event.event, event.actor, event.address) == (
        "outbound.refused",
        users["boss"],
        "127.0.0.1",
    )
    assert event.reason == message
    assert event.data == {"url": aimed.url, "purpose": "webhook"}
    assert not Webhook.objects.exists()
    assert nothing_reached(targets)


def pending_delivery(url: str) -> WebhookDelivery:
    # Saved as it was before the rules were tightened (or before its name moved):
    # creation would refuse it now, and delivery has to refuse it on its own.
    org = Organization.objects.default()
    hook = Webhook.objects.create(organization=org, url=url, events=["run.finished"])
    return WebhookDelivery.objects.create(
        organization=org, webhook=hook, event="run.finished", payload={}
    )


def assert_refused_for_good(delivery: WebhookDelivery, refusal: str) -> None:
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED  # final: not tried again
    assert delivery.attempts == 1
    assert delivery.last_error.startswith("refused: ")
    assert refusal in delivery.last_error
    event = SecurityEvent.objects.get()
    assert event.event == "outbound.refused"
    assert event.data["delivery"] == delivery.pk
    assert refusal in event.reason


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_webhook_delivery_never_reaches_an_internal_address(targets, attack):
    delivery = pending_delivery(targets.attacks[attack].url)

    deliver_webhook.apply(args=(delivery.pk,))

    assert_refused_for_good(delivery, targets.attacks[attack].refusal)
    assert nothing_reached(targets)


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_webhook_receiver_cannot_redirect_a_delivery_inward(targets, redirector, attack):
    redirector.redirect_to = targets.attacks[attack].url
    delivery = pending_delivery(f"http://127.0.0.2:{redirector.port}/hook")

    deliver_webhook.apply(args=(delivery.pk,))

    assert_refused_for_good(delivery, targets.attacks[attack].refusal)
    assert [method for method, _, _ in redirector.requests] == ["POST"]
    assert nothing_reached(targets)


def test_a_webhook_whose_name_moved_inward_is_refused_at_delivery(settings, listen, hosts):
    outside = listen("127.0.0.2")
    inside = listen("127.0.0.1", port=outside.port)
    name = hosts(fresh_name(), "127.0.0.2")
    settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS = [f"{name}:{outside.port}"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.2"]
    hook = webhooks.webhook_create(
        url=f"http://{name}:{outside.port}/hook", events=["run.finished"]
    )
    delivery = WebhookDelivery.objects.create(
        organization_id=hook.organization_id, webhook=hook, event="run.finished", payload={}
    )
    hosts(name, "127.0.0.1")  # the name's owner points it at the loopback address

    deliver_webhook.apply(args=(delivery.pk,))

    assert_refused_for_good(delivery, "address 127.0.0.1")
    assert outside.requests == []
    assert inside.requests == []


def test_an_admin_cannot_move_a_webhook_inward(settings, listen, hosts, admin_client):
    outside = listen("127.0.0.2")
    inside = hosts(fresh_name(), "127.0.0.1")
    settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS = [
        f"127.0.0.2:{outside.port}",
        f"{inside}:{outside.port}",
    ]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.2"]
    url = f"http://127.0.0.2:{outside.port}/hook"
    hook = webhooks.webhook_create(url=url, events=["run.finished"])
    change = reverse("admin:webhooks_webhook_change", args=[hook.pk])
    form = {"events": ["run.finished"], "active": "on"}

    refused = admin_client.post(change, {**form, "url": f"http://{inside}:{outside.port}/"})

    assert refused.status_code == 200  # the form again, with the error
    assert "address 127.0.0.1" in refused.content.decode()
    hook.refresh_from_db()
    assert hook.url == url
    event = SecurityEvent.objects.get()
    assert (event.event, event.actor.username) == ("outbound.refused", "admin")
    assert event.data == {"url": f"http://{inside}:{outside.port}/", "purpose": "webhook"}

    moved = admin_client.post(change, {**form, "url": f"{url}/v2"})

    assert moved.status_code == 302
    hook.refresh_from_db()
    assert hook.url == f"{url}/v2"
    assert SecurityEvent.objects.count() == 1


def test_the_update_service_refuses_and_records_on_its_own(settings, listen, hosts, users):
    outside = listen("127.0.0.2")
    settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.2:{outside.port}"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.2"]
    url = f"http://127.0.0.2:{outside.port}/hook"
    hook = webhooks.webhook_create(url=url, events=["run.finished"])

    with pytest.raises(ValidationError, match="user-info"):
        webhooks.webhook_update(
            webhook_id=hook.pk,
            url=f"http://127.0.0.2:{outside.port}@127.0.0.1:{outside.port}/",
            events=["run.finished"],
            secret="",
            active=True,
            actor=users["boss"],
        )

    hook.refresh_from_db()
    assert hook.url == url
    assert SecurityEvent.objects.get().actor == users["boss"]
    assert outside.requests == []


# --- the guard itself -----------------------------------------------------------------


def test_the_request_goes_to_the_address_that_was_checked(settings, listen, hosts):
    checked = listen("127.0.0.1")
    moved = listen("127.0.0.2", port=checked.port)
    name = hosts(fresh_name(), "127.0.0.1")
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = [f"{name}:{checked.port}"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.1"]
    target = outbound.check(f"http://{name}:{checked.port}/", allowed=outbound.HTTP_STEPS)
    hosts(name, "127.0.0.2")  # the name resolves elsewhere between the check and the send

    with outbound.pinned_session(target) as session:
        answer = session.get(target.url, headers={"Host": target.host_header}, timeout=5)

    assert answer.status_code == 200
    assert [path for _, path, _ in checked.requests] == ["/"]
    assert moved.requests == []
    # The test can fail: a plain request looks the name up again and lands elsewhere.
    assert requests.get(target.url, timeout=5).status_code == 200
    assert len(moved.requests) == 1


def test_every_address_of_a_name_must_be_allowed(settings, hosts):
    name = hosts(fresh_name(), "93.184.215.14", "127.0.0.1")
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = [name]

    with pytest.raises(outbound.Refused, match=r"address 127\.0\.0\.1 "):
        outbound.check(f"http://{name}/", allowed=outbound.HTTP_STEPS)


def test_a_name_pointed_at_cloud_metadata_is_refused(settings, hosts):
    name = hosts(fresh_name(), "169.254.169.254")
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = [name]

    with pytest.raises(outbound.Refused, match="cloud metadata"):
        outbound.check(f"http://{name}/latest/meta-data/", allowed=outbound.HTTP_STEPS)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("fc00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::ffff:10.0.0.1", "IPv6 form of 10.0.0.1"),
        ("::ffff:169.254.169.254", "IPv6 form of 169.254.169.254, which is a cloud metadata"),
        ("2002:7f00:1::1", "IPv6 form of 127.0.0.1"),
        ("64:ff9b::a00:1", "IPv6 form of 10.0.0.1"),
        ("192.0.2.1", "private"),
    ],
)
def test_internal_addresses_are_forbidden(address, why):
    assert why in (outbound.forbidden(ipaddress.ip_address(address)) or "")


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700::1111"])
def test_public_addresses_are_not(address):
    assert outbound.forbidden(ipaddress.ip_address(address)) is None


# --- https ----------------------------------------------------------------------------


@pytest.fixture
def certify(tmp_path: Path) -> Callable[[str], tuple[ssl.SSLContext, str]]:
    """A throwaway CA; `certify(name)` gives a server context for `name` and the CA's file."""

    def openssl(command: str, *extra: str) -> None:
        args = ["openssl", *command.split(), *extra]
        subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)

    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    openssl(
        f"req -x509 {key} -days 1 -keyout ca.key -out ca.pem -subj",
        "/CN=Firefly test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    )

    def make(name: str) -> tuple[ssl.SSLContext, str]:
        (tmp_path / "san.ext").write_text(f"subjectAltName=DNS:{name}\n")
        openssl(f"req {key} -keyout {name}.key -out {name}.csr -subj /CN={name}")
        openssl(
            f"x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1"
            f" -out {name}.pem -extfile san.ext"
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / f"{name}.pem", tmp_path / f"{name}.key")
        return context, str(tmp_path / "ca.pem")

    return make


def test_https_goes_to_the_checked_address_with_the_name_for_tls(settings, listen, hosts, certify):
    name = hosts(fresh_name(), "127.0.0.1")
    context, ca = certify(name)  # the certificate names the host only, not 127.0.0.1
    listener = listen("127.0.0.1", tls=context)
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = [f"{name}:{listener.port}"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.1"]

    answer = outbound.send(
        "GET",
        f"https://{name}:{listener.port}/secure",
        allowed=outbound.HTTP_STEPS,
        max_redirects=0,
        timeout=5,
        verify=ca,
    )

    assert answer.json() == {"ok": True}
    assert listener.server_names == [name]
    assert listener.requests == [("GET", "/secure", f"{name}:{listener.port}")]


def test_https_refuses_a_certificate_for_another_name(settings, listen, hosts, certify):
    name = hosts(fresh_name(), "127.0.0.1")
    context, ca = certify(fresh_name())
    listener = listen("127.0.0.1", tls=context)
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = [f"{name}:{listener.port}"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.1"]

    with pytest.raises(requests.exceptions.SSLError):
        outbound.send(
            "GET",
            f"https://{name}:{listener.port}/",
            allowed=outbound.HTTP_STEPS,
            max_redirects=0,
            timeout=5,
            verify=ca,
        )

    assert listener.requests == []


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("file:///etc/passwd", "scheme 'file' is not http or https"),
        ("gopher://allowed.example/", "scheme 'gopher'"),
        ("http://[fe80::1%25lo]/", "has a zone"),
        ("http://allowed.example:0/", "port 0 is out of range"),
        ("http://allowed.example/\n", "whitespace or control"),
        ("http://allowed.example\t/", "whitespace or control"),
        ("http://a%40b@allowed.example/", "user-info"),
        ("http://allowed_example/", "neither a DNS name"),
        ("http://allowed.example./", "neither a DNS name"),
    ],
)
def test_malformed_urls_are_refused_before_any_lookup(settings, url, refusal):
    settings.FIREFLY_HTTP_ALLOWED_HOSTS = ["allowed.example", "allowed_example", "[fe80::1%lo]"]

    with pytest.raises(outbound.Refused) as refused:
        outbound.check(url, allowed=outbound.HTTP_STEPS)

    assert refusal in str(refused.value)


def test_an_allowed_address_that_is_not_an_address_is_refused_at_start():
    """A network or a name here would be an exception at the first outbound call (a 500
    for whoever saved a webhook); it is refused when the process starts instead."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings"}
    env["FIREFLY_OUTBOUND_ALLOWED_ADDRESSES"] = "127.0.0.1,10.0.0.0/8"
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=Path(__file__).resolve().parent.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "exact IP addresses, not ['10.0.0.0/8']" in done.stderr
