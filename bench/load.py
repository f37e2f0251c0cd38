"""Load: N concurrent battles through the real stack, tokens at a fixed rate.

    .venv/bin/python bench/load.py --battles 200 [--rate 20] [--tokens 60] [--workers 2] [--ramp S]
    .venv/bin/python bench/load.py --sweep [--sizes 5,10,15,20,25,50,100,200,300,400]
        [--server daphne|uvicorn] [--web-workers 1]

Starts everything on loopback: a scratch PostgreSQL database
(arena_bench_load_<pid> on the server of DATABASE_URL, default
postgres://postgres@127.0.0.1:5432; dropped at the end), Redis database 11
of REDIS_URL's server (never 0; flushed first and at the end), the token
server (bench/tokenserver.py: every answer is `--tokens` tokens at `--rate`
tokens/s), the ASGI server (`--server`: daphne, or uvicorn as docker/compose.yml
runs it; `--web-workers` processes on one listening socket), and `--workers`
Celery workers on the HTTP-engine queue, each with a thread for every one
of the 2 x N streams. It registers an endpoint
on the token server and two contenders, then plays N battles at once, as
many browsers would: GET / for the visitor cookie, a websocket, battle.start
(anonymous: the pair is drawn by the product), `--opening` visitors at a
time; then, once every battle is open, they send message.send spread evenly
over the ramp-up (`--ramp`, by default a third of an answer's duration and
at most 5 s, so every battle streams at once before the first ends; 0: all
N together, a thundering herd), read the deltas until both answers are
done (a gap in the deltas asks for battle.resume, as the page does), vote,
and wait for vote.recorded. Rate
limits are off in the servers (ARENA_RATE_LIMITS=""), and so is the cap on a
network's answers in flight (every simulated visitor comes from 127.0.0.1). One unmeasured battle
warms the fresh processes first.

Reports: battles and votes completed; votes lost (acknowledged with
vote.recorded but not in the database with that choice, plus votes sent and
never answered); tokens emitted (the token server's count) against tokens
delivered (reassembled from the gen.delta frames by offset); the added
latency engine -> client of each token (the token's text carries the time
the token server wrote it; the client takes the time it read the frame, same
clock); CPU (% of one core, over the playing time, and CPU ms per token
emitted, which a busy machine disturbs less than latency) and peak RSS of the
web server, the workers, the token server and this client (the harness runs
on uvloop when it is installed, to leave the CPU to the stack). Targets
(issue 7): 0 lost votes, delivered/emitted >= 0.999, added latency p99 < 100 ms. The product
coalesces tokens for up to ARENA_DELTA_INTERVAL_MS (default 40) into one
delta by design, so that much of the latency is intended. `--sweep` raises N
until a target breaks and names the breaking point. Every wait is bounded;
the script cleans up after itself. Logs: var/bench-load/.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.events import MAX_FRAME_CHARS  # noqa: E402
from bench.tokenserver import MODEL, percentile, run, tokens_parse  # noqa: E402
from tests.workers import worker_argv  # noqa: E402

PROMPT = "Say something for the load benchmark."
CHOICES = ("a", "b", "tie", "both_bad")
SIZES = (5, 10, 15, 20, 25, 50, 100, 200, 300, 400, 600, 800)
LATENCY_TARGET_MS = 100.0
RATIO_TARGET = 0.999
PROGRESS_SECONDS = 2.0
WINDOW_SECONDS = 1.0  # the latency's p99 is also reported per this much emission time
RAMP_SECONDS = 5.0  # the longest default ramp-up (LoadConfig.ramp_seconds)
LATE_SECONDS = 5.0  # after the vote's acknowledgement, for frames still on their way
LOCK_KEY = "arena-bench-load:lock"
INBOX_KEYS = "asgispecific.*"  # channels_redis: prefix "asgi" + the process's channel prefix
LOCK_SECONDS = 6 * 3600  # outlives any run; a crashed run's lock expires
# uvicorn as docker/compose.yml runs it: uvloop, httptools, the websockets
# library; no per-message deflate (a delta is ~150 bytes: compressing each one
# costs more CPU than it saves on the wire); X-Forwarded-For left to the
# product (ARENA_TRUSTED_PROXIES), as under daphne.
UVICORN_ARGS = [
    "arena.asgi:application", "--loop", "uvloop", "--http", "httptools", "--ws", "websockets",
    "--ws-per-message-deflate", "false", "--ws-max-size", str(MAX_FRAME_CHARS),
    "--lifespan", "off", "--no-access-log", "--no-proxy-headers",
]  # fmt: skip
# As `make run`: the server refuses frames over the app's cap before buffering them.
DAPHNE_WS_ARGS = [
    "--websocket-max-message-size", str(MAX_FRAME_CHARS),
    "--websocket-max-frame-size", str(MAX_FRAME_CHARS),
]  # fmt: skip


def log(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True)
class LoadConfig:
    rate: float = 20.0  # tokens/s per stream
    tokens: int = 60  # tokens per answer
    workers: int = 2  # Celery worker processes on the HTTP queue
    delta_ms: float = 40.0  # ARENA_DELTA_INTERVAL_MS of the servers
    pg_server: str = "postgres://postgres@127.0.0.1:5432"
    redis_url: str = "redis://127.0.0.1:6379/11"
    log_dir: Path = ROOT / "var" / "bench-load"
    setup_seconds: float = 120.0  # to open all battles
    slack_seconds: float = 60.0  # beyond the answers' own duration
    idle_seconds: float = 15.0  # end the run once no client has heard anything for this long
    opening: int = 20  # visitors opening the page (GET /, websocket, battle.start) at once
    server: str = "daphne"  # the ASGI server: daphne or uvicorn
    web_workers: int = 1  # web server processes, sharing one listening socket
    progress: bool = True
    warmup: bool = True  # one unmeasured battle before each run
    batch: bool = True  # the clients take batched frames (?batch=1), as the page does
    hub: bool = True  # ARENA_BATTLE_HUB of the web server
    gc_freeze: bool = True  # ARENA_GC_FREEZE of the web server and the workers
    ramp: float | None = None  # seconds over which the first messages are sent; None: default

    def ramp_seconds(self) -> float:
        """The first messages go out evenly over this many seconds, as
        visitors arrive (a ramp-up, as k6 and Locust have): by default a
        third of an answer's duration, at most RAMP_SECONDS, so that every
        battle is still streaming when the last one starts. 0: all at once."""
        if self.ramp is not None:
            return self.ramp
        return min(RAMP_SECONDS, self.tokens / self.rate / 3)


def pg_server_url(database_url: str | None) -> str:
    """The server part of a PostgreSQL URL (the database name dropped)."""
    parts = urlsplit(database_url or "postgres://postgres@127.0.0.1:5432/postgres")
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"DATABASE_URL is not a PostgreSQL URL: {parts.scheme}://...")
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def redis_bench_url(redis_url: str | None, db: int) -> str:
    """REDIS_URL's server with the benchmark's own database number."""
    if db == 0:
        raise SystemExit("the benchmark flushes its Redis database: pick one other than 0")
    parts = urlsplit(redis_url or "redis://127.0.0.1:6379/0")
    if parts.scheme not in ("redis", "rediss"):
        raise SystemExit(f"REDIS_URL must be redis:// or rediss:// here, not {parts.scheme}://")
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


# --- processes --------------------------------------------------------------


class Child:
    """A child process in its own process group, its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_dir: Path,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=pass_fds,
            )  # fmt: skip

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not show {pattern!r}:\n{self.text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with _gone():
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with _gone():
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class _gone:
    """Ignore a process that is already gone."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *args: object) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError | psutil.NoSuchProcess)


class Monitor:
    """CPU seconds and peak RSS of named groups of processes."""

    def __init__(self, groups: dict[str, list[int]], servers: tuple[str, ...] = ()) -> None:
        self.procs = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self.servers = servers  # groups whose child processes count too
        self.peak_rss: dict[str, float] = dict.fromkeys(groups, 0.0)
        self.cpu0: dict[str, float] = {}
        self.t0 = time.monotonic()

    def _cpu(self, name: str) -> float:
        total = 0.0
        for proc in self.procs[name]:
            with _gone():
                times = proc.cpu_times()
                total += times.user + times.system
                if name in self.servers:
                    # PostgreSQL's backends, once reaped: a backend still alive
                    # (a pooled connection) is not counted. Listing the live ones
                    # scans /proc, which would stall this process's event loop
                    # and show as latency.
                    total += times.children_user + times.children_system
        return total

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = {name: self._cpu(name) for name in self.procs}
        self.peak_rss = dict.fromkeys(self.procs, 0.0)
        self.sample()

    def sample(self) -> None:
        for name, procs in self.procs.items():
            rss = 0.0
            for proc in procs:
                with _gone():
                    rss += proc.memory_info().rss
            self.peak_rss[name] = max(self.peak_rss[name], rss / 2**20)

    def cpu_percent(self) -> dict[str, float]:
        """% of one core per group since begin()."""
        wall = max(time.monotonic() - self.t0, 1e-6)
        return {name: 100 * (self._cpu(name) - self.cpu0[name]) / wall for name in self.procs}


class Stack:
    """The real stack on loopback, for as long as the `with` block lasts."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.db = f"arena_bench_load_{os.getpid()}"
        self.children: list[Child] = []
        self.workers: list[Child] = []
        self.url = ""
        self.web: list[Child] = []
        self.listener: socket.socket | None = None
        self.token_url = ""
        self.data_dir = Path(tempfile.mkdtemp(prefix="arena-load-"))
        self.db_created = False
        self.locked = False

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- set-up --

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"{self.config.pg_server}/postgres", autocommit=True) as conn:
            conn.execute(sql)

    def db_url(self) -> str:
        return f"{self.config.pg_server}/{self.db}"

    def _env(self) -> dict[str, str]:
        drop = ("DATABASE_URL", "REDIS_URL", "ARENA_TASKS", "DJANGO_SETTINGS_MODULE")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k not in drop}
        env.update(
            DATABASE_URL=self.db_url(),
            REDIS_URL=self.config.redis_url,
            ARENA_DATA_DIR=str(self.data_dir),
            ARENA_RATE_LIMITS="",
            ARENA_ANSWERS_IN_FLIGHT_PER_IP="0",
            ARENA_PRELOAD="0",
            ARENA_LOG_LEVEL="WARNING",
            DJANGO_SETTINGS_MODULE=self._settings_module(),
            PYTHONPATH=os.pathsep.join([str(self.data_dir), str(ROOT)]),
            PYTHONUNBUFFERED="1",
        )
        env.setdefault("ARENA_MODEL_CACHE", str(ROOT / "var" / "models"))
        return env

    def _settings_module(self) -> str:
        """The servers' settings module: the project's, with this run's knobs
        on top (they are fixed settings, not environment variables)."""
        module = self.data_dir / "load_settings.py"
        module.write_text(
            "from arena.settings import *  # noqa: F403\n"
            f"ARENA_DELTA_INTERVAL_MS = {self.config.delta_ms!r}\n"
            f"ARENA_BATTLE_HUB = {self.config.hub!r}\n"
            f"ARENA_GC_FREEZE = {self.config.gc_freeze!r}\n"
        )
        return module.stem

    def _spawn(self, name: str, argv: list[str], pass_fds: tuple[int, ...] = ()) -> Child:
        child = Child(name, argv, self._env(), self.config.log_dir, pass_fds)
        self.children.append(child)
        return child

    def start(self) -> None:
        import redis

        config = self.config
        config.log_dir.mkdir(parents=True, exist_ok=True)
        server = redis.Redis.from_url(config.redis_url)
        # Two runs on one Redis database would flush and feed each other's queues.
        if not server.set(LOCK_KEY, os.getpid(), nx=True, ex=LOCK_SECONDS):
            raise RuntimeError(
                f"another load run (pid {server.get(LOCK_KEY)!r}) uses {config.redis_url}; "
                "wait for it or pick another --redis-db"
            )
        self.locked = True
        self._admin(f"CREATE DATABASE {self.db}")
        self.db_created = True
        server.flushdb()
        server.set(LOCK_KEY, os.getpid(), ex=LOCK_SECONDS)
        py = sys.executable
        env = self._env()
        subprocess.run(
            [py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300
        )
        rate, count = f"{config.rate:g}", str(config.tokens)
        tokens = self._spawn(
            "tokenserver", [py, "bench/tokenserver.py", "--rate", rate, "--tokens", count]
        )
        self.token_url = tokens.wait_for(r"listening on (http://\S+)", 30)[1]
        self._register(env)
        self._web_start()

    def _web_start(self) -> None:
        """The ASGI server: `web_workers` processes on one listening socket."""
        config, py = self.config, sys.executable
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
        port = self.listener.getsockname()[1]
        fd = self.listener.fileno()
        self.url = f"http://127.0.0.1:{port}"
        if config.server == "uvicorn":
            argv = [py, "-m", "uvicorn", *UVICORN_ARGS, "--fd", str(fd)]
            if config.web_workers > 1:
                argv += ["--workers", str(config.web_workers)]
            self.web = [self._spawn("web", argv, pass_fds=(fd,))]
        else:
            argv = [py, "-m", "daphne", "--fd", str(fd), *DAPHNE_WS_ARGS, "arena.asgi:application"]
            self.web = [
                self._spawn(f"web-{i}", argv, pass_fds=(fd,)) for i in range(config.web_workers)
            ]
        deadline = time.monotonic() + 120
        while not _answers(self.url + "/healthz"):
            dead = [web for web in self.web if web.proc.poll() is not None]
            if time.monotonic() > deadline or dead:
                web = (dead or self.web)[0]
                raise RuntimeError(f"{config.server} did not start:\n{web.text()[-3000:]}")
            time.sleep(0.2)
        if config.server == "uvicorn" and config.web_workers > 1:
            # Its worker processes are up once each has logged its start.
            self.web[0].wait_for(rf"(?s)(Started server process.*){{{config.web_workers}}}", 60)

    def _register(self, env: dict[str, str]) -> None:
        """The endpoint and two contenders, then the product's own health check."""
        script = f"""
from inference.health import endpoint_check
from inference.models import Contender, Endpoint
endpoint = Endpoint.objects.create(name="bench-tokens", kind="openai", base_url={self.token_url!r})
for name in ("bench-a", "bench-b"):
    Contender.objects.create(
        name=name, engine="openai", endpoint=endpoint, model={MODEL!r},
        params={{"max_tokens": {self.config.tokens}, "temperature": 0}},
    )
report = endpoint_check(endpoint=endpoint)
print("healthy" if report.healthy and all(ok for ok, _ in report.contenders.values())
      else f"unhealthy: {{report}}")
"""
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.stdout.strip().splitlines()[-1:] != ["healthy"]:
            raise RuntimeError(f"the token server failed the health check: {done.stdout}")

    def workers_start(self, streams: int) -> None:
        """`workers` threaded Celery workers, each with a thread for every
        stream: tasks are acknowledged on receipt, so a worker may take more
        than its share (docs/serving.md), and a stream waiting for a thread
        would measure that, not the streaming."""
        self.workers_stop()
        count = self.config.workers
        threads = streams + 2
        for i in range(count):
            worker = self._spawn(
                f"worker-{i}",
                worker_argv(
                    queues="generation-http,default",
                    concurrency=threads,
                    name=f"load-{i}",
                    extra=("--without-heartbeat",),
                ),
            )
            self.workers.append(worker)
        for worker in self.workers:
            worker.wait_for(r"ready\.", 120)

    def workers_stop(self) -> None:
        for worker in self.workers:
            worker.stop()
            self.children.remove(worker)
        self.workers = []

    def monitor(self) -> Monitor:
        by_name = {c.name: c.proc.pid for c in self.children}
        web = []
        for child in self.web:
            web.append(child.proc.pid)
            with _gone():
                web += [p.pid for p in psutil.Process(child.proc.pid).children(recursive=True)]
        return Monitor(
            {
                **_servers(
                    {
                        "postgres": urlsplit(self.config.pg_server).port or 5432,
                        "redis": urlsplit(self.config.redis_url).port or 6379,
                    }
                ),
                "web": web,
                "workers": [w.proc.pid for w in self.workers],
                "tokenserver": [by_name["tokenserver"]],
                "client": [os.getpid()],
            },
            servers=("postgres", "redis"),
        )

    def token_stats(self, reset: bool = False) -> dict[str, Any]:
        # http.client, not httpx: an httpx client builds an SSL context (tens of
        # ms holding the GIL) that would stall this process's event loop.
        parts = urlsplit(self.token_url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        try:
            for method, path in [("POST", "/bench/reset")] * reset + [("GET", "/bench/stats")]:
                conn.request(method, path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"token server {path}: HTTP {response.status}")
            return dict(json.loads(body))
        finally:
            conn.close()

    def inbox(self) -> int:
        """Messages waiting in the channel layer for daphne's sockets (channels_redis
        keeps them in one sorted set per process; above CHANNEL_LAYERS capacity,
        group_send drops them)."""
        import redis

        server = redis.Redis.from_url(self.config.redis_url)
        keys = [k for k in server.scan_iter(INBOX_KEYS, count=1000) if not k.endswith(b"$inflight")]
        sizes: list[Any] = [server.zcard(k) for k in keys]
        return max((int(size) for size in sizes), default=0)

    def db_connections(self) -> int:
        """Connections open to the scratch database now (max_connections is shared)."""
        import psycopg

        with psycopg.connect(f"{self.config.pg_server}/postgres", autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.db,)
            ).fetchone()
        return int(row[0]) if row else 0

    def db_sessions(self) -> int:
        """Sessions ever opened on the scratch database (PostgreSQL forks a
        backend for each: connection churn costs the server CPU)."""
        import psycopg

        with psycopg.connect(f"{self.config.pg_server}/postgres", autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.db,)
            ).fetchone()
        return int(row[0]) if row else 0

    def dropped(self) -> int:
        """group_send calls the workers' channel layer refused as over capacity."""
        return sum(w.text().count("channels over capacity") for w in self.workers)

    def votes_in_db(self, battle_ids: list[str]) -> dict[str, str]:
        import psycopg

        ids = [uuid.UUID(b) for b in battle_ids]
        with psycopg.connect(self.db_url()) as conn:
            rows = conn.execute(
                "SELECT battle_id, choice FROM arena_vote WHERE battle_id = ANY(%s)", (ids,)
            ).fetchall()
        return {str(battle): str(choice) for battle, choice in rows}

    # -- the run --

    def run(self, battles: int) -> Report:
        """Play `battles` battles at once on fresh workers; the figures."""
        self.workers_start(2 * battles)
        try:
            report = run(_play(self, battles))
            report.dropped = self.dropped()
            return report
        finally:
            self.workers_stop()

    # -- tear-down --

    def close(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # go on cleaning up the others
                log(f"  could not stop {child.name}: {exc}")
        self.children, self.workers, self.web = [], [], []
        if self.listener is not None:
            self.listener.close()
        if self.db_created:
            try:
                self._admin(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
            except Exception as exc:
                log(f"  could not drop database {self.db}: {exc}")
        if self.locked:
            try:
                import redis

                redis.Redis.from_url(self.config.redis_url).flushdb()  # the lock too
            except Exception as exc:
                log(f"  could not flush {self.config.redis_url}: {exc}")
        for path in sorted(self.data_dir.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        self.data_dir.rmdir()


def _servers(ports: dict[str, int]) -> dict[str, list[int]]:
    """The PostgreSQL postmaster and redis-server listening on these ports, if
    they can be seen (shared with whatever else uses them: quiet-machine figures)."""
    found: dict[str, list[int]] = {}
    for proc in psutil.process_iter(["name", "ppid"]):
        if proc.info["name"] not in ("postgres", "postmaster", "redis-server"):
            continue
        with _gone():
            listening = {c.laddr.port for c in proc.net_connections("inet") if c.status == "LISTEN"}
            for name, port in ports.items():
                if port in listening:
                    found.setdefault(name, []).append(proc.pid)
    return found


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, trust_env=False, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- one battle, as a browser plays it --------------------------------------


@dataclass
class Answer:
    text: str = ""  # reassembled from the deltas, by offset
    arrivals: list[tuple[int, float]] = field(default_factory=list)  # (end offset, time read)
    next_seq: int = 0
    disorder: int = 0  # deltas out of sequence, with a gap or overlapping text
    final: str | None = None  # gen.done's text
    error: str = ""
    finished_by_resync: bool = False  # its gen.done/gen.error never came


@dataclass
class Battle:
    index: int
    id: str = ""
    stage: str = "opening"
    failure: str = ""
    answers: dict[str, Answer] = field(default_factory=lambda: {"a": Answer(), "b": Answer()})
    vote: str = ""  # the choice sent
    acked: bool = False
    refused: str = ""
    resync_asked: bool = False
    resyncs: int = 0
    backlog: deque[dict[str, Any]] = field(default_factory=deque)  # events of a batched frame

    def latencies(self) -> list[tuple[float, float]]:
        """(emitted at, seconds from emission to the client reading it), per token."""
        out = []
        for answer in self.answers.values():
            ends = [end for end, _ in answer.arrivals]
            for _, emitted, end in tokens_parse(answer.text):
                i = bisect.bisect_left(ends, end)
                if i < len(ends):
                    out.append((emitted, answer.arrivals[i][1] - emitted))
        return out

    def delivered(self) -> int:
        return sum(len({i for i, _, _ in tokens_parse(a.text)}) for a in self.answers.values())


class Tally:
    """Live counters for the progress line."""

    def __init__(self, battles: int, opening: int = 1) -> None:
        self.battles = battles
        # Visitors open the page a few at a time: N page loads in the same
        # instant would measure the connection limit, not the streaming.
        self.opening = asyncio.Semaphore(opening)
        self.ready = 0
        self.answers_done = 0
        self.votes_acked = 0
        self.tokens = 0
        self.resyncs = 0
        self.frames = 0  # websocket frames read
        self.events = 0  # events in them
        self.peak_inbox = 0
        self.peak_db = 0
        self.busy_cpu: dict[str, float] = {}  # CPU figures when a frame was last heard
        self.heard = time.monotonic()  # when any client last read a frame
        self.go = asyncio.Event()

    def opened(self) -> None:
        self.ready += 1
        if self.ready >= self.battles:
            self.go.set()


async def _next(ws: Any, battle: Battle, tally: Tally) -> dict[str, Any]:
    """The next event: a frame holds one, or (batched) a JSON array of them."""
    if not battle.backlog:
        data = json.loads(await ws.recv())
        tally.heard = time.monotonic()
        tally.frames += 1
        battle.backlog.extend(data if isinstance(data, list) else [data])
    event = battle.backlog.popleft()
    tally.events += 1
    if not isinstance(event, dict):
        raise RuntimeError(f"not an event: {event!r}")
    return event


async def _battle_open(url: str, battle: Battle, tally: Tally, batch: bool) -> Any:
    """GET / for the visitor cookie, the websocket, battle.start: the open socket."""
    from websockets.asyncio.client import connect

    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as http:
        page = await http.get("/")
        page.raise_for_status()
        session = page.cookies.get("arena_visitor")
    if not session:
        raise RuntimeError("GET / set no arena_visitor cookie")
    battle.stage = "connecting"
    ws = await connect(
        "ws://" + url.removeprefix("http://") + "/ws/battle/" + ("?batch=1" if batch else ""),
        additional_headers={"Cookie": f"arena_visitor={session}", "Origin": url},
        proxy=None, open_timeout=60, ping_interval=None, max_size=2**22,
    )  # fmt: skip
    try:
        battle.stage = "starting"
        await ws.send(json.dumps({"type": "battle.start", "mode": "anonymous"}))
        while not battle.id:
            event = await _next(ws, battle, tally)
            if event["type"] == "error":
                raise RuntimeError(f"battle.start refused: {event.get('code')}")
            if event["type"] == "battle.state":
                battle.id = event["battle"]["id"]
    except BaseException:
        await ws.close()
        raise
    return ws


async def battle_play(
    url: str, battle: Battle, tally: Tally, batch: bool = True, delay: float = 0.0
) -> None:
    """One visitor's whole battle; records how far it got in `battle`. Its
    first message goes `delay` seconds after every battle is open."""
    async with tally.opening:
        ws = await _battle_open(url, battle, tally, batch)
    async with ws:
        battle.stage = "waiting"
        tally.opened()
        await tally.go.wait()
        if delay > 0:
            await asyncio.sleep(delay)
        battle.stage = "generating"
        await ws.send(json.dumps({"type": "message.send", "text": PROMPT}))
        await _battle_read(ws, battle, tally)


async def _battle_read(ws: Any, battle: Battle, tally: Tally) -> None:
    """Reads the answers, votes once both are finished, and waits for the
    acknowledgement, handling every event as it comes, as the page does: a
    gap in the deltas asks for the saved state (battle.resume), which may show
    the answers finished before their own gen.done arrives. Tokens count as
    delivered only if they came in deltas; once the vote is acknowledged,
    frames still on their way get LATE_SECONDS to arrive."""
    finished: set[str] = set()
    done_frames: set[str] = set()
    acked_at: float | None = None
    while acked_at is None or len(done_frames) < 2:
        if acked_at is None:
            event = await _next(ws, battle, tally)
        else:
            try:
                left = acked_at + LATE_SECONDS - time.monotonic()
                event = await asyncio.wait_for(_next(ws, battle, tally), max(left, 0.0))
            except TimeoutError:
                return
        now = time.time()
        kind = event["type"]
        if kind == "battle.state":
            battle.resync_asked = False
            _state_apply(battle, event, finished, tally)
        elif kind == "vote.recorded":
            battle.acked = event.get("choice") == battle.vote
            tally.votes_acked += 1
            battle.stage = "voted"
            acked_at = time.monotonic()
        elif kind == "error":
            if battle.stage != "voting":
                raise RuntimeError(f"refused while {battle.stage}: {event.get('code')}")
            battle.refused = str(event.get("code"))
            battle.failure = f"vote refused: {battle.refused}"
            return
        elif kind in ("gen.delta", "gen.done", "gen.error"):
            await _gen_apply(ws, battle, event, tally, finished, done_frames, now)
        if battle.stage == "generating" and len(finished) == 2 and not await _vote_send(ws, battle):
            return


async def _gen_apply(
    ws: Any,
    battle: Battle,
    event: dict[str, Any],
    tally: Tally,
    finished: set[str],
    done_frames: set[str],
    now: float,
) -> None:
    """One gen.* frame: a delta past the text shown asks for the saved state
    (once until it comes); a gen.done or gen.error finishes its side."""
    side = event["side"]
    answer = battle.answers[side]
    if event["type"] == "gen.delta":
        if int(event["offset"]) > len(answer.text) and not battle.resync_asked:
            battle.resync_asked = True
            battle.resyncs += 1
            tally.resyncs += 1
            await ws.send(json.dumps({"type": "battle.resume", "battle": battle.id}))
        _delta_apply(answer, event, now)
        tally.tokens += event["text"].count("⟩")
        return
    done_frames.add(side)
    if event["type"] == "gen.done":
        answer.final = event["text"]
    else:
        answer.error = str(event.get("code"))
    if side not in finished:
        finished.add(side)
        tally.answers_done += 1


async def _vote_send(ws: Any, battle: Battle) -> bool:
    """Both answers finished: vote, unless one failed, which fails the battle
    (False)."""
    errors = [f"{s}:{a.error}" for s, a in battle.answers.items() if a.error]
    if errors:
        battle.failure = "gen.error " + ",".join(errors)
        return False
    battle.stage = "voting"
    battle.vote = CHOICES[battle.index % len(CHOICES)]
    await ws.send(json.dumps({"type": "vote", "choice": battle.vote}))
    return True


def _state_apply(battle: Battle, event: dict[str, Any], finished: set[str], tally: Tally) -> None:
    """What a resync tells: answers the page now shows as finished."""
    turns = event.get("turns") or []
    if not turns:
        return
    for side in ("a", "b"):
        state = turns[-1].get(side) or {}
        if side in finished or state.get("status") not in ("done", "stopped", "error"):
            continue
        finished.add(side)
        tally.answers_done += 1
        battle.answers[side].finished_by_resync = True
        if state["status"] == "error":
            battle.answers[side].error = str((state.get("error") or {}).get("code"))


def _delta_apply(answer: Answer, event: dict[str, Any], now: float) -> None:
    offset, text = int(event["offset"]), str(event["text"])
    if event["seq"] != answer.next_seq or offset != len(answer.text):
        answer.disorder += 1
    answer.next_seq = int(event["seq"]) + 1
    if offset == len(answer.text):
        answer.text += text  # the usual case: this client's CPU is taken from the stack's
    elif offset < len(answer.text):
        answer.text = answer.text[:offset] + text + answer.text[offset + len(text) :]
    else:
        answer.text += text  # a gap: keep the tokens, the count shows what is missing
    bisect.insort(answer.arrivals, (offset + len(text), now))


# --- a run: N battles, the figures ------------------------------------------


@dataclass
class Report:
    battles: int
    voted: int = 0  # battles whose vote was acknowledged
    failures: Counter[str] = field(default_factory=Counter)
    votes_sent: int = 0
    votes_acked: int = 0
    votes_refused: int = 0
    votes_in_db: int = 0
    votes_missing: int = 0  # acknowledged, not in the database with that choice
    votes_unanswered: int = 0  # sent, neither acknowledged nor refused
    tokens_emitted: int = 0
    tokens_delivered: int = 0
    answers_mismatched: int = 0  # reassembled deltas differ from gen.done's text
    deltas_disordered: int = 0
    resyncs: int = 0  # battle.resume sent on a gap, as the page does
    answers_resynced: int = 0  # seen finished only through a resync
    dropped: int = 0  # group_send messages the channel layer dropped (workers' logs)
    peak_inbox: int = 0  # most messages waiting for daphne in the channel layer
    frames: int = 0  # websocket frames the clients read
    events: int = 0  # events in them (more than frames when batched)
    peak_db: int = 0  # most connections to the scratch database (sampled every 0.5 s)
    db_sessions: int = 0  # connections opened to it while playing
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_windows: list[tuple[float, int]] = field(default_factory=list)  # (p99 ms, tokens)
    peak_streams: int = 0
    server_lag_p99_ms: float = float("nan")
    cpu_percent: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    setup_seconds: float = 0.0
    wall_seconds: float = 0.0
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def votes_lost(self) -> int:
        return self.votes_missing + self.votes_unanswered

    @property
    def ratio(self) -> float:
        return self.tokens_delivered / self.tokens_emitted if self.tokens_emitted else 0.0

    def broken(self) -> list[str]:
        """The targets this run missed."""
        out = []
        if self.votes_lost:
            out.append(f"{self.votes_lost} votes lost")
        if self.voted < self.battles:
            out.append(f"{self.battles - self.voted} battles not completed")
        if self.ratio < RATIO_TARGET:
            out.append(f"delivered/emitted {self.ratio:.4f} < {RATIO_TARGET}")
        if not self.latency_ms.get("p99", math.inf) < LATENCY_TARGET_MS:
            out.append(f"latency p99 {self.latency_ms.get('p99', math.nan):.0f} ms >= 100 ms")
        return out


async def _play(stack: Stack, n: int) -> Report:
    config = stack.config
    tally = Tally(n, config.opening)
    battles = [Battle(i) for i in range(n)]
    monitor = stack.monitor()
    if config.warmup:
        # Fresh processes pay for lazy loads on their first battle (daphne loads
        # the language detector at its first vote, ~0.5 s holding the GIL):
        # one battle first, so the figures are the steady state.
        warm = Battle(-1)
        await _bounded(stack.url, warm, Tally(1), config)
        if warm.failure:
            log(f"  warm-up battle failed: {warm.failure}")
    await asyncio.to_thread(stack.token_stats, True)
    started = time.monotonic()
    stream_seconds = config.ramp_seconds() + config.tokens / config.rate
    tasks = [asyncio.create_task(_bounded(stack.url, b, tally, config)) for b in battles]
    progress = asyncio.create_task(_watch(stack, tally, monitor, n, started))
    try:
        await asyncio.wait_for(tally.go.wait(), config.setup_seconds)
    except TimeoutError:
        log(f"  only {tally.ready}/{n} battles open after {config.setup_seconds:g} s; going on")
        tally.go.set()
    setup = time.monotonic() - started
    sessions = await asyncio.to_thread(stack.db_sessions)
    monitor.begin()
    played = time.monotonic()
    if await _settle(tasks, tally, played + stream_seconds, config):
        wall, cpu = time.monotonic() - played, monitor.cpu_percent()
    elif tally.heard > played and tally.busy_cpu:
        # The figures up to the last frame heard, not the idle wait after it.
        wall, cpu = tally.heard - played, tally.busy_cpu
    else:
        wall, cpu = time.monotonic() - played, monitor.cpu_percent()
    progress.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, progress, return_exceptions=True)
    # Streams of failed battles may still run: let them end so the count is whole.
    stats = await asyncio.to_thread(stack.token_stats)
    for _ in range(50):
        if stats["active"] == 0:
            break
        await asyncio.sleep(0.2)
        stats = await asyncio.to_thread(stack.token_stats)
    in_db = await asyncio.to_thread(stack.votes_in_db, [b.id for b in battles if b.id])
    report = _report(battles, stats, in_db, monitor, cpu, setup, wall)
    report.peak_inbox = tally.peak_inbox
    report.frames, report.events = tally.frames, tally.events
    report.peak_db = tally.peak_db
    # PostgreSQL's statistics reach pg_stat_database with a delay of up to a second.
    await asyncio.sleep(1.5)
    report.db_sessions = await asyncio.to_thread(stack.db_sessions) - sessions
    return report


async def _settle(
    tasks: list[asyncio.Task[None]], tally: Tally, streams_end: float, config: LoadConfig
) -> bool:
    """Until every battle is over (True), or nothing has been heard for
    idle_seconds after the answers should have ended, or slack_seconds after that."""
    deadline = streams_end + config.slack_seconds
    while not all(t.done() for t in tasks):
        await asyncio.wait(tasks, timeout=0.5)
        now = time.monotonic()
        if now > deadline:
            log(f"  {config.slack_seconds:g} s past the answers' end: ending the run")
            return False
        if now > streams_end and now - tally.heard > config.idle_seconds:
            log(f"  nothing heard for {config.idle_seconds:g} s: ending the run")
            return False
    return True


async def _bounded(url: str, battle: Battle, tally: Tally, config: LoadConfig) -> None:
    ramp = config.ramp_seconds()
    limit = config.setup_seconds + ramp + config.tokens / config.rate + config.slack_seconds
    delay = ramp * max(battle.index, 0) / tally.battles
    try:
        await asyncio.wait_for(battle_play(url, battle, tally, config.batch, delay), limit)
    except TimeoutError:
        battle.failure = f"timed out while {battle.stage}"
    except Exception as exc:
        battle.failure = f"{type(exc).__name__} while {battle.stage}: {str(exc)[:80]}"
    finally:
        if battle.stage in ("opening", "connecting", "starting"):
            tally.opened()  # do not hold the others back


async def _watch(stack: Stack, tally: Tally, monitor: Monitor, n: int, started: float) -> None:
    """Samples memory and daphne's inbox; prints a progress line now and then."""
    printed = heard = time.monotonic()
    failed = False
    while True:
        await asyncio.sleep(0.5)
        try:
            monitor.sample()
            if monitor.cpu0 and tally.heard > max(heard, monitor.t0):
                heard, tally.busy_cpu = tally.heard, monitor.cpu_percent()
            inbox = await asyncio.to_thread(stack.inbox)
            tally.peak_inbox = max(tally.peak_inbox, inbox)
            tally.peak_db = max(tally.peak_db, await asyncio.to_thread(stack.db_connections))
            if not stack.config.progress or time.monotonic() - printed < PROGRESS_SECONDS:
                continue
            printed = time.monotonic()
            stats = await asyncio.to_thread(stack.token_stats)
        except Exception as exc:  # a sample missed is no reason to stop the run
            if not failed:
                log(f"  (sampling failed, going on: {type(exc).__name__}: {str(exc)[:100]})")
            failed = True
            continue
        cpu = monitor.cpu_percent() if monitor.cpu0 else {}
        load = " ".join(f"{k} {v:.0f}%" for k, v in cpu.items())
        log(
            f"  [N={n} {printed - started:5.1f} s] open {tally.ready}/{n}, "
            f"streams {stats['active']}, answers {tally.answers_done}/{2 * n}, "
            f"votes {tally.votes_acked}/{n}, tokens {tally.tokens}/{stats['tokens_emitted']}, "
            f"web inbox {inbox}" + (f", cpu {load}" if load else "")
        )


def _report(
    battles: list[Battle],
    stats: dict[str, Any],
    in_db: dict[str, str],
    monitor: Monitor,
    cpu: dict[str, float],
    setup: float,
    wall: float,
) -> Report:
    monitor.sample()
    report = Report(battles=len(battles), setup_seconds=setup, wall_seconds=wall)
    timed: list[tuple[float, float]] = []
    for b in battles:
        timed.extend(b.latencies())
        report.tokens_delivered += b.delivered()
        report.resyncs += b.resyncs
        for answer in b.answers.values():
            report.deltas_disordered += answer.disorder
            report.answers_resynced += answer.finished_by_resync
            if answer.final is not None and answer.final != answer.text:
                report.answers_mismatched += 1
        if b.failure:
            report.failures[re.sub(r"[0-9a-f-]{36}", "<id>", b.failure)] += 1
        if b.vote:
            report.votes_sent += 1
            if b.acked:
                report.votes_acked += 1
                report.voted += 1
                if in_db.get(b.id) != b.vote:
                    report.votes_missing += 1
            elif b.refused:
                report.votes_refused += 1
            else:
                report.votes_unanswered += 1
    report.votes_in_db = len(in_db)
    report.tokens_emitted = int(stats["tokens_emitted"])
    report.peak_streams = int(stats["peak_active"])
    report.server_lag_p99_ms = float(stats["lag_ms_p99"])
    latencies = [lat for _, lat in timed]
    report.latency_windows = _latency_windows(timed)
    report.latency_ms = {
        "p50": percentile(latencies, 0.5) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "max": max(latencies, default=math.nan) * 1000,
    }
    report.cpu_percent = cpu
    report.peak_rss_mb = dict(monitor.peak_rss)
    report.loadavg = os.getloadavg()
    return report


def _latency_windows(timed: list[tuple[float, float]]) -> list[tuple[float, int]]:
    """The added latency's p99 and token count per WINDOW_SECONDS of emission
    time, from the first token on: where in a run the tail comes from (the
    streams' start, their steady state, their end and the votes)."""
    if not timed:
        return []
    first = min(emitted for emitted, _ in timed)
    windows: dict[int, list[float]] = {}
    for emitted, lat in timed:
        windows.setdefault(int((emitted - first) / WINDOW_SECONDS), []).append(lat)
    return [
        (percentile(windows[i], 0.99) * 1000, len(windows[i])) if i in windows else (math.nan, 0)
        for i in range(max(windows) + 1)
    ]


def report_print(report: Report, config: LoadConfig) -> None:
    r = report
    log(
        f"  battles {r.battles}: voted {r.voted}; votes sent {r.votes_sent}, acknowledged "
        f"{r.votes_acked}, refused {r.votes_refused}, in the database {r.votes_in_db}; "
        f"LOST {r.votes_lost} (acknowledged but missing {r.votes_missing}, "
        f"unanswered {r.votes_unanswered})"
    )
    for why, count in r.failures.most_common(5):
        log(f"  failed: {count} x {why}")
    log(
        f"  tokens emitted {r.tokens_emitted}, delivered {r.tokens_delivered} "
        f"(ratio {r.ratio:.4f}); answers whose deltas differ from gen.done "
        f"{r.answers_mismatched}; deltas out of order {r.deltas_disordered}; "
        f"peak concurrent streams {r.peak_streams} (token server lag p99 "
        f"{r.server_lag_p99_ms:.1f} ms)"
    )
    log(
        f"  channel layer: peak web inbox {r.peak_inbox} messages, {r.dropped} dropped "
        f"over capacity; resyncs after a gap {r.resyncs}, answers seen finished only "
        f"through a resync {r.answers_resynced}"
    )
    if r.frames:
        log(
            f"  websocket: {r.events} events in {r.frames} frames "
            f"({r.events / r.frames:.2f} events per frame)"
        )
    lat = r.latency_ms
    log(
        f"  added latency engine -> client: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
        f"max {lat['max']:.1f} ms (coalescing window {config.delta_ms:g} ms by design)"
    )
    if r.latency_windows:
        log(
            f"  p99 per {WINDOW_SECONDS:g} s of emission (ms): "
            + " ".join("-" if count == 0 else f"{p99:.0f}" for p99, count in r.latency_windows)
        )
    log(
        "  cpu (% of one core) "
        + ", ".join(f"{k} {v:.0f}%" for k, v in r.cpu_percent.items())
        + "; peak RSS "
        + ", ".join(f"{k} {v:.0f} MB" for k, v in r.peak_rss_mb.items())
        + f"; PostgreSQL connections at most {r.peak_db}, {r.db_sessions} opened while playing"
    )
    if r.tokens_emitted:
        # CPU time per token: steadier than latency on a shared machine.
        per_token = {
            k: 10 * v * r.wall_seconds / r.tokens_emitted for k, v in r.cpu_percent.items()
        }
        log(
            "  cpu ms per token (all work while playing / tokens emitted) "
            + ", ".join(f"{k} {v:.3f}" for k, v in per_token.items())
            + f"; total {sum(per_token.values()):.3f}"
        )
        # What N streams at the configured rate would need at that cost, against
        # the cores there are: past 100% the tokens queue and latency grows.
        demand = 2 * r.battles * config.rate * sum(per_token.values()) / 1000
        log(
            f"  CPU demand at {2 * r.battles} streams x {config.rate:g} tokens/s: "
            f"{demand:.2f} cores of {os.cpu_count()} ({100 * demand / (os.cpu_count() or 1):.0f}%)"
        )
    log(
        f"  wall {r.wall_seconds:.1f} s playing (+{r.setup_seconds:.1f} s opening); "
        f"load average {r.loadavg[0]:.2f} {r.loadavg[1]:.2f} {r.loadavg[2]:.2f}"
    )
    broken = r.broken()
    log("  targets: " + ("all met" if not broken else "MISSED: " + "; ".join(broken)))


def table_print(rows: list[tuple[int, Report]]) -> None:
    heads = (
        "N", "voted", "lost", "emitted", "ratio", "p50 ms", "p99 ms", "streams",
        "web%", "workers%", "tokens%", "client%", "pg%", "redis%", "RSS MB", "wall s", "load1",
    )  # fmt: skip
    log("  ".join(f"{h:>8}" for h in heads))
    for n, r in rows:
        rss = sum(r.peak_rss_mb.get(k, 0) for k in ("web", "workers", "tokenserver"))
        cells = (
            n, r.voted, r.votes_lost, r.tokens_emitted, f"{r.ratio:.4f}",
            f"{r.latency_ms['p50']:.1f}", f"{r.latency_ms['p99']:.1f}", r.peak_streams,
            *(f"{r.cpu_percent.get(k, 0):.0f}" for k in ("web", "workers", "tokenserver")),
            *(f"{r.cpu_percent.get(k, 0):.0f}" for k in ("client", "postgres", "redis")),
            f"{rss:.0f}", f"{r.wall_seconds:.1f}",
            f"{r.loadavg[0]:.2f}",
        )  # fmt: skip
        log("  ".join(f"{c!s:>8}" for c in cells))


def _stop_on_sigterm() -> None:
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--battles", type=int, default=200, help="concurrent battles")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per answer")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--delta-ms", type=float, default=40.0, help="ARENA_DELTA_INTERVAL_MS")
    parser.add_argument("--sweep", action="store_true", help="raise N until a target breaks")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="N values to sweep")
    parser.add_argument(
        "--keep-going", action="store_true", help="sweep: run every size, even past a break"
    )
    parser.add_argument("--redis-db", type=int, default=11, help="flushed; never 0")
    parser.add_argument(
        "--opening", type=int, default=20, help="visitors opening the page at the same moment"
    )
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument(
        "--web-workers", type=int, default=1, help="web server processes on one socket"
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=None,
        help=f"send the first messages over this many seconds (default: a third of an "
        f"answer's duration, at most {RAMP_SECONDS:g}); 0: all battles at once",
    )
    parser.add_argument("--no-warmup", action="store_true", help="measure cold processes too")
    parser.add_argument("--no-batch", action="store_true", help="one event per frame (no ?batch=1)")
    parser.add_argument(
        "--no-hub", action="store_true", help="the web server without its battle hub"
    )
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="servers without gc.freeze after start-up (ARENA_GC_FREEZE = False)",
    )
    args = parser.parse_args(argv)
    if min(args.battles, args.workers, args.web_workers, args.tokens) < 1 or args.rate <= 0:
        parser.error("--battles, --workers, --web-workers, --tokens and --rate must be positive")
    if args.ramp is not None and not 0 <= args.ramp < math.inf:
        parser.error("--ramp must be 0 or more seconds")
    config = LoadConfig(
        rate=args.rate,
        tokens=args.tokens,
        workers=args.workers,
        delta_ms=args.delta_ms,
        pg_server=pg_server_url(os.environ.get("DATABASE_URL")),
        redis_url=redis_bench_url(os.environ.get("REDIS_URL"), args.redis_db),
        warmup=not args.no_warmup,
        opening=args.opening,
        server=args.server,
        web_workers=args.web_workers,
        batch=not args.no_batch,
        hub=not args.no_hub,
        ramp=args.ramp,
        gc_freeze=not args.no_gc_freeze,
    )
    sizes = sorted({int(s) for s in args.sizes.split(",")}) if args.sweep else [args.battles]
    _stop_on_sigterm()
    log(
        f"load: {'sweep ' + str(sizes) if args.sweep else str(args.battles) + ' battles'}, "
        f"2 answers each of {config.tokens} tokens at {config.rate:g} tokens/s, "
        f"{config.server} x {config.web_workers}, {config.workers} worker(s), "
        f"delta window {config.delta_ms:g} ms, "
        f"first messages over {config.ramp_seconds():g} s, "
        f"hub {'on' if config.hub else 'off'}, {'batched' if config.batch else 'single'} frames, "
        f"gc freeze {'on' if config.gc_freeze else 'off'}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    rows: list[tuple[int, Report]] = []
    breaking: int | None = None
    with Stack(config) as stack:
        log(
            f"  stack up: {config.server} x {config.web_workers} {stack.url}, token server"
            f" {stack.token_url}, database {stack.db}"
        )
        for n in sizes:
            log(f"N = {n}: {n} battles, {2 * n} streams")
            report = stack.run(n)
            report_print(report, config)
            rows.append((n, report))
            if report.broken() and breaking is None:
                breaking = n
                if not args.keep_going:
                    break
    log("")
    table_print(rows)
    if args.sweep:
        held = [n for n, r in rows if not r.broken()]
        if breaking is None:
            log(f"no target broke up to N = {sizes[-1]}")
        else:
            why = "; ".join(dict(rows)[breaking].broken())
            below = [n for n in held if n < breaking]
            log(
                f"breaking point: N = {breaking} ({why}); "
                + (f"held up to N = {max(below)}" if below else "no smaller N was tried")
            )
    return 1 if not args.sweep and rows[-1][1].votes_lost else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
