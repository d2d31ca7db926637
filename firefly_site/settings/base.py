"""Django's settings and the services Firefly talks to (database, broker, mail, single
sign-on, chat), read from the environment."""

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(environ.Env().str("FIREFLY_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Off unless asked for: `make run` turns it on for the demo, a deployment never does.
DEBUG = env.bool("DEBUG", default=False)

# --- Secrets --------------------------------------------------------------------------
# Outside debug the development keys are refused (they are published in this file), and
# so is any key too short to resist guessing: sessions, password resets and CSRF tokens
# are signed with SECRET_KEY, the audit chain with FIREFLY_AUDIT_KEY, and webhook secrets
# are encrypted with FIREFLY_SECRETS_KEY.
_DEV_SECRET = "firefly-insecure-development-key-do-not-use-in-production"  # noqa: S105
_DEV_AUDIT_KEY = "firefly-development-audit-key"
_DEV_SECRETS_KEY = "firefly-development-secrets-key"
SECRET_MIN_BYTES = 32


def _secret(name: str, development: str) -> str:
    value = env.str(name, default=development if DEBUG else "")
    if DEBUG:
        return value
    make_one = 'python -c "import secrets; print(secrets.token_urlsafe(50))"'
    if not value:
        raise ImproperlyConfigured(f"Set {name}: it is required when DEBUG is off ({make_one}).")
    if value == development:
        raise ImproperlyConfigured(
            f"Set {name} to a key of your own: the development key is public ({make_one})."
        )
    if len(value.encode()) < SECRET_MIN_BYTES:
        raise ImproperlyConfigured(
            f"Set {name} to at least {SECRET_MIN_BYTES} bytes; it has {len(value.encode())}"
            f" ({make_one})."
        )
    return value


SECRET_KEY = _secret("SECRET_KEY", _DEV_SECRET)
# The audit chain's HMAC key lives outside the database, so an attacker with only
# database access cannot rewrite history and recompute the hashes.
FIREFLY_AUDIT_KEY = _secret("FIREFLY_AUDIT_KEY", _DEV_AUDIT_KEY)
# More audit keys, by id: "id:key,id:key" (pipelines/keys.py). The first signs new entries
# and anchors; the others, and FIREFLY_AUDIT_KEY as id "default", only verify. Unset:
# FIREFLY_AUDIT_KEY signs. `manage.py rotate_audit_key` makes a new key and prints the value.
FIREFLY_AUDIT_KEYS = env.list("FIREFLY_AUDIT_KEYS", default=[])
# Encrypts webhook secrets at rest (webhooks/crypto.py); outside the database for the same
# reason. To change it, move the old value into FIREFLY_SECRETS_OLD_KEYS (comma separated):
# rows encrypted with an old key still decrypt, new ones use the new key.
FIREFLY_SECRETS_KEY = _secret("FIREFLY_SECRETS_KEY", _DEV_SECRETS_KEY)
FIREFLY_SECRETS_OLD_KEYS = env.list("FIREFLY_SECRETS_OLD_KEYS", default=[])

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "axes",
    "orgs",
    "pipelines",
    "approvals",
    "webhooks",
    "tokens",
    "inbound",
    "accounts",
    "schedules",
    "chat",
    "insights",
]

MIDDLEWARE = [
    # /healthz and /readyz answer first: no session, sign-in or organization, and no host
    # check or HTTPS redirect in the way of a load balancer's probe (firefly_site/health.py).
    "firefly_site.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from STATIC_ROOT, served by the web process itself (see STORAGES).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.organization: the tenant every page reads and writes in.
    "orgs.middleware.CurrentOrganizationMiddleware",
    # On PostgreSQL, the database itself holds the request's queries to that tenant.
    "orgs.middleware.RowLevelSecurityMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "firefly_site.urls"
WSGI_APPLICATION = "firefly_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.organizations",
                "insights.context_processors.nav",
                # The login page's "Sign in with ..." button, when single sign-on is on.
                "accounts.oidc.sign_in_options",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# Embedded default: one SQLite file in WAL mode. IMMEDIATE transactions take the write
# lock up front, so two writers queue on the busy timeout instead of failing with
# "database is locked" when a read transaction tries to upgrade.
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'firefly.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=300))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # The engine's own statements (pipelines.fastpath, bound on the server) are prepared
    # once per connection after a few runs: each step then skips parsing and planning.
    # The ORM's queries are bound on the client and never prepared. Off (0) behind a
    # transaction pooler that does not keep prepared statements (PgBouncer before 1.21).
    _prepare = env.int("DATABASE_PREPARE_THRESHOLD", default=5)
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = _prepare or None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Rate-limit counters. Per process by default; e.g. CACHE_URL=redis://127.0.0.1:6379/2
# shares them between the web processes of a deployment.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# `collectstatic` writes each file under a name with its content's hash, and compressed;
# WhiteNoise serves those names with a cache lifetime of ten years (a new version is a new
# name). Outside debug a page needs that manifest: run collectstatic before starting.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# --- HTTPS ----------------------------------------------------------------------------
# Outside debug Firefly is served over HTTPS only: HTTP is redirected, cookies are never
# sent in clear, and browsers are told (HSTS) to refuse plain HTTP for a year.
# FIREFLY_PLAIN_HTTP=true turns all of it off, for a local instance without TLS.
_HTTPS = not DEBUG and not env.bool("FIREFLY_PLAIN_HTTP", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_HTTPS)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=_HTTPS)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=_HTTPS)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if _HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=_HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=_HTTPS)
# Only a proxy that sets X-Forwarded-Proto itself (overwriting what the client sent) may be
# trusted with it: otherwise any client could claim its plain request came over HTTPS.
FIREFLY_TLS_PROXY = env.bool("FIREFLY_TLS_PROXY", default=False)
if FIREFLY_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Content Security Policy ------------------------------------------------------------
# Pages may run only Firefly's own scripts and styles (static/): an injected <script>,
# inline event handler or style attribute does nothing. Sent in debug too, so a page that
# needs an exception shows it at once. The API docs page is the one exception
# (firefly_site/api_urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        # data: for the empty favicon and the admin's and API docs' inline icons.
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Login abuse ------------------------------------------------------------------------
# django-axes counts failed logins (site, admin, anything calling authenticate()) and
# locks out a username after AXES_FAILURE_LIMIT failures from anywhere, and an address
# after as many failures for any usernames, for AXES_COOLOFF_TIME. A locked-out login is
# refused even with the right password, and recorded as a SecurityEvent.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    # Single sign-on (below); it does nothing while FIREFLY_OIDC_CLIENT_ID is unset.
    "accounts.oidc.OIDCBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username"], ["ip_address"]]
