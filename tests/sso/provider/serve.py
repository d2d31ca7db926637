"""Start the test provider: `python -m tests.sso.provider.serve <redirect uri>`.

Binds a free port on 127.0.0.1, prepares its database (users from control.json, one
client application), prints `READY <port>` and serves until terminated.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "firefly"
CLIENT_SECRET = "firefly-client-secret-of-the-tests"


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main(redirect_uri: str) -> None:
    server = Server(("127.0.0.1", 0), QuietHandler)
    port = server.server_address[1]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    os.environ["PROVIDER_RSA_KEY"] = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    os.environ["PROVIDER_ISSUER"] = f"http://127.0.0.1:{port}/o"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.sso.provider.settings"

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import Application

    call_command("migrate", run_syncdb=True, verbosity=0)
    directory = json.loads((Path(os.environ["PROVIDER_DIR"]) / "control.json").read_text())
    for name, entry in directory["users"].items():
        User.objects.create_user(name, email=entry["email"], password=entry["password"])
    Application.objects.create(
        name="Firefly",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect_uri,
        algorithm=Application.RS256_ALGORITHM,
    )
    server.set_app(get_wsgi_application())
    print(f"READY {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
