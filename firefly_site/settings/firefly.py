"""The engine's own settings (leases, audit, retention, webhooks, inbound hooks, tokens)
and the beat's schedule, read from the environment after the base settings."""

import ipaddress

from django.core.exceptions import ImproperlyConfigured

from firefly_site.settings.base import DATABASES, VAR_DIR, env


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- Firefly --------------------------------------------------------------------------
# A running step's lease; the worker renews it while the step runs, and the reaper
# retries a step whose lease ran out (its worker died).
FIREFLY_STEP_LEASE_S = env.float("FIREFLY_STEP_LEASE_S", default=60.0)
FIREFLY_REAPER_INTERVAL_S = env.float("FIREFLY_REAPER_INTERVAL_S", default=15.0)
# How often the beat sends due deadline reminders and digests.
FIREFLY_NOTIFY_INTERVAL_S = env.float("FIREFLY_NOTIFY_INTERVAL_S", default=60.0)
# How often beat looks for due schedules (schedules/firing.py), and how late a slot may
# be handled and still count as on time rather than missed (the beat was down).
FIREFLY_SCHEDULE_INTERVAL_S = env.float("FIREFLY_SCHEDULE_INTERVAL_S", default=5.0)
FIREFLY_SCHEDULE_GRACE_S = env.float("FIREFLY_SCHEDULE_GRACE_S", default=60.0)
# A queued step nobody picked up for this long is sent to the broker again.
FIREFLY_REQUEUE_AFTER_S = env.float("FIREFLY_REQUEUE_AFTER_S", default=120.0)
# The reaper relays outbox events (webhook deliveries to be) still not relayed this long
# after their commit: the on-commit relay message, or the process sending it, was lost.
FIREFLY_OUTBOX_RELAY_AFTER_S = env.float("FIREFLY_OUTBOX_RELAY_AFTER_S", default=30.0)
# Relayed outbox events are kept this long (their deliveries hold what was sent).
FIREFLY_OUTBOX_KEEP_DAYS = env.float("FIREFLY_OUTBOX_KEEP_DAYS", default=7.0)
# How many times a step is retried after its worker was lost, beyond its own retries.
FIREFLY_LOST_WORKER_RETRIES = env.int("FIREFLY_LOST_WORKER_RETRIES", default=3)
# A reviewer's claim on a task lapses after this long, so a claim left behind does not
# lock the rest of the role out; staff can break a claim at once.
FIREFLY_CLAIM_TTL_S = env.float("FIREFLY_CLAIM_TTL_S", default=3600.0)
# `python` steps may only call functions in these modules (a spec is data, possibly
# posted over the API: it must not be able to name os.system).
FIREFLY_CALLABLE_MODULES = env.list("FIREFLY_CALLABLE_MODULES", default=["pipelines.demo"])
# `http` steps may only reach these hosts. An entry is an exact name or IP address,
# `host` (port 80 for http, 443 for https) or `host:port`; see pipelines/outbound.py.
FIREFLY_HTTP_ALLOWED_HOSTS = env.list("FIREFLY_HTTP_ALLOWED_HOSTS", default=[])
# Outbound calls (http steps, webhooks) never reach loopback, private, link-local,
# shared, reserved, multicast or cloud metadata addresses, whatever the name resolves
# to, unless the exact address is listed here.
FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = env.list("FIREFLY_OUTBOUND_ALLOWED_ADDRESSES", default=[])
_not_addresses = [a for a in FIREFLY_OUTBOUND_ALLOWED_ADDRESSES if not _is_ip_address(a)]
if _not_addresses:
    raise ImproperlyConfigured(
        f"FIREFLY_OUTBOUND_ALLOWED_ADDRESSES lists exact IP addresses, not {_not_addresses!r}"
    )
# Audit snapshots (inputs, outputs, data) larger than this many bytes of JSON are
# replaced by a marker with their size and SHA-256.
FIREFLY_AUDIT_SNAPSHOT_LIMIT = env.int("FIREFLY_AUDIT_SNAPSHOT_LIMIT", default=64 * 1024)
# Extra destinations fed after commit: "jsonl:/path/file.jsonl", "logging", "otel".
FIREFLY_AUDIT_SINKS = env.list("FIREFLY_AUDIT_SINKS", default=[])
# Anchors of the audit chain (pipelines/anchors.py, docs/audit.md): every this many
# seconds the entries get their global positions and a signed anchor is written to each
# store: an append-only JSONL file (meant for another volume or a WORM mount) and a
# second database (a PostgreSQL or SQLite URL). Either may be turned off ("") while the
# other is set; anchoring to neither is refused.
FIREFLY_ANCHOR_INTERVAL_S = env.float("FIREFLY_ANCHOR_INTERVAL_S", default=60.0)
FIREFLY_ANCHOR_FILE = env.str("FIREFLY_ANCHOR_FILE", default=str(VAR_DIR / "audit-anchors.jsonl"))
FIREFLY_ANCHOR_DATABASE_URL = env.str("FIREFLY_ANCHOR_DATABASE_URL", default="")
if not FIREFLY_ANCHOR_FILE and not FIREFLY_ANCHOR_DATABASE_URL:
    raise ImproperlyConfigured(
        "Set FIREFLY_ANCHOR_FILE or FIREFLY_ANCHOR_DATABASE_URL: the audit chain's anchors "
        "need a store outside the application database."
    )
