"""The provider's claims, read from a directory file the tests edit (control.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator


def control() -> dict[str, Any]:
    """{"mode": how to spoil the next ID token ("" for none), "users": {name: claims}}."""
    return dict(json.loads((Path(os.environ["PROVIDER_DIR"]) / "control.json").read_text()))


class DirectoryValidator(OAuth2Validator):
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "profile"}

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        entry = control()["users"][request.user.username]
        return {
            "preferred_username": entry.get("preferred_username", request.user.username),
            "email": entry["email"],
            "groups": entry["groups"],
        }
