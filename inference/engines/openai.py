"""The OpenAI-compatible streaming engine: vLLM, SGLang, TGI, llama.cpp's
server, Ollama, hosted APIs.

One call is one `POST {base_url}/chat/completions` with `stream: true` and
`stream_options: {include_usage: true}`, read as server-sent events with
aiohttp (its C HTTP parser relays a token for about a third of the CPU that
httpx + httpx-sse took: bench/load.py); the management calls stay on httpx.
Four timeouts: connect, first token (from the
request to the first text: queueing and prefill), idle (the longest silence
between two chunks) and total. Closing the stream closes the connection,
which makes vLLM abort the request and free its slot.

Errors come in two body shapes, both handled wherever they appear (an HTTP
error body, or an `error` chunk in the middle of a 200 stream):
`{"error": {"message": ..., "type": ..., "code": ...}}` (current vLLM, OpenAI)
and the flat `{"object": "error", "message": ..., "type": ..., "code": ...}`
(older vLLM).

The module knows nothing of Django: an endpoint arrives as an EndpointConfig.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import aiohttp
import httpx

from inference.engines.base import EngineError, GenerationRequest, StreamEnd, StreamEvent, TextDelta

# httpx logs every request at INFO: one line per generation and per probe.
logging.getLogger("httpx").setLevel(logging.WARNING)

# How long a /models listing is trusted when checking a request's model name.
MODELS_TTL_SECONDS = 60.0
MAX_ERROR_CHARS = 300
# An SSE line (one chunk) may be up to twice this long.
READ_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class EndpointConfig:
    """What the engine needs to reach one server; the API key stays in the
    environment variable `api_key_env` names."""

    name: str
    base_url: str
    api_key_env: str = ""
    # Why `api_key_env` may not be read (a variable outside ARENA_KEY_PREFIX):
    # the request is refused instead of sending that variable anywhere.
    api_key_refused: str = ""
    connect_timeout: float = 5.0
    first_token_timeout: float = 60.0
    idle_timeout: float = 30.0
    total_timeout: float = 300.0

    @property
    def root_url(self) -> str:
        """The server root, where vLLM's /health lives (base_url minus /v1)."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    def headers(self) -> dict[str, str]:
        if self.api_key_refused:
            raise EngineError(
                "engine_auth",
                f"The API key variable of endpoint {self.name!r} is refused: "
                f"{self.api_key_refused}",
            )
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise EngineError(
                "engine_auth",
                f"The API key for endpoint {self.name!r} is missing: "
                f"set the environment variable {self.api_key_env}.",
            )
        return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class ServedModel:
    id: str
    parent: str | None = None  # vLLM: the base model of a LoRA adapter
    root: str | None = None


@cache
def _ssl_context() -> ssl.SSLContext:
    # Building a context reads the CA bundle (tens of ms): once per process.
    return httpx.create_ssl_context()


def stream_session(config: EndpointConfig) -> aiohttp.ClientSession:
    """One answer's HTTP session: its own connection, closed with the answer
    (closing mid-stream is how vLLM learns to abort). Reads are bounded by
    this module's own first-token/idle/total deadlines, not aiohttp's."""
    return aiohttp.ClientSession(
        headers=config.headers(),
        timeout=aiohttp.ClientTimeout(
            total=None, connect=config.connect_timeout, sock_connect=config.connect_timeout
        ),
        connector=aiohttp.TCPConnector(ssl=_ssl_context(), limit=0),
        read_bufsize=READ_BUFFER_BYTES,
        trust_env=True,  # HTTP(S)_PROXY and NO_PROXY, as httpx honours them
    )


def endpoint_url(config: EndpointConfig, path: str) -> str:
    return f"{config.base_url.rstrip('/')}/{path}"


def sync_client(config: EndpointConfig, *, timeout: float | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=config.base_url,
        headers=config.headers(),
        timeout=httpx.Timeout(timeout or max(config.connect_timeout, 10.0)),
        verify=_ssl_context(),
    )


# --- error bodies -----------------------------------------------------------