if FIREFLY_ANCHOR_DATABASE_URL:
    _anchors, _app = env.db_url_config(FIREFLY_ANCHOR_DATABASE_URL), DATABASES["default"]
    if [str(_anchors.get(k) or "") for k in ("NAME", "HOST", "PORT")] == [
        str(_app.get(k) or "") for k in ("NAME", "HOST", "PORT")
    ]:
        raise ImproperlyConfigured(
            "FIREFLY_ANCHOR_DATABASE_URL names the application's own database: the anchors "
            "must be kept outside it."
        )
FIREFLY_BASE_URL = env.str("FIREFLY_BASE_URL", default="http://127.0.0.1:8000")
# A spec's on_finish callable fails the run when it runs longer than this (0: no limit,
# and it runs in the worker's own thread); after this many attempts lost with their
# worker the run fails too.
FIREFLY_ON_FINISH_TIMEOUT_S = env.float("FIREFLY_ON_FINISH_TIMEOUT_S", default=300.0)
FIREFLY_ON_FINISH_ATTEMPTS = env.int("FIREFLY_ON_FINISH_ATTEMPTS", default=3)
# OpenTelemetry spans per run and per step attempt (needs the `otel` extra).
FIREFLY_TRACING = env.bool("FIREFLY_TRACING", default=False)
# Bounds on what arrives from outside, checked before anything is built from it: a spec
# (its bytes as sent, and its nodes: YAML or JSON values), run inputs and form data (bytes
# as compact JSON), an API request body, and how deep any JSON or YAML may nest (deeper
# documents exhaust Python's recursion in the parsers and validators).
FIREFLY_SPEC_MAX_BYTES = env.int("FIREFLY_SPEC_MAX_BYTES", default=256 * 1024)
FIREFLY_SPEC_MAX_NODES = env.int("FIREFLY_SPEC_MAX_NODES", default=10_000)
FIREFLY_INPUTS_MAX_BYTES = env.int("FIREFLY_INPUTS_MAX_BYTES", default=256 * 1024)
FIREFLY_API_MAX_BODY_BYTES = env.int("FIREFLY_API_MAX_BODY_BYTES", default=1024 * 1024)
FIREFLY_JSON_MAX_DEPTH = env.int("FIREFLY_JSON_MAX_DEPTH", default=64)

# Retention: a finished run's data (step outputs, checkpoint data, task context, inputs
# and outputs, handoff payloads, its audit entries' content) is erased this many days
# after it finished, and the run itself (its rows; its audit entries stay, redacted) is
# purged after FIREFLY_RETENTION_RUNS_DAYS. A spec's `retention` overrides them for its
# pipeline's runs. Unset: kept forever.
FIREFLY_RETENTION_OUTPUTS_DAYS = env.int("FIREFLY_RETENTION_OUTPUTS_DAYS", default=None)
FIREFLY_RETENTION_RUNS_DAYS = env.int("FIREFLY_RETENTION_RUNS_DAYS", default=None)
# How often beat applies retention, how many runs one transaction takes (short
# transactions: locks are held for one batch only), how long one sweep may go on, and the
# pause between batches that leaves the machine to the pages and workers: the job is idle
# at least FIREFLY_RETENTION_IDLE_SHARE of the time, and pauses at least _PAUSE_S.
FIREFLY_RETENTION_INTERVAL_S = env.float("FIREFLY_RETENTION_INTERVAL_S", default=3600.0)
FIREFLY_RETENTION_BATCH = env.int("FIREFLY_RETENTION_BATCH", default=100)
FIREFLY_RETENTION_BUDGET_S = env.float("FIREFLY_RETENTION_BUDGET_S", default=1800.0)
FIREFLY_RETENTION_PAUSE_S = env.float("FIREFLY_RETENTION_PAUSE_S", default=0.05)
FIREFLY_RETENTION_IDLE_SHARE = env.float("FIREFLY_RETENTION_IDLE_SHARE", default=0.8)
# Purged runs' audit entries are first written to JSONL segments in this folder (one per
# batch, fsynced before the rows go); `verify_audit --against SEGMENT` checks them. With
# FIREFLY_RETENTION_ARCHIVE_REQUIRED (on when a folder is set) nothing is purged without it.
FIREFLY_RETENTION_ARCHIVE_DIR = env.str("FIREFLY_RETENTION_ARCHIVE_DIR", default="")
FIREFLY_RETENTION_ARCHIVE_REQUIRED = env.bool(
    "FIREFLY_RETENTION_ARCHIVE_REQUIRED", default=bool(FIREFLY_RETENTION_ARCHIVE_DIR)
)
for _name in ("FIREFLY_RETENTION_OUTPUTS_DAYS", "FIREFLY_RETENTION_RUNS_DAYS"):
    if globals()[_name] is not None and globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1 (leave it unset to keep forever).")