AXES_LOCKOUT_CALLABLE = "firefly_site.errors.login_locked_out"
AXES_RESET_ON_SUCCESS = True
# The address a failure counts against: behind the proxy, the client's (X-Forwarded-For).
AXES_CLIENT_IP_CALLABLE = "firefly_site.addresses.client_address"

# --- Single sign-on ---------------------------------------------------------------------
# OpenID Connect through mozilla-django-oidc (accounts/oidc.py): off unless
# FIREFLY_OIDC_CLIENT_ID is set; local passwords keep working beside it. The provider's
# ID tokens are RS256-signed and checked for signature, expiry, issuer, audience and
# nonce; the authorization code is bound to the browser with PKCE.
OIDC_RP_CLIENT_ID = env.str("FIREFLY_OIDC_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("FIREFLY_OIDC_CLIENT_SECRET", default="")
FIREFLY_OIDC_ISSUER = env.str("FIREFLY_OIDC_ISSUER", default="")
OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("FIREFLY_OIDC_AUTHORIZATION_URL", default="")
OIDC_OP_TOKEN_ENDPOINT = env.str("FIREFLY_OIDC_TOKEN_URL", default="")
OIDC_OP_USER_ENDPOINT = env.str("FIREFLY_OIDC_USERINFO_URL", default="")
OIDC_OP_JWKS_ENDPOINT = env.str("FIREFLY_OIDC_JWKS_URL", default="")
# The login page's button says "Sign in with <this>".
FIREFLY_OIDC_PROVIDER_NAME = env.str("FIREFLY_OIDC_PROVIDER_NAME", default="single sign-on")
OIDC_RP_SCOPES = env.str("FIREFLY_OIDC_SCOPES", default="openid email profile")
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_USE_NONCE = True
OIDC_USE_PKCE = True
OIDC_TIMEOUT = env.float("FIREFLY_OIDC_TIMEOUT_S", default=10.0)
OIDC_AUTHENTICATE_CLASS = "accounts.oidc.AuthenticateView"
OIDC_CALLBACK_CLASS = "accounts.oidc.CallbackView"
LOGIN_REDIRECT_URL_FAILURE = "/login/?sso=failed"
# Clock skew allowed between the provider and Firefly when checking exp and iat.
FIREFLY_OIDC_LEEWAY_S = env.int("FIREFLY_OIDC_LEEWAY_S", default=30)
# The claim listing the user's groups. Values `<prefix><organization slug>[:<role>]`
# (role member, author or admin; member when left out) make memberships; organizations
# are never created from a claim. With FIREFLY_OIDC_SYNC_GROUPS the other values set the
# user's Django groups (existing groups only; the ones a task or a grant can name).
FIREFLY_OIDC_GROUPS_CLAIM = env.str("FIREFLY_OIDC_GROUPS_CLAIM", default="groups")
FIREFLY_OIDC_ORGANIZATION_PREFIX = env.str("FIREFLY_OIDC_ORGANIZATION_PREFIX", default="firefly:")
FIREFLY_OIDC_SYNC_GROUPS = env.bool("FIREFLY_OIDC_SYNC_GROUPS", default=False)
if OIDC_RP_CLIENT_ID:
    _oidc_required = {
        "FIREFLY_OIDC_CLIENT_SECRET": OIDC_RP_CLIENT_SECRET,
        "FIREFLY_OIDC_ISSUER": FIREFLY_OIDC_ISSUER,
        "FIREFLY_OIDC_AUTHORIZATION_URL": OIDC_OP_AUTHORIZATION_ENDPOINT,
        "FIREFLY_OIDC_TOKEN_URL": OIDC_OP_TOKEN_ENDPOINT,
        "FIREFLY_OIDC_USERINFO_URL": OIDC_OP_USER_ENDPOINT,
        "FIREFLY_OIDC_JWKS_URL": OIDC_OP_JWKS_ENDPOINT,
    }
    _oidc_missing = [name for name, value in _oidc_required.items() if not value]
    if _oidc_missing:
        raise ImproperlyConfigured(
            f"FIREFLY_OIDC_CLIENT_ID is set, so single sign-on needs {', '.join(_oidc_missing)}."
        )
    # The token request carries the client secret; the answers carry who signs in.
    _oidc_plain = [
        name for name, value in list(_oidc_required.items())[2:] if not value.startswith("https://")
    ]
    if _HTTPS and _oidc_plain:
        raise ImproperlyConfigured(
            f"{', '.join(_oidc_plain)}: use https:// URLs (or set FIREFLY_PLAIN_HTTP=true)."
        )

# Organizations (tenants). Rows made without one (a single-team install, the commands)
# belong to this one; upgrading put every earlier row and user in it.
FIREFLY_DEFAULT_ORGANIZATION = env.str("FIREFLY_DEFAULT_ORGANIZATION", default="default")
# On PostgreSQL, row-level security holds each request's and task's queries to its
# organization, whatever filter they forget (orgs/rls.py, docs/security.md). No effect on
# SQLite.
FIREFLY_RLS = env.bool("FIREFLY_RLS", default=True)

# Mail: one EMAIL_URL (smtp://user:password@host:587, smtp+tls://, submission://,
# consolemail://) or the separate variables; the console when neither is set.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
if env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="firefly@localhost")
# Notification emails carry one signed, single-use link per action (approve, reject, each
# choice). Off (the default), a link still needs its recipient signed in; on, the link
# alone identifies them for that one decision. Links last this many hours at most.
FIREFLY_EMAIL_ACTIONS = env.bool("FIREFLY_EMAIL_ACTIONS", default=False)
FIREFLY_EMAIL_LINK_HOURS = env.int("FIREFLY_EMAIL_LINK_HOURS", default=72)
if FIREFLY_EMAIL_LINK_HOURS < 1:
    raise ImproperlyConfigured("FIREFLY_EMAIL_LINK_HOURS must be at least 1.")

