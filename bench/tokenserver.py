"""A token server for load benchmarks: OpenAI-compatible streaming at a fixed rate.

    .venv/bin/python bench/tokenserver.py [--port 0] [--rate 20] [--tokens 60]

A benchmark harness, not a test double of the product: it stands where a
vLLM server would, so that `bench/load.py` can push hundreds of concurrent
streams through the real stack without a GPU. It answers every chat
completion with `tokens` tokens (or the request's `max_tokens`, if lower) at
`rate` tokens/s per stream, on an absolute schedule (token i is due at
start + i / rate, so a late token does not delay the next ones).

Each token's text is `⟨i@T⟩ ` where i is its index in the answer and T the
wall-clock time (time.time(), microseconds) just before it was written to
the socket: a client on the same machine reads the engine -> client latency
of every token off the text it receives, and sees gaps or duplicates.

Plain asyncio streams and a minimal HTTP/1.1 (keep-alive, chunked responses):
one process carries 400+ concurrent streams on one core. Routes:
`POST /v1/chat/completions` (SSE with `stream: true`, the usage chunk with
`stream_options.include_usage`, then `data: [DONE]`; a single JSON answer
without), `GET /v1/models`, `GET /health`, and for the harness
`GET /bench/stats` (tokens emitted, streams, schedule lag) and
`POST /bench/reset`. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
MODEL = "bench-tokens"
TOKEN = re.compile(r"⟨(\d+)@(\d+\.\d+)⟩")
MAX_HEADER_BYTES = 16_384
MAX_BODY_BYTES = 1_000_000
LAG_SAMPLES = 2_000_000  # schedule-lag samples kept per stats period (bounded memory)
WRITE_BUFFER_BYTES = 65_536  # wait for a slow reader beyond this, not before
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}


def token_text(index: int, emitted_at: float) -> str:
    return f"⟨{index}@{emitted_at:.6f}⟩ "


def tokens_parse(text: str) -> list[tuple[int, float, int]]:
    """(index, emit time, end offset in text) of every token in an answer."""
    return [(int(m[1]), float(m[2]), m.end()) for m in TOKEN.finditer(text)]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Stats:
    tokens_emitted: int = 0
    streams_started: int = 0
    streams_finished: int = 0
    streams_aborted: int = 0  # the client went away mid-answer
    active: int = 0
    peak_active: int = 0
    lags: list[float] = field(default_factory=list)  # seconds each token was late

    def as_dict(self) -> dict[str, Any]:
        return {
            "tokens_emitted": self.tokens_emitted,
            "streams_started": self.streams_started,
            "streams_finished": self.streams_finished,
            "streams_aborted": self.streams_aborted,
            "active": self.active,
            "peak_active": self.peak_active,
            "lag_ms_p50": percentile(self.lags, 0.5) * 1000,
            "lag_ms_p99": percentile(self.lags, 0.99) * 1000,
            "lag_ms_max": max(self.lags, default=float("nan")) * 1000,
        }


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TokenServer:
    def __init__(self, *, rate: float, tokens: int) -> None:
        if rate <= 0 or tokens < 1:
            raise ValueError("rate must be > 0 and tokens >= 1")
        self.rate = rate
        self.tokens = tokens
        self.stats = Stats()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        return await asyncio.start_server(self._connection, host, port, backlog=1024)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; whether the connection stays open for another."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        if len(head) > MAX_HEADER_BYTES:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = [*lines[0].split(" "), "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            await self._json(writer, 413, {"error": {"message": "body too large"}})
            return False
        body = await reader.readexactly(length) if length else b""
        path = path.split("?")[0]
        if method == "GET" and path == "/health":
            await self._json(writer, 200, {})
        elif method == "GET" and path == "/v1/models":
            model = {"id": MODEL, "object": "model", "owned_by": "bench", "root": MODEL}
            await self._json(writer, 200, {"object": "list", "data": [model]})
        elif method == "GET" and path == "/bench/stats":
            await self._json(writer, 200, self.stats.as_dict())
        elif method == "POST" and path == "/bench/reset":
            self.stats = Stats(active=self.stats.active)
            await self._json(writer, 200, {})
        elif method == "POST" and path == "/v1/chat/completions":
            try:
                request = self._completion_parse(body)
            except BadRequest as exc:
                await self._json(writer, exc.status, {"error": {"message": str(exc)}})
                return True
            await self._completion(writer, request)
        else:
            await self._json(writer, 404, {"error": {"message": f"no route {method} {path}"}})
        return headers.get("connection", "").lower() != "close"

    def _completion_parse(self, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body)
        except ValueError:
            raise BadRequest(400, "the body is not JSON") from None
        if not isinstance(request, dict):
            raise BadRequest(400, "the body is not a JSON object")
        if request.get("model") != MODEL:
            raise BadRequest(404, f"The model `{request.get('model')}` does not exist.")
        return request

    async def _json(self, writer: asyncio.StreamWriter, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _completion(self, writer: asyncio.StreamWriter, request: dict[str, Any]) -> None:
        wanted = request.get("max_tokens")
        count = min(self.tokens, wanted) if isinstance(wanted, int) and wanted > 0 else self.tokens
        finish = "length" if count < self.tokens else "stop"
        ident = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        created = int(time.time())
        stream = bool(request.get("stream"))
        usage_wanted = bool((request.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, str], reason: str | None = None) -> dict[str, Any]:
            # The token events themselves are written from a template (below).
            choice = {"index": 0, "delta": delta, "finish_reason": reason}
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL,
                "choices": [choice],
            }

        usage = {"prompt_tokens": 8, "completion_tokens": count, "total_tokens": 8 + count}
        self.stats.streams_started += 1
        self.stats.active += 1
        self.stats.peak_active = max(self.stats.peak_active, self.stats.active)
        finished = False
        try:
            if stream:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                await _event(writer, chunk({"role": "assistant", "content": ""}))
            text = await self._tokens(writer if stream else None, count, chunk)
            if stream:
                await _event(writer, chunk({}, finish))
                if usage_wanted:
                    await _event(writer, {**chunk({}), "choices": [], "usage": usage})
                writer.write(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                await writer.drain()
            else:
                message = {"role": "assistant", "content": text}
                await self._json(
                    writer,
                    200,
                    {
                        "id": ident,
                        "object": "chat.completion",
                        "created": created,
                        "model": MODEL,
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": usage,
                    },
                )
            finished = True
        finally:
            self.stats.active -= 1
            if finished:
                self.stats.streams_finished += 1
            else:
                self.stats.streams_aborted += 1

    async def _tokens(self, writer: asyncio.StreamWriter | None, count: int, chunk: Any) -> str:
        loop = asyncio.get_running_loop()
        start = loop.time()
        parts = []
        # One JSON encoding per answer, not per token: the harness stays cheap
        # beside the product it measures (the token text needs no escaping).
        head, tail = json.dumps(chunk({"content": "\0"}), ensure_ascii=False).split('"\\u0000"')
        for i in range(count):
            due = start + i / self.rate
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            stats = self.stats  # a reset mid-stream counts later tokens in the new period
            if len(stats.lags) < LAG_SAMPLES:
                stats.lags.append(max(0.0, loop.time() - due))
            text = token_text(i, time.time())
            parts.append(text)
            if writer is not None:
                writer.write(_chunked(f'data: {head}"{text}"{tail}\n\n'.encode()))
                if writer.transport.get_write_buffer_size() > WRITE_BUFFER_BYTES:
                    await writer.drain()
            stats.tokens_emitted += 1
        return "".join(parts)


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _event(writer: asyncio.StreamWriter, body: object) -> None:
    writer.write(_chunked(f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()))
    await writer.drain()


async def serve(host: str, port: int, rate: float, tokens: int) -> None:
    server = await TokenServer(rate=rate, tokens=tokens).start(host, port)
    bound = server.sockets[0].getsockname()[1]
    # bench/load.py waits for this line and reads the port from it.
    print(f"token server listening on http://{host}:{bound}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1", "localhost"])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per answer")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port, args.rate, args.tokens))


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed (it comes with uvicorn[standard]):
    the harness takes less of the CPU it shares with the stack it measures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    main()
