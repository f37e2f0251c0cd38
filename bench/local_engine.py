"""The local engine, one side alone and both at once, directly and through the platform.

    .venv/bin/python bench/local_engine.py [--rounds 3] [--tokens 64] [--services]

Directly: LocalEngine.stream in this process. Through the platform: a real
daphne server (embedded default: SQLite, in-memory layer, generation threads;
or with --services: PostgreSQL, Redis, a Celery worker) and a websocket client
that does what the browser does. "One side alone": the other side's contender
answers a single token, so one generation runs for nearly all the time.
Prints time to first token (TTFT) and decode tokens/s, medians over rounds,
and the ratio platform/direct measured side by side in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.workers import worker_argv  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

PROMPT = "Explain in a few sentences why the sky is blue."


def log(msg: str) -> None:
    print(msg, flush=True)


# --- direct ----------------------------------------------------------------


async def direct_one(engine: Any, tokens: int) -> tuple[float, float]:
    from inference.engines.base import GenerationRequest, StreamEnd, TextDelta

    request = GenerationRequest(
        model="",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0.7,
        extra={"repetition_penalty": 1.1},
    )
    started = time.perf_counter()
    first = None
    end = None
    async for event in engine.stream(request):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter()
        elif isinstance(event, StreamEnd):
            end = event
    done = time.perf_counter()
    assert first is not None and end is not None and end.completion_tokens
    return first - started, (end.completion_tokens - 1) / (done - first)


def direct(rounds: int, tokens: int) -> dict[str, tuple[float, float]]:
    import django

    django.setup()
    from inference.engines import engine_get

    engine = engine_get("local")
    engine.load()  # type: ignore[attr-defined]
    asyncio.run(direct_one(engine, 8))  # warm-up

    async def run() -> dict[str, tuple[float, float]]:
        one: list[tuple[float, float]] = []
        two: list[tuple[float, float]] = []
        for i in range(rounds):
            log(f"  direct round {i + 1}/{rounds}: one side")
            one.append(await direct_one(engine, tokens))
            log(f"  direct round {i + 1}/{rounds}: both sides")
            two.extend(await asyncio.gather(direct_one(engine, tokens), direct_one(engine, tokens)))
        return {"one side": _median(one), "both sides": _median(two)}

    return asyncio.run(run())


def _median(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


# --- through the platform --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """daphne (+ a Celery worker with --services) in their own process groups."""

    def __init__(self, services: bool, tokens: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="arena-bench-"))
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(ARENA_DATA_DIR=str(self.dir), PYTHONUNBUFFERED="1")
        env.setdefault("ARENA_MODEL_CACHE", str(ROOT / "var" / "models"))
        if services:
            db = f"arena_bench_{os.getpid()}"
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {db}"],
                check=True,
            )
            self.db = db
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{db}"
            env["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        py = sys.executable
        subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        script = (
            "from inference.models import Contender as C\n"
            f"C.objects.create(name='bench-a', params={{'max_tokens': {tokens}}})\n"
            f"C.objects.create(name='bench-b', params={{'max_tokens': {tokens}}})\n"
            "C.objects.create(name='bench-one-token', params={'max_tokens': 1})\n"
        )
        subprocess.run([py, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, check=True)
        if services:
            self._spawn(
                worker_argv(
                    queues="generation,default", concurrency=4, name="bench", loglevel="WARNING"
                ),
                "worker",
            )
        self._spawn(
            [py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "arena.asgi:application"],
            "daphne",
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("daphne did not start; see " + str(self.dir))

    def _spawn(self, argv: list[str], name: str) -> None:
        out = (self.dir / f"{name}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def close(self) -> None:
        for proc in self.procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=30)
        if hasattr(self, "db"):
            subprocess.run(
                [
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-qc",
                    f"DROP DATABASE IF EXISTS {self.db}",
                ],
                check=False,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


async def platform_battle(url: str, a: str, b: str) -> dict[str, tuple[float, float]]:
    import websockets

    jar = http.cookiejar.CookieJar()
    urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)).open(url + "/")
    cookie = next(c.value for c in jar if c.name == "arena_visitor")
    ws_url = url.replace("http", "ws") + "/ws/battle/"
    headers = {"Cookie": f"arena_visitor={cookie}", "Origin": url}
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        await ws.send(
            json.dumps(
                {"type": "battle.start", "mode": "named", "contender_a": a, "contender_b": b}
            )
        )
        json.loads(await ws.recv())
        sent = time.perf_counter()
        await ws.send(json.dumps({"type": "message.send", "text": PROMPT}))
        first: dict[str, float] = {}
        result: dict[str, tuple[float, float]] = {}
        while len(result) < 2:
            event = json.loads(await ws.recv())
            now = time.perf_counter()
            if event["type"] == "gen.delta":
                first.setdefault(event["side"], now)
            elif event["type"] == "gen.done":
                side = event["side"]
                tokens = event["stats"]["tokens"] or 1
                start = first.get(side, now)
                rate = (tokens - 1) / (now - start) if now > start else float("nan")
                result[side] = (start - sent, rate)
            elif event["type"] in ("gen.error", "error"):
                raise RuntimeError(event)
        await ws.send(json.dumps({"type": "vote", "choice": "tie"}))
        return result


def platform(rounds: int, services: bool, tokens: int) -> dict[str, tuple[float, float]]:
    log(f"  starting the stack ({'services' if services else 'embedded default'})")
    stack = Stack(services, tokens)
    try:
        asyncio.run(platform_battle(stack.url, "bench-a", "bench-one-token"))  # warm-up
        one: list[tuple[float, float]] = []
        two: list[tuple[float, float]] = []
        for i in range(rounds):
            log(f"  platform round {i + 1}/{rounds}: one side")
            one.append(asyncio.run(platform_battle(stack.url, "bench-a", "bench-one-token"))["a"])
            log(f"  platform round {i + 1}/{rounds}: both sides")
            two.extend(asyncio.run(platform_battle(stack.url, "bench-a", "bench-b")).values())
        return {"one side": _median(one), "both sides": _median(two)}
    finally:
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--services", action="store_true", help="PostgreSQL + Redis + Celery")
    args = parser.parse_args()
    log(
        f"local engine: SmolLM2-135M-Instruct, {args.tokens} new tokens, "
        f"{args.rounds} rounds, {os.cpu_count()} cores"
    )
    log("direct (LocalEngine.stream in this process)")
    d = direct(args.rounds, args.tokens)
    log("through the platform (websocket client, daphne, channel layer, task)")
    p = platform(args.rounds, args.services, args.tokens)
    log("")
    heads = ("direct TTFT", "platform TTFT", "direct tok/s", "platform tok/s", "tok/s ratio")
    log(f"{'':12}" + "".join(f"{h:>16}" for h in heads))
    for key in ("one side", "both sides"):
        (dt, dr), (pt, pr) = d[key], p[key]
        cells = (f"{dt * 1000:.0f} ms", f"{pt * 1000:.0f} ms", f"{dr:.1f}", f"{pr:.1f}")
        log(f"{key:12}" + "".join(f"{c:>16}" for c in cells) + f"{pr / dr:>16.2f}")


if __name__ == "__main__":
    main()