def error_detail(body: object) -> tuple[str, str]:
    """(message, type) from either error shape, or from whatever a server sent."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            return str(inner.get("message") or inner), str(inner.get("type") or "")
        if isinstance(inner, str):
            return inner, ""
        if body.get("object") == "error" or "message" in body:
            return str(body.get("message") or ""), str(body.get("type") or "")
        if "detail" in body:  # FastAPI-style servers
            return str(body["detail"]), ""
    return str(body), ""


def is_error_chunk(chunk: dict[str, Any]) -> bool:
    return "error" in chunk or chunk.get("object") == "error"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def http_error(status: int, content: bytes, *, model: str) -> EngineError:
    """The EngineError for an HTTP error answer to a generation request."""
    try:
        body: object = json.loads(content)
    except ValueError:
        body = content.decode(errors="replace")
    message, _ = error_detail(body)
    message = _short(message) or f"HTTP {status}"
    if status == 404:
        return EngineError(
            "model_not_found", f"The model server does not serve {model!r}: {message}"
        )
    if status in (401, 403):
        return EngineError("engine_auth", f"The model server refused the credentials: {message}")
    if status in (429, 503):
        return EngineError("engine_busy", f"The model server is busy; try again soon: {message}")
    if 400 <= status < 500:
        return EngineError("engine_rejected", f"The model server refused the request: {message}")
    return EngineError("engine_failed", f"The model server failed (HTTP {status}): {message}")


# --- /models ------------------------------------------------------------------


def served_models_parse(body: object) -> list[ServedModel]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise EngineError("engine_failed", "The server's /models answer is not a model list.")
    models = []
    for item in body["data"]:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            models.append(
                ServedModel(id=item["id"], parent=item.get("parent"), root=item.get("root"))
            )
    return models


class _ModelCache:
    """Which models each endpoint serves, per process, refreshed lazily."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, frozenset[str] | None]] = {}

    def get(self, url: str) -> tuple[float, frozenset[str] | None] | None:
        with self._lock:
            return self._entries.get(url)

    def put(self, url: str, ids: frozenset[str] | None) -> None:
        with self._lock:
            self._entries[url] = (time.monotonic(), ids)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


model_cache = _ModelCache()


# --- the engine ---------------------------------------------------------------


