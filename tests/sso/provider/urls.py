"""The provider's login page, and django-oauth-toolkit's endpoints under /o/."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import jwt
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from oauth2_provider import views as oauth_views

from tests.sso.provider.claims import control


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def spoil(id_token: str, mode: str) -> str:
    """The ID token as an attacker or a broken provider would send it."""
    header_part, payload_part, signature = id_token.split(".")
    claims = jwt.decode(id_token, options={"verify_signature": False})
    if mode == "signature":
        flipped = "A" if signature[20] != "A" else "B"
        return f"{header_part}.{payload_part}.{signature[:20]}{flipped}{signature[21:]}"
    if mode == "claims":
        # The same signature over claims that promote the user.
        claims["groups"] = ["firefly:acme:admin"]
        forged = _b64(json.dumps(claims).encode())
        return f"{header_part}.{forged}.{signature}"
    now = int(time.time())
    changes: dict[str, dict[str, Any]] = {
        "expired": {"iat": now - 7200, "exp": now - 3600},
        "audience": {"aud": "another-client"},
        "issuer": {"iss": "http://127.0.0.1:1/o"},
        "nonce": {"nonce": "not-the-nonce-of-this-sign-in"},
    }
    claims.update(changes[mode])
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = os.environ["PROVIDER_RSA_KEY"]
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


class TokenView(oauth_views.TokenView):
    """django-oauth-toolkit's token endpoint, spoiling the ID token when control.json says so."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        mode = control().get("mode", "")
        if response.status_code != 200 or not mode:
            return response
        body = json.loads(response.content)
        body["id_token"] = spoil(body["id_token"], mode)
        response.content = json.dumps(body).encode()
        return response


urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("o/token/", TokenView.as_view(), name="token"),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
]
