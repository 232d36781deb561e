"""Settings for the portal.

This module (and the rest of ``config/``) is the only place that reads the
environment. Every value has a safe default for local use: SQLite in ``data/``
and django-q2 on its ORM broker. ``DATABASE_URL`` switches to PostgreSQL and
``REDIS_URL`` switches the task queue to Redis.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local ``.env`` (written by ``dev.py`` on first run) is read if present; real
# environment variables always win.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data")))

# No insecure fallback: ``dev.py`` generates one into .env for local use.
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Run `python3 dev.py run` once to generate a local .env, "
        "or set SECRET_KEY in the environment."
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served from here, pinned: no CDN
    "config.apps.ConfigAppConfig",
    "integrations",
    "advisories",
    "synclogs",
    "scanning",
    # After scanning, whose ``qcluster`` command (schedules from settings, prompt SIGTERM) wins.
    "django_q",
]
# The development tools (the Bitbucket sandbox's commands, the benchmarks): with DEBUG, or on
# request (a benchmark under production settings). Never in the production wheel.
PORTAL_DEV_TOOLS = env.bool("PORTAL_DEV_TOOLS", default=DEBUG)
if PORTAL_DEV_TOOLS:
    INSTALLED_APPS.append("devtools")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the portal's and the admin's) served by the app itself, compressed and
    # with hashed names: no CDN, no separate web server needed, styled under DEBUG=false.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
    "config.middleware.RejectNulMiddleware",
    "config.middleware.OutOfRangeMiddleware",
    "config.middleware.NoStoreForSignedInMiddleware",
    # Last: django-axes turns a locked-out sign-in into a 429 page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First, so a locked-out address and username never reach the password check.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "integrations.portal.portal_context",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'portal.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # WAL lets the web server and the task cluster share the file without
    # "database is locked" under ordinary load.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # PostgreSQL caches a generic plan for the foreign-key checks it runs at commit; made
    # while the inventory tables were empty (after VACUUM ANALYZE of a fresh database) it turns
    # a large first sync superlinear. Custom plans keep it linear whatever the statistics say
    # (docs/performance.md). Empty: PostgreSQL's default (auto).
    PG_PLAN_CACHE_MODE = env.str("PG_PLAN_CACHE_MODE", default="force_custom_plan")
    if PG_PLAN_CACHE_MODE:
        options = DATABASES["default"].setdefault("OPTIONS", {})
        options["options"] = f"{options.get('options', '')} -c plan_cache_mode={PG_PLAN_CACHE_MODE}".strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache holds throttle counters and rate-limit windows, so every web process must
# share it: Redis when configured (the production path), else the process's memory
# (the embedded default runs one web process).
REDIS_URL = env.str("REDIS_URL", default="")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "portal"}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # collectstatic writes compressed, content-hashed copies; DEBUG serves the sources.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Without collectstatic (the embedded default, tests), serve straight from the app folders.
WHITENOISE_USE_FINDERS = DEBUG
if WHITENOISE_USE_FINDERS:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise expects it, even empty

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "login"

# --- API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "integrations.api.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "integrations.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["integrations.api.errors.SafeJSONParser"],
    # Per user here; anonymous calls are throttled as they are authenticated (integrations/api/auth.py).
    "DEFAULT_THROTTLE_CLASSES": ["integrations.api.throttles.UserThrottle"],
    # Behind the proxy, DRF reads the client's address from X-Forwarded-For (the last hop).
    "NUM_PROXIES": 1 if env.bool("BEHIND_TLS_PROXY", default=False) else None,
}
# API rates per address (anonymous) and per user; beyond them the API answers 429.
API_THROTTLE_ANON = env.str("API_THROTTLE_ANON", default="60/minute")
API_THROTTLE_USER = env.str("API_THROTTLE_USER", default="120/minute")
# API tokens: stored as SHA-512 digests (django-rest-knox); no expiry unless set, revoked
# from the account page. A recognisable prefix lets secret scanners spot a leaked one.
REST_KNOX = {
    "TOKEN_TTL": None,
    "AUTO_REFRESH": False,
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_PREFIX": "bbp_",
}
# Failed API tokens from one address in a minute before it gets 429 (token guessing).
API_TOKEN_FAILURES_PER_MINUTE = env.int("API_TOKEN_FAILURES_PER_MINUTE", default=10)

# Sign-in lockout (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username
# from one address, that pair is refused (429) for AXES_COOLOFF_MINUTES, right password or not.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "integrations.net.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
SPECTACULAR_SETTINGS = {
    "TITLE": "Bitbucket Cloud portal API",
    "DESCRIPTION": "Manage Bitbucket Cloud integrations, scans, sync logs and the inventory. "
    "Authenticate with `Authorization: Token <key>`. Errors are "
    '`{"error": {"code", "message", "fields"?}}`.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # One name for a choice set that several components share (an integration as read, and as updated).
    "ENUM_NAME_OVERRIDES": {"IntegrationStatusEnum": "integrations.models.IntegrationStatus"},
}

# --- Security (``manage.py check --deploy`` passes when DEBUG is off) -------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# A load balancer probes health over plain HTTP inside the network: no redirect for those.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_TLS_PROXY else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# --- Credentials at rest -----------------------------------------------------------
# Comma-separated Fernet keys, newest first. The first encrypts, all decrypt.
# Independent of SECRET_KEY on purpose: rotating SECRET_KEY must not lose secrets.
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
# Rows re-encrypted per transaction by ``rotate_encryption_keys``.
FIELD_ENCRYPTION_ROTATE_BATCH = env.int("FIELD_ENCRYPTION_ROTATE_BATCH", default=500)

# --- Bitbucket Cloud -----------------------------------------------------------------
# Set per deployment, never per integration (the sandbox replaces both locally).
BITBUCKET_API_URL = env.str("BITBUCKET_API_URL", default="https://api.bitbucket.org/2.0")
BITBUCKET_WEB_URL = env.str("BITBUCKET_WEB_URL", default="https://bitbucket.org")

# Client behaviour. Timeouts in seconds; retries apply to 429, 5xx and connection resets only.
BITBUCKET_CONNECT_TIMEOUT = env.float("BITBUCKET_CONNECT_TIMEOUT", default=5.0)
BITBUCKET_READ_TIMEOUT = env.float("BITBUCKET_READ_TIMEOUT", default=30.0)
BITBUCKET_RETRIES = env.int("BITBUCKET_RETRIES", default=3)
BITBUCKET_BACKOFF_FACTOR = env.float("BITBUCKET_BACKOFF_FACTOR", default=0.5)
BITBUCKET_BACKOFF_MAX = env.float("BITBUCKET_BACKOFF_MAX", default=30.0)
# A 429 asking to wait longer than this is not waited out in-process.
BITBUCKET_MAX_RETRY_AFTER = env.float("BITBUCKET_MAX_RETRY_AFTER", default=60.0)
# Concurrent git ref reads per scan (they count against git's 60,000/hour, not REST's budget).
BITBUCKET_GIT_CONCURRENCY = env.int("BITBUCKET_GIT_CONCURRENCY", default=8)

# The shared request budget (integrations/bitbucket/budget.py): Bitbucket's published hourly
# allowances per account, used until Bitbucket's X-RateLimit-Limit says otherwise. Scanners
# and other background work leave BITBUCKET_REST_RESERVE requests of the hour to listings,
# webhooks and people. Kept in Redis when REDIS_URL is set, else in the database.
BITBUCKET_REST_PER_HOUR = env.int("BITBUCKET_REST_PER_HOUR", default=1000)
BITBUCKET_GIT_PER_HOUR = env.int("BITBUCKET_GIT_PER_HOUR", default=60000)
BITBUCKET_REST_RESERVE = env.int("BITBUCKET_REST_RESERVE", default=100)
BITBUCKET_RATE_WINDOW_SECONDS = env.int("BITBUCKET_RATE_WINDOW_SECONDS", default=3600)
REQUEST_BUDGET_STORE = env.str("REQUEST_BUDGET_STORE", default="redis" if REDIS_URL else "database")
if REQUEST_BUDGET_STORE not in ("redis", "database"):
    raise ImproperlyConfigured("REQUEST_BUDGET_STORE must be 'redis' or 'database'.")
if REQUEST_BUDGET_STORE == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("REQUEST_BUDGET_STORE=redis needs REDIS_URL.")

# --- Sync logs -------------------------------------------------------------------------------
SYNCLOG_RETENTION_DAYS = env.int("SYNCLOG_RETENTION_DAYS", default=90)
# How often the dispatcher looks for integrations whose next scan is due (minutes).
# Also how soon a scan whose worker died is noticed: keep it at a minute or two.
SCAN_DISPATCH_MINUTES = env.int("SCAN_DISPATCH_MINUTES", default=1)
# A running scan writes a heartbeat every SCAN_HEARTBEAT_SECONDS; one silent for
# SCAN_STALE_SECONDS lost its worker (killed, out of memory, database connection cut) and is
# ended by the dispatcher, which queues a scan that picks up where it stopped.
SCAN_HEARTBEAT_SECONDS = env.int("SCAN_HEARTBEAT_SECONDS", default=15)
SCAN_STALE_SECONDS = env.int("SCAN_STALE_SECONDS", default=90)
# Scanner work of more than SCAN_CHUNK_SIZE repositories is cut into chunks that runners on
# any task cluster take one after another: SCAN_CHUNK_RUNNERS of them (0: as many as the live
# clusters have workers), each handing itself out again after SCAN_CHUNK_RUNNER_SECONDS. A chunk
# whose worker stopped is handed out again up to SCAN_CHUNK_ATTEMPTS times.
SCAN_CHUNK_SIZE = env.int("SCAN_CHUNK_SIZE", default=200)
SCAN_CHUNK_RUNNERS = env.int("SCAN_CHUNK_RUNNERS", default=0)
SCAN_CHUNK_RUNNER_SECONDS = env.int("SCAN_CHUNK_RUNNER_SECONDS", default=600)
SCAN_CHUNK_ATTEMPTS = env.int("SCAN_CHUNK_ATTEMPTS", default=3)
# A scan that failed for a passing reason (Bitbucket unavailable or timing out) is retried
# after SCAN_RETRY_SECONDS, doubling with each failure in a row up to
# SCAN_RETRY_MAX_SECONDS, instead of waiting for the whole scan interval.
SCAN_RETRY_SECONDS = env.int("SCAN_RETRY_SECONDS", default=120)
# Known vulnerabilities: the portal's own copy of the OSV database, one archive per ecosystem
# it sees ({ecosystem} is OSV's name: npm, PyPI, Maven, Go, crates.io, RubyGems, ...). Point
# OSV_URL at an internal mirror and nothing about the inventory leaves the building.
OSV_URL = env.str("OSV_URL", default="https://osv-vulnerabilities.storage.googleapis.com/{ecosystem}/all.zip")
OSV_REFRESH_HOURS = env.int("OSV_REFRESH_HOURS", default=24)
OSV_TIMEOUT = env.int("OSV_TIMEOUT", default=300)
OSV_MAX_MB = env.int("OSV_MAX_MB", default=1024)
SCAN_RETRY_MAX_SECONDS = env.int("SCAN_RETRY_MAX_SECONDS", default=3600)

# --- Scanners (the catalogue is common/scanners.py; implementations scanning/scanners.py) ----
# The dependency scanner reads manifests from a shallow git fetch of the head commit (git's
# 60,000/hour, one request per repository), bounded in size and time; a repository past the
# bound is read over REST instead (said once). false: always REST.
SCANNER_GIT_MANIFESTS = env.bool("SCANNER_GIT_MANIFESTS", default=True)
SCANNER_GIT_MAX_MB = env.int("SCANNER_GIT_MAX_MB", default=50)
SCANNER_GIT_TIMEOUT = env.int("SCANNER_GIT_TIMEOUT", default=60)
# How deep the dependency scanner lists a repository looking for manifests.
SCANNER_MAX_DEPTH = env.int("SCANNER_MAX_DEPTH", default=4)
# Posture: merges should need at least this many approvals.
POSTURE_MIN_APPROVALS = env.int("POSTURE_MIN_APPROVALS", default=1)
# Settings change without a push, so posture is re-read at least this often (hours).
POSTURE_MAX_AGE_HOURS = env.int("POSTURE_MAX_AGE_HOURS", default=168)

# The portal's address as Bitbucket reaches it (https://portal.example.com), for the webhooks
# it registers when pull-request scans are on. Empty: webhooks are not registered (a sync
# log entry says so).
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="")

# Seconds a web process keeps an integration's webhook secret in memory (a rotation or a
# deletion takes effect within this).
WEBHOOK_LOOKUP_TTL = env.float("WEBHOOK_LOOKUP_TTL", default=5.0)
# Refused (unsigned, wrongly signed) deliveries one address may send in a minute before it
# gets 429 without any database work; each cause is one counted sync log entry.
WEBHOOK_REFUSALS_PER_MINUTE = env.int("WEBHOOK_REFUSALS_PER_MINUTE", default=20)
# After a rotation, deliveries signed with the previous secret are accepted this long, while
# the portal updates the secret of every hook it registered in Bitbucket.
WEBHOOK_SECRET_GRACE_MINUTES = env.int("WEBHOOK_SECRET_GRACE_MINUTES", default=60)

# --- Deletion of integration subtrees ------------------------------------------------
INTEGRATION_PURGE_CHUNK = env.int("INTEGRATION_PURGE_CHUNK", default=2500)

# --- Task queue (django-q2) ----------------------------------------------------------
# Chosen deliberately (a system check enforces the invariants):
# * timeout < retry, so a task is never handed to a second worker while the first
#   still runs it;
# * finite max_attempts, so a poison task does not loop forever;
# * catch_up off, so a cluster that was down does not fire every missed schedule;
# * ack_failures on, so failed tasks leave the queue and are recorded once.
Q_CLUSTER = {
    "name": "portal",
    "workers": env.int("Q_WORKERS", default=2),
    "recycle": 200,
    "timeout": env.int("Q_TIMEOUT", default=1800),
    "retry": env.int("Q_RETRY", default=2100),
    "max_attempts": env.int("Q_MAX_ATTEMPTS", default=3),
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "queue_limit": 50,
    "poll": 1,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