class OpenAIEngine:
    """Streams chat completions from one OpenAI-compatible endpoint.

    Cheap to make (it holds no connections): the runner makes one per answer,
    so an endpoint edited in the admin takes effect on the next answer.
    """

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        # vLLM, SGLang and llama.cpp take these beyond the OpenAI schema.
        if "top_k" in request.extra:
            body["top_k"] = int(request.extra["top_k"])
        if "repetition_penalty" in request.extra:
            body["repetition_penalty"] = float(request.extra["repetition_penalty"])
        return body

    async def _model_check(self, session: aiohttp.ClientSession, model: str) -> None:
        """Refuse a model the server does not list: some servers (llama.cpp's
        Python server) answer any name with their default model. A listing is
        trusted for a minute; a name missing from it is looked up again (an
        adapter may just have been loaded)."""
        url = self.config.base_url
        cached = model_cache.get(url)
        if cached is not None and time.monotonic() - cached[0] < MODELS_TTL_SECONDS:
            ids = cached[1]
            if ids is None or model in ids:
                return  # listed, or this server has no usable /models
        try:
            async with asyncio.timeout(self.config.connect_timeout + 5):
                async with session.get(endpoint_url(self.config, "models")) as response:
                    if response.status >= 400:
                        model_cache.put(url, None)
                        return
                    body = json.loads(await response.read())
            ids = frozenset(m.id for m in served_models_parse(body))
        except (TimeoutError, ValueError, EngineError):
            model_cache.put(url, None)
            return
        model_cache.put(url, ids)
        if model not in ids:
            raise self._not_served(model, ids)

    def _not_served(self, model: str, ids: frozenset[str]) -> EngineError:
        listed = ", ".join(sorted(ids)[:10]) or "nothing"
        return EngineError(
            "model_not_found",
            f"The model server {self.config.name!r} does not serve {model!r} (it serves {listed}).",
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        config = self.config
        loop = asyncio.get_running_loop()
        started = loop.time()
        total_at = started + config.total_timeout
        first_at = started + config.first_token_timeout
        try:
            async with stream_session(config) as session:
                await self._model_check(session, request.model)
                async with asyncio.timeout_at(min(first_at, total_at)):
                    response = await session.post(
                        endpoint_url(config, "chat/completions"), json=self._body(request)
                    )
                try:
                    if response.status >= 400:
                        body = await response.read()
                        raise http_error(response.status, body, model=request.model)
                    async for event in self._events(response, started, first_at, total_at):
                        yield event
                finally:
                    # Closing mid-stream drops the connection: vLLM aborts the request.
                    response.close()
        except aiohttp.ConnectionTimeoutError:
            raise EngineError(
                "engine_unreachable",
                f"The model server {config.name!r} did not accept a connection.",
            ) from None
        except TimeoutError:
            raise EngineError(
                "timeout",
                f"The model server sent nothing for {config.first_token_timeout:g} s.",
            ) from None
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise EngineError(
                "engine_unreachable",
                f"The model server {config.name!r} could not be reached: {_short(str(exc))}",
            ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, OSError) as exc:
            raise EngineError(
                "engine_failed",
                f"The model server closed the connection mid-answer: {_short(str(exc))}",
            ) from None
        except aiohttp.ClientError as exc:
            raise EngineError(
                "engine_failed",
                f"The model server failed: {_short(str(exc)) or type(exc).__name__}",
            ) from None

    async def _events(
        self, response: aiohttp.ClientResponse, started: float, first_at: float, total_at: float
    ) -> AsyncIterator[StreamEvent]:
        _event_stream_check(response)
        idle_timeout = self.config.idle_timeout
        loop = asyncio.get_running_loop()
        sse = _sse_data(response.content)
        tally = _StreamTally()
        try:
            while True:
                deadline = min(total_at, loop.time() + idle_timeout if tally.got_text else first_at)
                try:
                    # The deadline cancels the read itself; the stream is not
                    # read again afterwards, so cancelling it mid-read is safe.
                    async with asyncio.timeout_at(deadline):
                        data = await anext(sse)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._timeout_error(
                        loop.time(), started, total_at, tally.got_text
                    ) from None
                except (UnicodeDecodeError, ValueError) as exc:  # ValueError: a line too long
                    raise EngineError(
                        "engine_failed", f"The model server sent an unreadable line: {exc}"
                    ) from None
                data = data.strip()
                if not data:
                    continue
                if data == "[DONE]":
                    tally.done = True
                    break
                chunk = _chunk_parse(data)
                if chunk is not None:
                    for text in tally.texts(chunk):
                        yield TextDelta(text, 1)
        finally:
            await sse.aclose()
        yield tally.end()

    def _timeout_error(
        self, now: float, started: float, total_at: float, got_text: bool
    ) -> EngineError:
        config = self.config
        if now >= total_at:
            return EngineError(
                "timeout", f"The answer took longer than {config.total_timeout:g} s in all."
            )
        if not got_text:
            return EngineError(
                "timeout",
                f"The model server sent no token within {config.first_token_timeout:g} s.",
            )
        return EngineError(
            "timeout", f"The model server went silent for {config.idle_timeout:g} s mid-answer."
        )


def _event_stream_check(response: aiohttp.ClientResponse) -> None:
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" not in content_type:
        raise EngineError(
            "engine_failed",
            "The model server did not stream: expected Content-Type text/event-stream, "
            f"got {_short(content_type) or 'none'}.",
        )


def _chunk_parse(data: str) -> dict[str, Any] | None:
    """One event's JSON chunk; None for one that is not an object (skipped).
    A server's error chunk mid-stream is raised."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise EngineError(
            "engine_failed", f"The model server sent an unreadable chunk: {_short(data)}"
        ) from None
    if not isinstance(chunk, dict):
        return None
    if is_error_chunk(chunk):
        reason, kind = error_detail(chunk)
        raise EngineError(
            "engine_failed",
            f"The model server failed mid-answer: {_short(reason) or kind or 'error'}",
        )
    return chunk


@dataclass(slots=True)
class _StreamTally:
    """What a stream has said so far, for its `StreamEnd`."""

    got_text: bool = False
    done: bool = False  # the server sent [DONE]
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chunks: int = 0

    def texts(self, chunk: dict[str, Any]) -> list[str]:
        """The text deltas of a chunk's first choice (index 0), counted; its
        usage and finish reason kept."""
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = _int_or_none(usage.get("prompt_tokens"))
            self.completion_tokens = _int_or_none(usage.get("completion_tokens"))
        texts: list[str] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if text:
                self.got_text = True
                self.chunks += 1
                texts.append(text)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])[:20]
        return texts

    def end(self) -> StreamEnd:
        if self.finish_reason is None:
            # Cut off: the connection closed early, or the server ended the
            # stream without finishing (llama.cpp's Python server sends [DONE]
            # when another request interrupts this one). Not a finished answer.
            why = "interrupted" if self.done else "closed early"
            raise EngineError(
                "engine_failed",
                f"The model server ended the stream before the answer was finished ({why}).",
            )
        completion = self.completion_tokens
        return StreamEnd(
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion if completion is not None else self.chunks,
        )


async def _sse_data(reader: aiohttp.StreamReader) -> AsyncGenerator[str, None]:
    """The `data` of each server-sent event (its data lines joined by newlines),
    per the WHATWG event-stream rules: events end at a blank line, lines
    starting with ':' are comments, other fields are ignored. Reads whatever
    has arrived and splits it here: one read per network chunk, not two
    `readline` calls per event (a streamed token is one event)."""
    lines: list[str] = []
    pending = b""
    while True:
        chunk = await reader.readany()
        if not chunk:  # end of the stream: an unterminated event is dropped
            return
        buf = pending + chunk if pending else chunk
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line = buf[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if lines:
                    yield "\n".join(lines)
                    lines = []
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                lines.append(value[1:].decode() if value[:1] == b" " else value.decode())
        pending = buf[start:]
        if len(pending) > READ_BUFFER_BYTES:
            raise ValueError(f"a line longer than {READ_BUFFER_BYTES} bytes")


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- management calls (sync: the admin, commands and the health task) ---------


def models_list(config: EndpointConfig) -> list[ServedModel]:
    """GET /models; raises EngineError on any failure."""
    with _translated(config), sync_client(config) as client:
        response = client.get("models")
        if response.status_code >= 400:
            raise http_error(response.status_code, response.content, model="(model list)")
        try:
            return served_models_parse(response.json())
        except ValueError:
            raise EngineError("engine_failed", "The server's /models answer is not JSON.") from None


def health_probe(config: EndpointConfig) -> bool | None:
    """GET {root}/health: True when healthy, None when the server has no
    /health (a tiny generation must tell), EngineError when unhealthy."""
    with _translated(config), sync_client(config) as client:
        response = client.get(config.root_url + "/health")
        if response.status_code in (404, 405):
            return None
        if response.status_code >= 400:
            raise http_error(response.status_code, response.content, model="(health)")
        return True


def lora_load(config: EndpointConfig, *, name: str, path: str) -> str:
    """POST /load_lora_adapter (vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING).

    Returns the server's message; raises EngineError with code
    `lora_unsupported` when the server has no such route, else with the
    server's reason (a bad adapter, a rank above --max-lora-rank, ...).
    """
    with _translated(config), sync_client(config, timeout=120.0) as client:
        response = client.post("load_lora_adapter", json={"lora_name": name, "lora_path": path})
        return _lora_answer(response, action="load")


def lora_unload(config: EndpointConfig, *, name: str) -> str:
    with _translated(config), sync_client(config) as client:
        response = client.post("unload_lora_adapter", json={"lora_name": name})
        return _lora_answer(response, action="unload")


def _lora_answer(response: httpx.Response, *, action: str) -> str:
    if response.status_code in (404, 405) and not _has_error_body(response):
        raise EngineError(
            "lora_unsupported",
            f"The server cannot {action} adapters at run time: start vLLM with "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or list the adapter with --lora-modules.",
        )
    if response.status_code >= 400:
        try:
            body: object = response.json()
        except ValueError:
            body = response.text
        message, _ = error_detail(body)
        raise EngineError("lora_rejected", _short(message) or f"HTTP {response.status_code}")
    return _short(response.text)


def _has_error_body(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    # FastAPI's own 404 for an unknown route is {"detail": "Not Found"}.
    return isinstance(body, dict) and is_error_chunk(body)


@contextlib.contextmanager
def _translated(config: EndpointConfig) -> Iterator[None]:
    """Turns httpx failures of a management call into EngineErrors."""
    name = config.name
    try:
        yield
    except httpx.TimeoutException:
        raise EngineError("timeout", f"The model server {name!r} did not answer in time.") from None
    except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
        raise EngineError(
            "engine_unreachable", f"The model server {name!r} could not be reached: {exc}"
        ) from None
    except httpx.HTTPError as exc:
        raise EngineError("engine_failed", f"The model server {name!r} failed: {exc}") from None