# Decisions from chat (chat/, docs/security.md "Decisions from chat"): a Slack app's bot
# token posts each task with Approve and Reject buttons to FIREFLY_SLACK_CHANNEL (or to
# the assignee directly, when their Slack account is linked); the app's signing secret
# checks every click Slack sends back. Off while the token is unset.
FIREFLY_SLACK_BOT_TOKEN = env.str("FIREFLY_SLACK_BOT_TOKEN", default="")
FIREFLY_SLACK_SIGNING_SECRET = env.str("FIREFLY_SLACK_SIGNING_SECRET", default="")
FIREFLY_SLACK_API_URL = env.str("FIREFLY_SLACK_API_URL", default="https://slack.com/api")
FIREFLY_SLACK_CHANNEL = env.str("FIREFLY_SLACK_CHANNEL", default="")
# Clicks from another workspace than this one (its team id, T...) are refused; empty: any
# workspace the app is installed in.
FIREFLY_SLACK_TEAM_ID = env.str("FIREFLY_SLACK_TEAM_ID", default="")
# A Slack user with no explicit link is matched by the email address Slack reports for
# them (users.info); off, only the linked accounts (chat.ChatIdentity) decide.
FIREFLY_SLACK_MATCH_EMAIL = env.bool("FIREFLY_SLACK_MATCH_EMAIL", default=True)
FIREFLY_SLACK_TIMEOUT_S = env.float("FIREFLY_SLACK_TIMEOUT_S", default=10.0)
# Unsigned or stale requests to the interactivity endpoint recorded as security events each
# minute (anyone can send them); the rest are only logged.
FIREFLY_SLACK_REFUSALS_RECORDED_PER_MINUTE = env.int(
    "FIREFLY_SLACK_REFUSALS_RECORDED_PER_MINUTE", default=60
)
# Calls to Slack go through the outbound guard (pipelines/outbound.py) like every other
# outbound call, to the host of FIREFLY_SLACK_API_URL alone (its address checked too).
FIREFLY_SLACK_API_HOSTS = [urlsplit(FIREFLY_SLACK_API_URL).netloc.rpartition("@")[2]]
if FIREFLY_SLACK_BOT_TOKEN and not FIREFLY_SLACK_SIGNING_SECRET:
    raise ImproperlyConfigured(
        "FIREFLY_SLACK_BOT_TOKEN is set but FIREFLY_SLACK_SIGNING_SECRET is not: without it "
        "no click from Slack can be checked."
    )

