"""A local fake of Slack's Web API (a real HTTP server recording every call), and signed clicks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest

from chat import signing

TOKEN = "xoxb-firefly-test"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0FIREFLY"
CHANNEL = "C0REVIEWS"
INTERACTIONS = "/chat/slack/interactions/"


@dataclass
class FakeSlack:
    """What the server was asked, and the people it knows (Slack user id -> email)."""

    port: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    people: dict[str, str] = field(default_factory=dict)
    posted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, method: str) -> list[dict[str, Any]]:
        return [c["args"] for c in self.calls if c["method"] == method]

    def answer(self, method: str, args: dict[str, Any], form: bool) -> dict[str, Any]:
        """As Slack answers: `ok`, the conversation and ts of a message, a user's profile."""
        if method == "chat.postMessage":
            with self.lock:
                self.posted += 1
                ts = f"{1764600000 + self.posted}.000{self.posted:03d}"
            channel = str(args["channel"])
            # Posting to a user id posts in the app's DM with them: Slack answers its id.
            if channel.startswith("U"):
                channel = "D" + channel[1:]
            return {"ok": True, "channel": channel, "ts": ts, "message": {"text": args["text"]}}
        if method == "chat.update":
            return {"ok": True, "channel": args["channel"], "ts": args["ts"], "text": args["text"]}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"{time.time():.6f}"}
        if method == "views.open":
            return {"ok": True, "view": {"id": "V0REJECT", **args["view"]}}
        if method == "users.info":
            # Slack reads this method's arguments from a form only.
            user = args.get("user") if form else None
            if user not in self.people:
                return {"ok": False, "error": "user_not_found"}
            profile = {"email": self.people[user], "real_name": user}
            return {"ok": True, "user": {"id": user, "team_id": TEAM, "profile": profile}}
        return {"ok": False, "error": "unknown_method"}


def _handler(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            method = self.path.removeprefix("/api/")
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            form = self.headers.get("Content-Type", "").startswith("application/x-www-form")
            if form:
                args: dict[str, Any] = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            else:
                args = json.loads(raw or b"{}")
            fake.calls.append(
                {"method": method, "args": args, "authorization": self.headers["Authorization"]}
            )
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                answer = {"ok": False, "error": "not_authed"}
            else:
                answer = fake.answer(method, args, form)
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def slack(settings: Any, fake_slack: FakeSlack, users: dict[str, Any]) -> FakeSlack:
    """Chat on, pointed at the fake; r1..r3 and the starter are known to Slack by email."""
    settings.FIREFLY_SLACK_BOT_TOKEN = TOKEN
    settings.FIREFLY_SLACK_SIGNING_SECRET = SECRET
    settings.FIREFLY_SLACK_API_URL = f"http://127.0.0.1:{fake_slack.port}/api"
    settings.FIREFLY_SLACK_API_HOSTS = [f"127.0.0.1:{fake_slack.port}"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.1"]
    settings.FIREFLY_SLACK_CHANNEL = CHANNEL
    fake_slack.people.update(
        {
            "U0R1": "r1@example.com",
            "U0R2": "R2@Example.com",
            "U0R3": "r3@example.com",
            "U0START": "starter@example.com",
            "U0STRANGER": "stranger@elsewhere.example",
        }
    )
    return fake_slack


def signed(body: str, *, secret: str = SECRET, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    return {
        "X-Slack-Signature": signing.sign(secret, stamp, body.encode()),
        "X-Slack-Request-Timestamp": str(stamp),
    }


def form(payload: dict[str, Any]) -> str:
    """As Slack sends an interaction: a form with one field, `payload`, of JSON."""
    return urlencode({"payload": json.dumps(payload)})


def send(client: Any, body: str, headers: dict[str, str]) -> Any:
    return client.post(
        INTERACTIONS, data=body, content_type="application/x-www-form-urlencoded", headers=headers
    )


def user_of(slack_user: str) -> dict[str, Any]:
    return {"id": slack_user, "username": slack_user.lower(), "team_id": TEAM}


def click(
    posted: dict[str, Any], label: str, slack_user: str, *, channel: str, ts: str
) -> dict[str, Any]:
    """The block_actions payload Slack sends when `slack_user` clicks the button labelled
    `label` in a posted message (its action id and value are the message's own)."""
    ((block_id, button),) = [
        (block["block_id"], element)
        for block in posted["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
        if element["text"]["text"] == label
    ]
    return {
        "type": "block_actions",
        "user": user_of(slack_user),
        "api_app_id": "A0FIREFLY",
        "token": "deprecated-verification-token",
        "trigger_id": "1337.4242.abcdef",
        "team": {"id": TEAM, "domain": "firefly"},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel},
        "channel": {"id": channel, "name": "reviews"},
        "message": {
            "type": "message",
            "ts": ts,
            "text": posted["text"],
            "blocks": posted["blocks"],
        },
        "response_url": "https://hooks.slack.com/actions/T0FIREFLY/1/abc",
        "actions": [
            {
                "type": "button",
                "action_id": button["action_id"],
                "block_id": block_id,
                "value": button["value"],
                "text": button["text"],
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def submission(view: dict[str, Any], slack_user: str, reason: str) -> dict[str, Any]:
    """The view_submission payload of the reject modal, with `reason` typed in."""
    return {
        "type": "view_submission",
        "user": user_of(slack_user),
        "team": {"id": TEAM, "domain": "firefly"},
        "api_app_id": "A0FIREFLY",
        "trigger_id": "1337.4243.abcdef",
        "view": {
            **view,
            "id": "V0REJECT",
            "hash": "1764600000.abcdef",
            "state": {
                "values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
            },
        },
    }
