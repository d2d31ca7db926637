"""Hide the passwords in a connection URL before showing it (`python -m firefly_site.redact`)."""

from __future__ import annotations

import re
import sys
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Query parameters that carry a secret (libpq's ?password=, sslpassword, a broker's ?secret=).
_SECRET_PARAM = re.compile(r"((?:^|&)[^=&]*(?:password|secret|token)[^=&]*=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """postgres://app:secret@db/firefly -> postgres://app:***@db/firefly."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:{MASK}@{host}")
    return urlunsplit(parts._replace(query=_SECRET_PARAM.sub(rf"\g<1>{MASK}", parts.query)))


if __name__ == "__main__":
    print(" ".join(mask_url(url) for url in sys.argv[1:]))