# Text for people (run and step ids in brackets), or JSON lines for a log shipper
# (firefly_site/logs.py): every record carries the run, step, Celery task and trace it
# is about, where there is one.
FIREFLY_LOG_FORMAT = env.str("FIREFLY_LOG_FORMAT", default="text")
if FIREFLY_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(
        f"FIREFLY_LOG_FORMAT must be 'text' or 'json', not {FIREFLY_LOG_FORMAT!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "firefly_site.logs.ContextFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"},
        "json": {"()": "firefly_site.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": FIREFLY_LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
# Celery workers and beat log through the handler above instead of their own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Prometheus metrics (firefly_site/metrics.py): `/metrics` answers these addresses, or
# `Authorization: Bearer <FIREFLY_METRICS_TOKEN>`; a Celery worker with a port serves its
# own counters there (one port per worker process).
FIREFLY_METRICS_ALLOWED_ADDRESSES = env.list(
    "FIREFLY_METRICS_ALLOWED_ADDRESSES", default=["127.0.0.1", "::1"]
)
FIREFLY_METRICS_TOKEN = env.str("FIREFLY_METRICS_TOKEN", default="")
FIREFLY_METRICS_PORT = env.int("FIREFLY_METRICS_PORT", default=0)
FIREFLY_METRICS_ADDRESS = env.str("FIREFLY_METRICS_ADDRESS", default="127.0.0.1")

# --- Celery ---------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, str | int | bool]
if CELERY_BROKER_URL.startswith("filesystem"):
    BROKER_DIR.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        # Exchange bindings; kombu's default is `control/` in the working directory.
        "control_folder": str(BROKER_DIR / "control"),
    }
elif CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
    # RabbitMQ confirms each message it has taken (a send to a broker that fails over
    # raises instead of vanishing). docs/deploy.md has the server's side.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
else:
    # An unacknowledged message comes back after this long. It must outlast the
    # longest step, or a slow step would be delivered twice while still running
    # (harmless, but wasteful); the reaper recovers dead workers much sooner.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# A task is acknowledged after it returns, and requeued if its worker dies, so no
# message is lost with a worker; every task is written to be safe on redelivery.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=3600)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=3660)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django support closes every database connection before and after each task
# unless this is set: a new PostgreSQL connection per step. Instead a worker thread
# keeps its connection, recycled by Celery every 2 x this many tasks of the process, and
# each task starts and ends with Django's close_old_connections (firefly_site/celery.py),
# as a request does: broken connections and those past CONN_MAX_AGE are closed.
CELERY_DB_REUSE_MAX = 1000
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes an anonymous request a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tokens.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Signed in, and request.organization set: the token's, or the one that
    # X-Firefly-Organization names among the session user's (orgs/api.py).
    "DEFAULT_PERMISSION_CLASSES": ["orgs.api.InOrganization"],
    # JSON only: request bodies hold nested objects (inputs, specs, form data); the
    # parser bounds a body's size and depth (FIREFLY_API_MAX_BODY_BYTES, _JSON_MAX_DEPTH).
    "DEFAULT_PARSER_CLASSES": ["firefly_site.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "firefly_site.api_errors.exception_handler",
    # Starting, forking and deciding are rate-limited per user (views name their scope);
    # the counters live in the cache, so several web processes need a shared CACHE_URL.
    "DEFAULT_THROTTLE_RATES": {
        "run_start": env.str("FIREFLY_THROTTLE_RUN_START", default="120/min"),
        "run_fork": env.str("FIREFLY_THROTTLE_RUN_FORK", default="30/min"),
        "decide": env.str("FIREFLY_THROTTLE_DECIDE", default="120/min"),
        # Checking a spec parses it and draws its DAG: cheap, but not free.
        "spec_validate": env.str("FIREFLY_THROTTLE_SPEC_VALIDATE", default="120/min"),
        # The step types and the spec schema; the schema is public (editors fetch it).
        "catalogue": env.str("FIREFLY_THROTTLE_CATALOGUE", default="600/min"),
    },
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Firefly API",
    "DESCRIPTION": (
        "Pipelines of steps that stop at human gates. Errors are "
        '`{"error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "pipelines.models.Run.Status",
        "StepStatusEnum": "pipelines.models.StepRun.Status",
        "CheckpointKindEnum": "pipelines.models.Checkpoint.Kind",
        "TaskStatusEnum": "approvals.models.HumanTask.Status",
        "TaskKindEnum": "approvals.models.HumanTask.Kind",
        "DecisionActionEnum": "approvals.models.Decision.Action",
    },
}
