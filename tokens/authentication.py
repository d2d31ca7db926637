"""DRF authentication by `Authorization: Token <key>`, checked against the stored hash."""

from __future__ import annotations

import hmac
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions

from tokens import services
from tokens.models import ApiToken, token_hash, token_prefix


class ApiTokenAuthentication(authentication.TokenAuthentication):
    """DRF's header format and `WWW-Authenticate: Token`, over hashed `ApiToken` rows.

    A subclass of DRF's class only for its header parsing (and drf-spectacular's scheme);
    it never touches `rest_framework.authtoken`.
    """

    keyword = "Token"

    def authenticate_credentials(self, key: str) -> tuple[Any, ApiToken]:
        token = ApiToken.objects.select_related("user").filter(prefix=token_prefix(key)).first()
        # The same message for every failure: a caller learns nothing about which prefix
        # exists. The hash comparison takes constant time.
        if token is None or not hmac.compare_digest(token.secret_hash, token_hash(key)):
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Token revoked.")
        if token.is_expired(timezone.now()):
            raise exceptions.AuthenticationFailed("Token expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        services.token_mark_used(token=token)
        return token.user, token
