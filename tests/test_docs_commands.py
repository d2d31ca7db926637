"""Every shell command in README.md and docs/*.md works as written.

Each fenced block in a shell's language (sh, bash, shell, console, or none) is, by its
file, its section and its first line, in exactly one of:

- RUN: run here for real, beside a fresh `make run` (the embedded SQLite database and
  broker, the demo loaded), in document order: README.md, then docs/*.md by name (so
  docs/audit.md's run 1 is the release run README starts). Each is one `bash -e -o
  pipefail` script in the checkout that must exit 0.
- SERVICES: each line a long-running process (a worker, beat): it must start and say it
  is ready, and is then stopped.
- UNITS (docs/deploy.md's systemd units, `ini`): each ExecStart started and stopped as
  SERVICES are.
- MIRRORED: a named test checks what the block does (where it needs a placeholder filled
  in, or a PostgreSQL role), and that test must exist.
- ALLOWED: not run, with the reason (production hosts, the network, benchmarks).

A new block in none of them (or a new unit, or a fence in a language that is neither a
shell's nor listed as configuration or code) fails the first test below, and so does an
entry whose block is gone: the docs cannot drift from what is tested.

What a block is given, and nothing else: the environment of a new shell (PATH, HOME,
LANG), `FIREFLY_VAR_DIR` naming the `make run`'s folder (a temporary one instead of the
checkout's `var/`), and, where the prose says the commands run in Firefly's environment
(docs/, README's workers, the units' EnvironmentFile), that of `make run`'s processes
(`DEBUG=true`). The one change to a block's text: `127.0.0.1:8000` becomes the port that
`make run` was given.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.production import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SHELL_LANGUAGES = {"sh", "bash", "shell", "console", ""}
# Blocks in these are configuration or code, not commands: not run here (the Python and
# YAML examples have tests of their own; the systemd units and nginx are a host's).
OTHER_LANGUAGES = {"python", "json", "yaml", "ini", "nginx", "toml", "html", "text", "http"}

# (file, section, the first 50 characters of its first line) -> what checks it.
Key = tuple[str, str, str]
FIRST = 50

# Run for real, in document order.
RUN: set[Key] = {
    ("README.md", "Pipelines", "export DEBUG=true   # beside `make run`, which tur"),
    ("README.md", "Production", 'export SECRET_KEY=$(python3 -c "import secrets; pr'),
    (
        "docs/audit.md",
        "What the hash covers: the values as the database gives them back",
        ".venv/bin/python manage.py verify_audit           ",
    ),
    (
        "docs/audit.md",
        "Keys and their rotation",
        ".venv/bin/python manage.py rotate_audit_key   # pr",
    ),
    ("docs/audit.md", "Redaction", ".venv/bin/python manage.py export_audit --since 20"),
    (
        "docs/audit.md",
        "Verifying against the anchors",
        ".venv/bin/python manage.py verify_audit --anchors",
    ),
    (
        "docs/audit.md",
        "Erasing a run's data",
        ".venv/bin/python manage.py redact --run 1 --reason",
    ),
}

# Each line a process that keeps running: what it prints once it is up.
SERVICES: dict[Key, dict[str, str]] = {
    (
        "README.md",
        "PostgreSQL, Redis and more workers",
        ".venv/bin/celery -A firefly_site worker --pool thr",
    ): {"worker": r"\[queues\]", "beat": r"maxinterval"},
}

# systemd units: their ExecStart started as a service, systemd's specifiers filled in
# (`%i` the instance, `%%` a percent sign) and `/srv/firefly` this checkout.
UNITS: dict[Key, str] = {
    ("docs/deploy.md", "systemd", "# /etc/systemd/system/firefly-web.service"): r"Listening at",
    ("docs/deploy.md", "systemd", "# /etc/systemd/system/firefly-worker@.service  (fi"): (
        r"\[queues\]"
    ),
    ("docs/deploy.md", "systemd", "# /etc/systemd/system/firefly-beat.service  (enabl"): (
        r"maxinterval"
    ),
}

# Checked by another test, named here ("path::function").
MIRRORED: dict[Key, str] = {
    ("README.md", "Two commands", "make run    # set up everything and start Firefly "): (
        # `make test` is this suite, and more (lint, the RabbitMQ pass): it cannot run inside it.
        "tests/test_make_run.py::test_a_normal_stop_of_make_run_is_quiet_and_leaves_nothing_running"
    ),
    (
        "README.md",
        "PostgreSQL, Redis and more workers",
        "export DATABASE_URL=postgres://postgres@127.0.0.1:",
    ): "tests/test_make_run.py::test_make_run_uses_the_database_and_broker_the_environment_names",
    ("README.md", "REST API", "export DEBUG=true   # beside `make run`, which tur"): (
        # TASK=... is the id the previous command printed.
        "tests/api/test_readme_example.py::test_the_readme_api_example_runs_as_written"
    ),
    ("docs/audit.md", "Archive segments", ".venv/bin/python manage.py verify_audit --against "): (
        # A purge's archive folder and its segments' names.
        "tests/pipelines/test_retention.py::"
        "test_purged_runs_are_archived_first_and_verify_against_their_segments"
    ),
    (
        "docs/security.md",
        "Least privilege on PostgreSQL",
        "DATABASE_URL=postgres://firefly_owner:…@db/firefly",
    ): (
        # The production roles' passwords and host; the tests apply the roles to the test
        # database and attack through them.
        "tests/security/test_least_privilege.py::"
        "test_the_app_role_cannot_change_or_remove_rows_of_the_append_only_tables"
    ),
    ("docs/api.md", "Inbound hooks", 'BODY=\'{"event": "payment.requested", "data": {"amo'): (
        # A hook's URL and secret, made by the test; it runs the block as written.
        "tests/inbound/test_docs_example.py::test_the_documented_curl_example_starts_a_run"
    ),
    ("docs/api.md", "Inbound hooks", "TS=$(date +%s)"): (
        "tests/inbound/test_docs_example.py::test_the_documented_curl_example_starts_a_run"
    ),
    ("docs/api.md", "Checking a spec", 'curl -s -H "Authorization: Token $FIREFLY_TOKEN" -'): (
        # A token and a production host; the test posts a YAML text the same way.
        "tests/api/test_catalogue.py::"
        "test_validate_answers_the_dag_of_a_good_spec_and_saves_nothing"
    ),
}

BENCHMARK = "a benchmark: minutes to hours, on databases of its own (docs/benchmarks.md)"
NPM = "an upgrade of a vendored file: downloads from the npm registry (no network here)"
ALLOWED: dict[Key, str] = {
    (
        "docs/benchmarks.md",
        "Before and after organizations (2026-12-01)",
        "# after (this checkout); the database is created, ",
    ): BENCHMARK,
    (
        "docs/benchmarks.md",
        "Row-level security on the step path",
        "FIREFLY_RLS=false .venv/bin/python bench/engine.py",
    ): BENCHMARK,
    (
        "docs/benchmarks.md",
        "Audit trail in Django admin: `.venv/bin/python bench/audit_admin.py`",
        "$ .venv/bin/python bench/audit_admin.py",
    ): BENCHMARK,
    (
        "docs/benchmarks.md",
        "Pages: `.venv/bin/python bench/pages.py`",
        "$ .venv/bin/python bench/pages.py",
    ): BENCHMARK,
    (
        "docs/benchmarks.md",
        "Retention: `.venv/bin/python bench/retention.py`",
        "$ .venv/bin/python bench/retention.py --runs 20000",
    ): BENCHMARK,
    (
        "docs/frontend.md",
        "Vendored htmx",
        "firefly=$PWD                    # run from the Fir",
    ): NPM,
    (
        "docs/frontend.md",
        "Vendored axe-core (tests only)",
        "firefly=$PWD                    # run from the Fir",
    ): NPM,
}


@dataclass(frozen=True)
class Block:
    path: str
    section: str
    language: str
    text: str
    line: int

    @property
    def key(self) -> Key:
        first = next(line for line in self.text.splitlines() if line.strip())
        return (self.path, self.section, first[:FIRST])

    def commands(self) -> str:
        """The text to run: a console transcript's `$ ` lines, anything else whole."""
        if self.language == "console":
            return "\n".join(line[2:] for line in self.text.splitlines() if line.startswith("$ "))
        return self.text


FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6} +(.+?)\s*$", re.MULTILINE)


def blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        # Headings outside the blocks (a shell comment is no heading).
        prose = FENCE.sub(lambda m: " " * len(m.group(0)), text)
        headings = [(m.start(), m.group(1)) for m in HEADING.finditer(prose)]
        for match in FENCE.finditer(text):
            section = next((h for at, h in reversed(headings) if at < match.start()), "")
            found.append(
                Block(
                    path=str(doc.relative_to(ROOT)),
                    section=section,
                    language=match.group(1).lower(),
                    text=match.group(2),
                    line=text.count("\n", 0, match.start()) + 1,
                )
            )
    return found


def shell_blocks() -> list[Block]:
    return [b for b in blocks() if b.language in SHELL_LANGUAGES]


def test_every_shell_block_is_checked_one_way():
    unknown = {f"{b.path}:{b.line} ```{b.language}" for b in blocks()} - {
        f"{b.path}:{b.line} ```{b.language}"
        for b in blocks()
        if b.language in SHELL_LANGUAGES | OTHER_LANGUAGES
    }
    assert not unknown, f"a language neither run nor listed as not a shell's: {unknown}"

    units = {b.key for b in blocks() if "ExecStart=" in b.text}
    assert units == set(UNITS), "systemd units in the docs and in UNITS differ"

    keys = [b.key for b in shell_blocks()]
    assert len(keys) == len(set(keys)), "two blocks with the same section and first line"
    tables = [set(RUN), set(SERVICES), set(MIRRORED), set(ALLOWED)]
    unchecked = [
        f"{b.path}:{b.line} {b.key}" for b in shell_blocks() if not any(b.key in t for t in tables)
    ]
    assert not unchecked, (
        "shell blocks that nothing runs or names (add each to RUN, SERVICES, MIRRORED or "
        "ALLOWED in tests/test_docs_commands.py):\n" + "\n".join(unchecked)
    )
    twice = [k for k in keys if sum(k in t for t in tables) > 1]
    assert not twice, f"blocks listed more than once: {twice}"
    gone = set().union(*tables) - set(keys)
    assert not gone, f"entries whose block is no longer in the docs: {gone}"
    assert all(reason.strip() for reason in ALLOWED.values())


