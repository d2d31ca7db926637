"""A real OpenID Connect provider in its own process, and Firefly's settings pointed at it."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from tests.sso.provider.serve import CLIENT_ID, CLIENT_SECRET

ROOT = Path(__file__).resolve().parents[2]
CAROL_PASSWORD = "carol-provider-password"
# The provider's directory: who may sign in there, and what it says about them.
DIRECTORY: dict[str, dict[str, Any]] = {
    "carol": {
        "email": "carol@example.com",
        "password": CAROL_PASSWORD,
        "groups": ["firefly:acme:author", "firefly:no-such-org:admin", "reviewers"],
    },
}


@dataclass
class Provider:
    base: str
    control: Path

    @property
    def issuer(self) -> str:
        return f"{self.base}/o"

    def configure(self, *, mode: str = "", **users: dict[str, Any]) -> None:
        """Spoil the next ID tokens (`mode`, see provider/urls.py) or change users' claims."""
        directory = {name: {**entry, **users.get(name, {})} for name, entry in DIRECTORY.items()}
        self.control.write_text(json.dumps({"mode": mode, "users": directory}))


def _wait_ready(process: subprocess.Popen[str], log: Path, timeout: float) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line.startswith("READY "):
                return int(line.split()[1])
            if not line:
                break
    raise AssertionError(f"the test provider did not start:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def provider(live_server: Any) -> Iterator[Provider]:
    """django-oauth-toolkit with OpenID Connect on a free 127.0.0.1 port, a fresh RSA key
    and SQLite file; terminated at the end of the session whatever happened."""
    with tempfile.TemporaryDirectory(prefix="firefly-idp-") as folder:
        control = Path(folder) / "control.json"
        control.write_text(json.dumps({"mode": "", "users": DIRECTORY}))
        log = Path(folder) / "provider.log"
        env = {
            **os.environ,
            "PROVIDER_DIR": folder,
            "DJANGO_SETTINGS_MODULE": "tests.sso.provider.settings",
        }
        with log.open("w") as errors:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.sso.provider.serve",
                    f"{live_server.url}/oidc/callback/",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
            try:
                port = _wait_ready(process, log, timeout=60)
                yield Provider(base=f"http://127.0.0.1:{port}", control=control)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def sso(settings: Any, provider: Provider) -> Iterator[Provider]:
    """Firefly signing in through the provider, as the FIREFLY_OIDC_* variables would set it."""
    provider.configure()
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.FIREFLY_OIDC_ISSUER = provider.issuer
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{provider.issuer}/authorize/"
    settings.OIDC_OP_TOKEN_ENDPOINT = f"{provider.issuer}/token/"
    settings.OIDC_OP_USER_ENDPOINT = f"{provider.issuer}/userinfo/"
    settings.OIDC_OP_JWKS_ENDPOINT = f"{provider.issuer}/.well-known/jwks.json"
    settings.FIREFLY_OIDC_PROVIDER_NAME = "Example ID"
    yield provider
    provider.configure()


class FormReader(HTMLParser):
    """The first form of a page: its action and the values of its named inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if self.done:
            return
        if tag == "form" and self.action is None:
            self.action = found.get("action") or ""
        elif tag == "input" and self.action is not None and found.get("type") != "submit":
            name = found.get("name")
            if name:
                self.fields[name] = found.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.action is not None:
            self.done = True


def submit(session: requests.Session, page: requests.Response, **values: str) -> requests.Response:
    """Fill the page's form as a person would (hidden fields kept) and send it."""
    reader = FormReader()
    reader.feed(page.text)
    assert reader.action is not None, f"no form at {page.url}: {page.text[:500]}"
    return session.post(urljoin(page.url, reader.action), data={**reader.fields, **values})


def sign_in_through_provider(
    firefly: str,
    *,
    username: str = "carol",
    password: str = CAROL_PASSWORD,
    next_url: str = "",
    consent: bool = True,
) -> tuple[requests.Session, requests.Response]:
    """The browser's part of the authorization-code flow: Firefly sends it to the provider,
    it signs in there and consents, the provider sends it back to Firefly's callback."""
    browser = requests.Session()
    start = f"{firefly}/oidc/authenticate/" + (f"?next={next_url}" if next_url else "")
    login = browser.get(start, timeout=30)
    assert login.url.startswith("http://127.0.0.1:"), login.url  # at the provider
    asked = submit(browser, login, username=username, password=password)
    assert "Authorize" in asked.text, asked.text[:500]
    back = submit(browser, asked, **({"allow": "Authorize"} if consent else {}))
    return browser, back
