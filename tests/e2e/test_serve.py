"""`make serve`'s web process in Chromium: gunicorn, DEBUG off, static files by WhiteNoise."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import Browser, expect

from tests.production import ROOT, free_port, gunicorn, process, production_env, wait_http
from tests.web.conftest import waiting_run

TEN_YEARS_S = 10 * 365 * 24 * 3600


def test_pages_have_their_styles_and_htmx_under_gunicorn_with_debug_off(
    transactional_db: Any, users: dict[str, Any], browser: Browser, tmp_path: Any
) -> None:
    env = production_env(tmp_path / "var")
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert collected.returncode == 0, collected.stderr
    # The production settings hash passwords with PBKDF2 (the suite's MD5 is not among them).
    reviewer = users["r1"]
    hasher = PBKDF2PasswordHasher()
    reviewer.password = hasher.encode("a-reviewer-password", hasher.salt(), iterations=1000)
    reviewer.save(update_fields=["password"])

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    with process(gunicorn(port), env, log) as web:
        wait_http(f"{base}/healthz", web, log)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            page.set_default_timeout(15_000)
            # DEBUG is off: an unknown page is the plain 404, not Django's URL list.
            missing = page.goto(f"{base}/no-such-page/")
            assert missing is not None
            assert missing.status == 404
            assert "URLconf" not in page.content()

            page.goto(f"{base}/login/")
            page.fill("input[name=username]", "r1")
            page.fill("input[name=password]", "a-reviewer-password")
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_url(f"{base}/")

            # The stylesheet and scripts go by hashed names, cached for ten years.
            href = page.locator("link[rel=stylesheet]").first.get_attribute("href") or ""
            assert re.fullmatch(r"/static/firefly\.[0-9a-f]{12}\.css", href), href
            script = page.locator("script[src*=htmx]").get_attribute("src") or ""
            assert re.fullmatch(r"/static/vendor/htmx\.min\.[0-9a-f]{12}\.js", script), script
            css = page.request.get(f"{base}{href}", headers={"Accept-Encoding": "gzip"})
            assert css.ok
            cache = css.headers["cache-control"]
            assert "immutable" in cache, cache
            max_age = re.search(r"max-age=(\d+)", cache)
            assert max_age, cache
            assert int(max_age.group(1)) >= TEN_YEARS_S, cache
            # ... and applied: the page's background is the stylesheet's --bg, not the
            # browser's transparent default.
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(246, 247, 249)", background

            # htmx runs: the inbox polls, and a task opened now shows up in the same page.
            page.evaluate("window.fireflyNotReloaded = true")
            expect(page.locator("#inbox")).to_contain_text("Nothing to review")
            waiting_run(users["starter"], name="served-gate")
            expect(page.locator("#inbox")).to_contain_text("served-gate", timeout=20_000)
            assert page.evaluate("window.fireflyNotReloaded") is True
        finally:
            context.close()
    assert web.returncode is not None
