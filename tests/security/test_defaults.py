"""Secure by default: settings outside debug, error pages, CSP, demo data, masked URLs."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from firefly_site.redact import mask_url
from pipelines.management.commands.load_demo import DEMO_USERS

ROOT = Path(__file__).resolve().parents[2]
DEV_SECRET = "firefly-insecure-development-key-do-not-use-in-production"
DEV_AUDIT_KEY = "firefly-development-audit-key"
DEV_SECRETS_KEY = "firefly-development-secrets-key"
# A production process starts with none of what the suite sets for itself (its keys,
# DJANGO_ALLOW_ASYNC_UNSAFE for the browser tests): only these are passed on.
PASSED_ON = ("PATH", "HOME", "LANG", "TMPDIR", "DATABASE_URL", "CELERY_BROKER_URL")


@pytest.fixture
def production_env(tmp_path: Path) -> dict[str, str]:
    """The production environment README documents: DEBUG unset, keys of its own."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ON}
    env.update(
        DJANGO_SETTINGS_MODULE="firefly_site.settings",
        SECRET_KEY=secrets.token_urlsafe(50),
        FIREFLY_AUDIT_KEY=secrets.token_urlsafe(50),
        FIREFLY_SECRETS_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="firefly.example.com",
        FIREFLY_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(ROOT),
    )
    return env


def python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SHOW_SETTINGS = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
    "s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_PROXY_SSL_HEADER)"
)


# --- settings -------------------------------------------------------------------------


def test_production_is_the_default_debug_off_and_https_only(production_env):
    shown = python(production_env, "-c", SHOW_SETTINGS)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["False", "True", "True", "True", "31536000", "True", "None"]


def test_debug_is_on_only_when_the_environment_says_so(production_env):
    shown = python({**production_env, "DEBUG": "true"}, "-c", SHOW_SETTINGS)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split()[0] == "True"


def test_plain_http_turns_the_https_settings_off(production_env):
    shown = python({**production_env, "FIREFLY_PLAIN_HTTP": "true"}, "-c", SHOW_SETTINGS)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["False", "False", "False", "False", "0", "False", "None"]


def test_the_forwarded_proto_header_is_trusted_only_when_a_proxy_sets_it(production_env):
    shown = python({**production_env, "FIREFLY_TLS_PROXY": "true"}, "-c", SHOW_SETTINGS)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.rstrip().endswith("('HTTP_X_FORWARDED_PROTO', 'https')")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", DEV_SECRET),
        ("SECRET_KEY", ""),
        ("SECRET_KEY", "x" * 31),
        ("FIREFLY_AUDIT_KEY", DEV_AUDIT_KEY),
        ("FIREFLY_AUDIT_KEY", ""),
        ("FIREFLY_AUDIT_KEY", "y" * 31),
        ("FIREFLY_SECRETS_KEY", DEV_SECRETS_KEY),
        ("FIREFLY_SECRETS_KEY", ""),
        ("FIREFLY_SECRETS_KEY", "z" * 31),
    ],
)
def test_outside_debug_a_public_missing_or_short_key_is_refused(production_env, name, value):
    started = python({**production_env, name: value}, "manage.py", "check")
    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr
    assert f"Set {name}" in started.stderr


