"""Shared fixtures: named people, contenders on the real model, and real
processes (a Celery worker, a daphne server) pointed at the test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from arena.events import MAX_FRAME_CHARS
from arena.visitors import visitor_new
from inference.models import Contender, Engine
from tests.workers import worker_argv

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("ARENA_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
ON_SERVICES = bool(settings.REDIS_URL) and settings.DATABASES["default"]["ENGINE"].endswith(
    "postgresql"
)

# A few tokens keep real-model generations well under a second.
TINY = {"temperature": 0.0, "max_tokens": 6}


@pytest.fixture(scope="session", autouse=True)
def _no_stale_cancel_flags() -> None:
    """Stop flags are keyed by answer id and live 10 minutes; each test
    database numbers answers from 1 again, so a run minutes after another
    would find its flags and stop answers at once."""
    if not settings.REDIS_URL:
        return
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        # So are the per-network daily vote counts: keyed by the test
        # addresses, they would add up over the day's runs.
        for pattern in ("arena:cancel:*", "arena:rate:day:*"):
            keys = list(client.scan_iter(pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _votes_counted_before_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """A vote is handed to ratings after its commit, by a task the Celery
    worker runs: a test that ends right after a vote must let that task finish
    before the database is flushed, or the flush's TRUNCATE and the task's
    reads deadlock. Set up after the database fixture, so torn down before it."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or (
        marker is not None and marker.kwargs.get("transaction", False)
    )
    if not ON_SERVICES or not transactional:
        yield
        return
    request.getfixturevalue("_django_db_helper" if marker else "transactional_db")
    yield
    from arena.models import Vote  # after the database fixture, like the test's own

    pending = Vote.objects.filter(source="arena", battle__isnull=False, style__isnull=True)
    deadline = time.monotonic() + 15.0
    while pending.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # the task's refresh check, after its annotation


@pytest.fixture(autouse=True)
def _generous_rate_limits(settings: object) -> None:
    """Tests act faster than people; the rate-limit tests set their own limits."""
    from arena.ratelimit import counter, daily_counter

    settings.ARENA_RATE_LIMITS = {}  # type: ignore[attr-defined]
    counter.cache_clear()
    daily_counter.cache_clear()
    # The reaper's loop would outlive each test's event loop; fault tests turn it on.
    settings.ARENA_REAPER = False  # type: ignore[attr-defined]
    settings.ARENA_HEALTH_MONITOR = False  # type: ignore[attr-defined]
    # Nor may the embedded beat refresh boards mid-test; tests/arena/test_beat.py turns it on.
    settings.ARENA_BEAT = False  # type: ignore[attr-defined]


@pytest.fixture
def alpha(db: None) -> Contender:
    return Contender.objects.create(
        name="alpha", engine=Engine.LOCAL, system_prompt="You are terse.", params=TINY
    )


@pytest.fixture
def beta(db: None) -> Contender:
    return Contender.objects.create(name="beta", engine=Engine.LOCAL, params=TINY)


@pytest.fixture
def contenders(alpha: Contender, beta: Contender) -> list[Contender]:
    return [alpha, beta]


@pytest.fixture
def alice(db: None) -> str:
    """Alice's visitor id: a visitor who opened the page (its signed cookie
    is what tests/arena/wsclient.py sends)."""
    return visitor_new()


@pytest.fixture
def mallory(db: None) -> str:
    """Mallory's visitor id: another visitor, who should not touch Alice's battles."""
    return visitor_new()


# --- real processes -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_database_url() -> str:
    """The URL of the database pytest-django created, for child processes."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DATABASE_URL=child_database_url(),
        ARENA_DATA_DIR=str(settings.ARENA_DATA_DIR),
        PYTHONUNBUFFERED="1",
    )
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra)
    return env


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_path.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.log_path.name} did not show {needle!r}:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None, django_db_blocker: object) -> Iterator[Process]:
    """A real Celery worker process on the Redis broker, with the real model."""
    if settings.ARENA_TASKS != "celery":
        pytest.skip("generation runs in threads here (no REDIS_URL)")
    worker = Process(
        "celery-worker",
        worker_argv(
            queues="generation,generation-http,default,ratings", concurrency=4, name="test"
        ),
        child_env(),
    )
    worker.wait_for_log("ready.", timeout=120)
    yield worker
    worker.stop()


@pytest.fixture
def generation(request: pytest.FixtureRequest) -> None:
    """Whatever runs generations in this configuration: a Celery worker on
    Redis, or (embedded default) threads of this process."""
    if settings.ARENA_TASKS == "celery":
        request.getfixturevalue("celery_worker")


# As `make run` starts daphne: frames over the app's cap are refused by the server.
DAPHNE_WS_LIMITS = [
    "--websocket-max-message-size",
    str(MAX_FRAME_CHARS),
    "--websocket-max-frame-size",
    str(MAX_FRAME_CHARS),
]


def daphne_start(name: str, env: dict[str, str]) -> tuple[Process, str]:
    """A daphne process on a free port, started as `make run` starts it (the
    websocket frame limits), once it listens; the process and its URL."""
    port = free_port()
    server = Process(
        name,
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            *DAPHNE_WS_LIMITS,
            "arena.asgi:application",
        ],
        env,
    )
    server.wait_for_log("Listening on TCP address", timeout=120)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def live_server_process(django_db_setup: None, request: pytest.FixtureRequest) -> Iterator[str]:
    """A real daphne server on the test database; its URL. Generation goes to
    the Celery worker when Redis is configured, else to daphne's own threads."""
    if settings.ARENA_TASKS == "celery":
        request.getfixturevalue("celery_worker")
    server, url = daphne_start("daphne", child_env())
    yield url
    server.stop()