def test_each_mirroring_test_exists():
    for key, node in MIRRORED.items():
        path, _, function = node.partition("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {re.escape(function)}\(", source, re.MULTILINE), (key, node)


# --- beside a fresh `make run` --------------------------------------------------------------


@dataclass(frozen=True)
class MakeRun:
    port: int
    var_dir: Path

    def env(self, block: Block) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        env["FIREFLY_VAR_DIR"] = str(self.var_dir)
        if block.path != "README.md" or block.key in SERVICES:
            # docs/ and README's workers say their commands run in Firefly's environment:
            # beside `make run`, its processes' one.
            env["DEBUG"] = "true"
        return env

    def text(self, block: Block) -> str:
        return block.commands().replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    var_dir = tmp_path_factory.mktemp("make-run") / "var"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(FIREFLY_VAR_DIR=str(var_dir), PORT=str(port), WORKERS="1")
    log = var_dir.parent / "make.log"
    with log.open("wb") as out:
        # -o: the virtualenv counts as installed (the suite runs from it).
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while "Stop with Ctrl-C." not in log.read_text():
            assert make.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield MakeRun(port=port, var_dir=var_dir)
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C
        try:
            make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()


def test_the_run_blocks_succeed_as_written_beside_a_fresh_make_run(make_run):
    runnable = [b for b in shell_blocks() if b.key in RUN]
    assert len(runnable) == len(RUN)
    before = {p.name for p in ROOT.iterdir()}
    try:
        for block in runnable:
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", make_run.text(block)],
                cwd=ROOT,
                env=make_run.env(block),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            where = f"{block.path}:{block.line} ({block.section})"
            assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"
            assert "Traceback" not in done.stderr, f"{where}:\n{done.stderr}"
    finally:
        # What the blocks wrote into the checkout (an export, for one).
        for name in {p.name for p in ROOT.iterdir()} - before:
            if (ROOT / name).is_file():
                (ROOT / name).unlink()


def started_and_stopped(line: str, env: dict[str, str], ready: str, log: Path) -> bool:
    """Start `line`; it must print `ready` and stay up. Then Ctrl-C; False if it is still
    running 30 s later."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {line}"],
            cwd=ROOT,
            # Unbuffered, so that what it prints reaches the log as it comes.
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not re.search(ready, log.read_text()):
            assert process.poll() is None, f"{line!r} stopped:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{line!r} never ready:\n{log.read_text()}"
            time.sleep(0.5)
        # It stays up (a worker's pool finishes starting meanwhile).
        time.sleep(5)
        assert process.poll() is None, f"{line!r} stopped:\n{log.read_text()}"
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in its terminal
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return False
    return True


def test_the_service_blocks_start_their_processes_as_written(make_run, tmp_path):
    stuck: list[str] = []
    for key, ready in SERVICES.items():
        block = next(b for b in shell_blocks() if b.key == key)
        lines = [line for line in make_run.text(block).splitlines() if line.strip()]
        for n, line in enumerate(lines):
            marker = next(pattern for kind, pattern in ready.items() if f" {kind}" in line)
            env = make_run.env(block)
            if not started_and_stopped(line, env, marker, tmp_path / f"service{n}.log"):
                stuck.append(line)
    assert not stuck, f"still running 30 s after Ctrl-C: {stuck}"


def test_the_systemd_units_start_their_processes(make_run, tmp_path):
    """Each unit's ExecStart, with make run's environment for its EnvironmentFile (and the
    web process on a port of its own)."""
    stuck: list[str] = []
    for key, ready in UNITS.items():
        block = next(b for b in blocks() if b.key == key)
        start = re.search(r"^ExecStart=(.+)$", block.text, re.MULTILINE)
        assert start, block.text
        line = start.group(1).replace("/srv/firefly", str(ROOT)).replace("%i", "1")
        line = line.replace("%%", "%")
        assert line.startswith(f"{ROOT}/.venv/bin/"), line
        env = {**make_run.env(block), "PORT": str(free_port()), "WEB_CONCURRENCY": "1"}
        if not started_and_stopped(line, env, ready, tmp_path / f"unit{len(stuck)}.log"):
            stuck.append(line)
    assert not stuck, f"still running 30 s after Ctrl-C: {stuck}"