def test_check_deploy_passes_with_the_production_environment(production_env):
    checked = python(production_env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no issues" in checked.stdout


def test_check_deploy_refuses_the_development_key(production_env):
    checked = python(
        {**production_env, "SECRET_KEY": DEV_SECRET},
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert checked.returncode != 0
    assert "SECRET_KEY" in checked.stderr
    assert "development key is public" in checked.stderr


def test_the_password_validators_are_on():
    names = {v["NAME"].rsplit(".", 1)[1] for v in settings.AUTH_PASSWORD_VALIDATORS}
    assert names == {
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    }


# --- error pages ----------------------------------------------------------------------


def secrets_of_the_server() -> list[str]:
    database = settings.DATABASES["default"]
    return [
        "Traceback",
        "RuntimeError",
        settings.SECRET_KEY,
        settings.FIREFLY_AUDIT_KEY,
        settings.FIREFLY_SECRETS_KEY,
        settings.CELERY_BROKER_URL,
        os.environ["DATABASE_URL"],
        str(database["NAME"]),
        "boom",
    ]


@pytest.mark.urls("tests.security.urls")
@pytest.mark.django_db
def test_a_page_that_fails_shows_nothing_of_the_server(admin_user):
    assert settings.DEBUG is False
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    response = client.get("/boom/")
    assert response.status_code == 500
    page = response.content.decode()
    assert "Server error" in page
    for secret in secrets_of_the_server():
        assert secret not in page, secret


@pytest.mark.urls("tests.security.urls")
@pytest.mark.django_db
def test_an_api_call_that_fails_is_a_json_500_without_details(admin_user):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    response = client.get("/api/v1/boom/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": "server_error",
            "message": "Internal server error; it has been logged.",
            "details": None,
        }
    }
    for secret in secrets_of_the_server():
        assert secret not in response.content.decode(), secret


@pytest.mark.django_db
def test_a_missing_page_is_our_plain_404(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "Not found" in response.content.decode()
    assert "/no/such/page/" not in response.content.decode()


# --- Content-Security-Policy ----------------------------------------------------------


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


@pytest.mark.django_db
def test_pages_run_only_our_own_scripts_and_styles(client):
    policy = directives(client.get("/login/"))
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


@pytest.mark.django_db
def test_the_api_docs_run_no_inline_script(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    policy = directives(response)
    assert policy["script-src"] == ["'self'"]
    html = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()


INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|\shx-on|\bjs:|javascript:",
    re.IGNORECASE,
)


def test_no_template_holds_inline_script_style_or_handler():
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for path in sorted((ROOT / "templates").rglob("*.html"))
        for match in INLINE.finditer(path.read_text())
    ]
    assert found == []


def test_htmx_may_not_eval_or_inject_styles():
    base = (ROOT / "templates" / "base.html").read_text()
    assert '"allowEval": false' in base
    assert '"includeIndicatorStyles": false' in base


# --- demo data ------------------------------------------------------------------------


@pytest.mark.django_db
def test_demo_passwords_are_printed_only_when_the_users_are_created(settings, client):
    settings.FIREFLY_DEMO = True
    first, second = StringIO(), StringIO()
    call_command("load_demo", stdout=first)
    call_command("load_demo", stdout=second)
    for username, password, _groups, _roles in DEMO_USERS:
        assert f"demo user {username} / {password}" in first.getvalue()
        assert password not in second.getvalue()
    assert "passwords not shown again" in second.getvalue()
    # The published passwords were set past the validators, and they work.
    response = client.post("/login/", {"username": "admin", "password": "firefly-admin"})
    assert response.status_code == 302
    assert response["Location"] == "/"


@pytest.mark.django_db
def test_a_changed_demo_password_is_never_printed(settings):
    settings.FIREFLY_DEMO = True
    call_command("load_demo", stdout=StringIO())
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("a-new-password-of-its-own")
    admin.save()
    again = StringIO()
    call_command("load_demo", stdout=again)
    assert "a-new-password-of-its-own" not in again.getvalue()
    assert "firefly-admin" not in again.getvalue()


@pytest.mark.django_db
def test_no_demo_users_on_postgresql_unless_asked_for(settings):
    settings.FIREFLY_DEMO = False
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    out = StringIO()
    call_command("load_demo", stdout=out)
    assert "Demo data not loaded" in out.getvalue()
    names = [username for username, *_ in DEMO_USERS]
    assert not get_user_model().objects.filter(username__in=names).exists()


def test_no_demo_users_on_sqlite_with_debug_off(production_env):
    env = {k: v for k, v in production_env.items() if k != "DATABASE_URL"}
    loaded = python(env, "manage.py", "load_demo")
    assert loaded.returncode != 0
    assert "Refusing to create demo users" in loaded.stderr
    assert "firefly-admin" not in loaded.stdout + loaded.stderr


# --- masked URLs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://app:s3cret@db/firefly", "postgres://app:***@db/firefly"),
        ("postgres://app:p@ss:w@rd@db:5432/firefly", "postgres://app:***@db:5432/firefly"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("amqp://guest:s3cret@mq//", "amqp://guest:***@mq//"),
        (
            "postgres://db/firefly?user=app&password=s3cret",
            "postgres://db/firefly?user=app&password=***",
        ),
        (
            "postgres://postgres@127.0.0.1:5432/firefly",
            "postgres://postgres@127.0.0.1:5432/firefly",
        ),
        ("filesystem://localhost/", "filesystem://localhost/"),
        ("", ""),
    ],
)
def test_the_banner_masks_passwords_in_urls(url, shown):
    assert mask_url(url) == shown


def test_run_sh_shows_the_urls_through_the_mask(production_env):
    masked = python(
        production_env,
        "-m",
        "firefly_site.redact",
        "postgres://app:s3cret@db/firefly",
    )
    assert masked.stdout.strip() == "postgres://app:***@db/firefly"
    script = (ROOT / "scripts" / "run.sh").read_text()
    assert 'python" -m firefly_site.redact "${DATABASE_URL:-}"' in script
    assert 'python" -m firefly_site.redact "${CELERY_BROKER_URL:-}"' in script
    banner = script[script.index("cat <<MSG") :]
    assert "DATABASE_URL" not in banner
    assert "CELERY_BROKER_URL" not in banner