if (
    FIREFLY_RETENTION_OUTPUTS_DAYS is not None
    and FIREFLY_RETENTION_RUNS_DAYS is not None
    and FIREFLY_RETENTION_RUNS_DAYS < FIREFLY_RETENTION_OUTPUTS_DAYS
):
    raise ImproperlyConfigured(
        "FIREFLY_RETENTION_RUNS_DAYS must be at least FIREFLY_RETENTION_OUTPUTS_DAYS: "
        "a purged run takes its outputs with it."
    )
if FIREFLY_RETENTION_ARCHIVE_REQUIRED and not FIREFLY_RETENTION_ARCHIVE_DIR:
    raise ImproperlyConfigured(
        "FIREFLY_RETENTION_ARCHIVE_REQUIRED is on but FIREFLY_RETENTION_ARCHIVE_DIR is unset."
    )

CELERY_BEAT_SCHEDULE = {
    "firefly-schedules": {
        "task": "schedules.tasks.fire_schedules",
        "schedule": FIREFLY_SCHEDULE_INTERVAL_S,
    },
    "firefly-reaper": {
        "task": "pipelines.tasks.reap",
        "schedule": FIREFLY_REAPER_INTERVAL_S,
    },
    "firefly-task-deadlines": {
        "task": "approvals.tasks.expire_overdue",
        "schedule": FIREFLY_REAPER_INTERVAL_S,
    },
    "firefly-webhook-sweep": {
        "task": "approvals.tasks.sweep_webhooks",
        "schedule": FIREFLY_REAPER_INTERVAL_S,
    },
    # Deadline reminders and the hourly/daily digests (each person's window is kept in
    # their preferences; this is only how often the beat looks).
    "firefly-notifications": {
        "task": "approvals.tasks.send_notifications",
        "schedule": FIREFLY_NOTIFY_INTERVAL_S,
    },
    "firefly-audit-anchor": {
        "task": "pipelines.tasks.anchor_audit",
        "schedule": FIREFLY_ANCHOR_INTERVAL_S,
    },
    "firefly-retention": {
        "task": "pipelines.tasks.apply_retention",
        "schedule": FIREFLY_RETENTION_INTERVAL_S,
    },
}

# --- Demo data ------------------------------------------------------------------------
# `manage.py load_demo` creates users with published passwords: only on the embedded
# SQLite database in debug, unless this asks for it explicitly.
FIREFLY_DEMO = env.bool("FIREFLY_DEMO", default=False)

# --- Webhooks -------------------------------------------------------------------------
# Outbound webhooks may only reach these hosts (checked when a webhook is saved and again
# at every delivery, entries as for FIREFLY_HTTP_ALLOWED_HOSTS), so a webhook cannot be
# aimed at internal addresses.
FIREFLY_WEBHOOK_ALLOWED_HOSTS = env.list("FIREFLY_WEBHOOK_ALLOWED_HOSTS", default=[])
# Seconds to wait for a receiver; a slow one costs a delivery task, never a run.
FIREFLY_WEBHOOK_TIMEOUT_S = env.float("FIREFLY_WEBHOOK_TIMEOUT_S", default=5.0)
# Attempts per delivery (network errors and 5xx are retried), and the first retry's delay,
# doubled after each attempt.
FIREFLY_WEBHOOK_MAX_ATTEMPTS = env.int("FIREFLY_WEBHOOK_MAX_ATTEMPTS", default=5)
FIREFLY_WEBHOOK_BACKOFF_S = env.float("FIREFLY_WEBHOOK_BACKOFF_S", default=10.0)
# After a rotation, deliveries carry the previous secret's signature too for this many
# seconds, so receivers can switch to the new secret without dropping events.
FIREFLY_WEBHOOK_SECRET_GRACE_S = env.int("FIREFLY_WEBHOOK_SECRET_GRACE_S", default=24 * 3600)

# --- Inbound hooks (POST /hooks/<token>/ starts a run; inbound/) -----------------------
# The largest body any hook may accept (each hook sets its own limit under it).
FIREFLY_INBOUND_MAX_BODY_BYTES = env.int("FIREFLY_INBOUND_MAX_BODY_BYTES", default=1024 * 1024)
# How long a rotated-out hook secret is still accepted, so the sender can switch over.
FIREFLY_INBOUND_SECRET_GRACE_S = env.int("FIREFLY_INBOUND_SECRET_GRACE_S", default=24 * 3600)
# Refused deliveries recorded per hook and minute; beyond, they are only logged (whoever
# knows a hook's URL must not be able to flood its delivery log).
FIREFLY_INBOUND_REFUSALS_RECORDED_PER_MINUTE = env.int(
    "FIREFLY_INBOUND_REFUSALS_RECORDED_PER_MINUTE", default=120
)

# --- API tokens -----------------------------------------------------------------------
# Days a new API token lives unless its creator says otherwise (`create_token --days`,
# `expires_in_days`); only `create_token --no-expiry` makes one that never expires.
FIREFLY_TOKEN_TTL_DAYS = env.int("FIREFLY_TOKEN_TTL_DAYS", default=90)
