"""`manage.py demo_logins`, the banner line of `make run`: only in debug, only when the demo
users exist (a production banner never advertises published passwords)."""

from __future__ import annotations

import io

from django.core.management import call_command
from django.test import override_settings


def logins() -> str:
    out = io.StringIO()
    call_command("demo_logins", stdout=out)
    return out.getvalue()


def test_the_demo_logins_are_named_only_in_debug_and_only_when_they_exist(db):
    with override_settings(DEBUG=True):
        assert logins() == ""
    with override_settings(FIREFLY_DEMO=True):
        call_command("load_demo", stdout=io.StringIO())
    assert logins() == ""  # DEBUG off, as in production
    with override_settings(DEBUG=True):
        line = logins()
    assert line.startswith("Demo logins: admin, manager, reviewer1")
    assert "firefly-" not in line  # the passwords themselves are never in the banner
