"""Servers the serving tests talk to over loopback.

- llama.cpp's OpenAI-compatible server (`llama-cpp-python[server]`) on the
  same SmolLM2 GGUF file the local engine converts: a real server process.
- A stand-in for vLLM, which needs a GPU: a small HTTP server that replays
  vLLM's documented formats exactly (the chat-completion chunks, the usage
  chunk, `/v1/models` with `parent`, `/v1/load_lora_adapter`,
  `/v1/unload_lora_adapter`, `/health`, both error body shapes, an error
  chunk mid-stream). Used only for what llama.cpp cannot show.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from inference.engines.local import GGUF_FILE, gguf_package_dir
from tests.conftest import Process, child_env, free_port
from tests.workers import worker_argv

LLAMA_ALIAS = "smollm2-gguf"


class LlamaServer:
    """llama-cpp-python's server on one or two threads (OMP_WAIT_POLICY=PASSIVE,
    so it does not spin on cores the tests need)."""

    def __init__(self, name: str = "llama-server", threads: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        gguf = gguf_package_dir() / GGUF_FILE
        env = child_env(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads))
        self.process = Process(
            name,
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                LLAMA_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_threads",
                str(threads),
                "--n_threads_batch",
                str(threads),
                "--n_ctx",
                "4096",
                # Queue a second request (a health check's one-token probe)
                # instead of cutting the running answer short.
                "--interrupt_requests",
                "False",
            ],
            env,
        )
        self.process.wait_for_log("Uvicorn running on", timeout=120)

    def kill(self) -> None:
        """Dies at once, as a crashed server does (SIGKILL, no goodbye)."""
        import signal

        os.killpg(self.process.proc.pid, signal.SIGKILL)
        self.process.proc.wait()

    def stop(self) -> None:
        self.process.stop()


def llama_server_fixture() -> Iterator[LlamaServer]:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        pytest.fail('llama.cpp\'s server is not installed: pip install "llama-cpp-python[server]"')
    server = LlamaServer()
    yield server
    server.stop()


def http_worker_start() -> Process:
    worker = Process(
        "celery-worker-http",
        worker_argv(queues=settings.ARENA_QUEUE_HTTP, concurrency=16, name="test-http"),
        child_env(),
    )
    worker.wait_for_log("ready.", timeout=120)
    return worker


# --- the vLLM stand-in ---------------------------------------------------------------


@dataclass
class VLLMBehaviour:
    """What the stand-in does; tests change it between requests."""

    base: str = "meta-llama/Llama-3.2-1B-Instruct"
    base_root: str = "/models/llama-3.2-1b"
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path
    runtime_lora: bool = True  # VLLM_ALLOW_RUNTIME_LORA_UPDATING
    max_lora_rank: int = 16
    flat_errors: bool = False  # older vLLM: {"object": "error", ...}
    api_key: str | None = None
    healthy: bool = True
    models_route: bool = True  # False: /v1/models answers 404, as on some servers
    words: list[str] = field(default_factory=lambda: ["The", "quick", "brown", "fox", "jumps"])
    joiner: str = " "  # after each word, in the same chunk
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    stall_after: int | None = None  # stop sending (connection held open) after n tokens
    error_after: int | None = None  # an error chunk after n tokens
    done_after: int | None = None  # [DONE] without a finish reason after n tokens
    chat_error: tuple[int, str] | None = None  # chat completions answer (status, message)
    # Filled by the server:
    requests: list[dict[str, Any]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


class VLLMStandIn:
    """A stand-in for vLLM's OpenAI-compatible server (vLLM needs a GPU)."""

    def __init__(self) -> None:
        self.behaviour = VLLMBehaviour()
        behaviour = self.behaviour

        class Handler(_Handler):
            state = behaviour

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    state: VLLMBehaviour
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- helpers

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._json(status, self._error_body(status, message, kind))

    def _error_body(self, status: int, message: str, kind: str) -> dict[str, Any]:
        if self.state.flat_errors:
            # vLLM before its OpenAI-style error bodies (ErrorResponse, flat).
            return {
                "object": "error",
                "message": message,
                "type": kind,
                "param": None,
                "code": status,
            }
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _authorised(self) -> bool:
        if self.state.api_key is None:
            return True
        if self.headers.get("authorization") == f"Bearer {self.state.api_key}":
            return True
        self._error(401, "Unauthorized", "Unauthorized")
        return False

    # -- routes

    def do_GET(self) -> None:
        if self.path == "/health":
            self._text(200 if self.state.healthy else 503, "")
        elif self.path == "/v1/models" and self.state.models_route:
            if not self._authorised():
                return
            created = int(time.time())
            data = [_model_card(self.state.base, self.state.base_root, None, created)]
            data += [
                _model_card(name, path, self.state.base, created)
                for name, path in self.state.adapters.items()
            ]
            self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        if self.path == "/v1/chat/completions":
            self._chat()
        elif self.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            if not self.state.runtime_lora:
                # The routes exist only with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.
                self._json(404, {"detail": "Not Found"})
            elif self.path.endswith("/load_lora_adapter"):
                self._load()
            else:
                self._unload()
        else:
            self._json(404, {"detail": "Not Found"})

    def _load(self) -> None:
        body = self._body()
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            self._error(
                400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput"
            )
            return
        if name in self.state.adapters:
            self._error(
                400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput"
            )
            return
        config_path = Path(path) / "adapter_config.json"
        if not config_path.is_file():
            self._error(
                400,
                f"Loading lora {name} failed: No adapter found for {path}",
                "BadRequestError",
            )
            return
        rank = json.loads(config_path.read_text()).get("r", 0)
        if rank > self.state.max_lora_rank:
            self._error(
                400,
                f"Loading lora {name} failed: LoRA rank {rank} is greater than max_lora_rank "
                f"{self.state.max_lora_rank}.",
                "BadRequestError",
            )
            return
        self.state.adapters[name] = path
        self._text(200, f"Success: LoRA adapter '{name}' added successfully.")

    def _unload(self) -> None:
        name = self._body().get("lora_name")
        if name not in self.state.adapters:
            self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            return
        del self.state.adapters[name]
        self._text(200, f"Success: LoRA adapter '{name}' removed successfully.")

    def _chat(self) -> None:
        state = self.state
        if not self._authorised():
            return
        body = self._body()
        state.requests.append(body)
        model = body.get("model")
        if model != state.base and model not in state.adapters:
            self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
            return
        if state.chat_error is not None:
            self._error(*state.chat_error, "InternalServerError")
            return
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        max_tokens = int(body.get("max_tokens") or 16)
        words = [f"{w}{state.joiner}" for w in state.words][:max_tokens]
        usage = body.get("stream_options", {}).get("include_usage", False)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
            out["finish_reason"] = finish
            if finish is not None:
                out["stop_reason"] = None
            return out

        finish = "length" if len(state.words) > max_tokens else "stop"
        try:
            # vLLM's first chunk carries the role, before any token exists.
            self._send(chunk([choice({"role": "assistant", "content": ""})]))
            time.sleep(state.first_token_delay)
            for i, word in enumerate(words):
                if self._fault_at(i):
                    return
                last = i == len(words) - 1
                # The chunk of the last token also carries the finish reason.
                self._send(chunk([choice({"content": word}, finish if last else None)]))
                time.sleep(state.token_delay)
            if usage:
                n = len(words)
                self._send(
                    chunk(
                        [],
                        usage={"prompt_tokens": 11, "total_tokens": 11 + n, "completion_tokens": n},
                    )
                )
            self._raw("data: [DONE]\n\n")
            self._end()
            state.finished.append(request_id)
        except (BrokenPipeError, ConnectionResetError):
            # What vLLM does when the client goes: abort the request, free the slot.
            state.aborted.append(request_id)
            self.close_connection = True

    def _fault_at(self, i: int) -> bool:
        """The fault set to happen before token `i`, played as vLLM would;
        True if the stream ends there."""
        state = self.state
        if state.error_after is not None and i == state.error_after:
            # vLLM's create_streaming_error_response: an error object as
            # a data line of the 200 stream, then [DONE].
            self._send(
                self._error_body(500, "CUDA error: an illegal memory access", "InternalServerError")
            )
            self._raw("data: [DONE]\n\n")
            self._end()
            return True
        if state.done_after is not None and i == state.done_after:
            self._raw("data: [DONE]\n\n")  # cut short, as an interrupted server does
            self._end()
            return True
        if state.stall_after is not None and i == state.stall_after:
            time.sleep(30)
            return True
        return False

    def _send(self, obj: object) -> None:
        self._raw(f"data: {json.dumps(obj)}\n\n")

    def _raw(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _model_card(name: str, root: str, parent: str | None, created: int) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": parent,
        "max_model_len": 8192,
        "permission": [
            {
                "id": f"modelperm-{uuid.uuid4().hex}",
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())
