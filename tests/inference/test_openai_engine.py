"""The OpenAI-compatible engine against llama.cpp's real server on loopback
(streaming, stop, a killed server, an unreachable one, a wrong model), and
against the vLLM stand-in for what only vLLM does (usage chunks, error
chunks mid-stream, both error shapes, aborts on disconnect)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from inference.engines.base import EngineError, GenerationRequest, StreamEnd, TextDelta
from inference.engines.openai import (
    READ_BUFFER_BYTES,
    EndpointConfig,
    OpenAIEngine,
    _sse_data,
    error_detail,
    http_error,
)
from tests.conftest import free_port
from tests.inference.servers import LLAMA_ALIAS, LlamaServer, VLLMStandIn, wait_until

pytestmark = pytest.mark.model


def _request(model: str, text: str = "Say hello.", **kw: object) -> GenerationRequest:
    return GenerationRequest(model=model, messages=[{"role": "user", "content": text}], **kw)  # type: ignore[arg-type]


def _engine(url: str, **kw: object) -> OpenAIEngine:
    return OpenAIEngine(EndpointConfig(name="test", base_url=url, **kw))  # type: ignore[arg-type]


async def _collect(engine: OpenAIEngine, request: GenerationRequest) -> tuple[str, StreamEnd]:
    text, end = "", None
    async for event in engine.stream(request):
        if isinstance(event, TextDelta):
            text += event.text
        else:
            end = event
    assert end is not None
    return text, end


async def _error(
    engine: OpenAIEngine, request: GenerationRequest, on_text: Any = None
) -> tuple[EngineError, str]:
    """The EngineError the stream ends with, and the text that came before it."""
    text = ""
    try:
        async for event in engine.stream(request):
            if isinstance(event, TextDelta):
                text += event.text
                if on_text is not None:
                    on_text(text)
    except EngineError as exc:
        return exc, text
    pytest.fail(f"the stream ended without an error after {text!r}")


# --- llama.cpp's server ---------------------------------------------------------------


async def test_it_streams_from_llama_cpp_and_reports_the_finish(llama_server: LlamaServer) -> None:
    engine = _engine(llama_server.url)
    deltas = []
    end = None
    async for event in engine.stream(_request(LLAMA_ALIAS, max_tokens=8, temperature=0)):
        if isinstance(event, TextDelta):
            deltas.append(event)
        else:
            end = event
    assert len(deltas) >= 4  # token by token, not one lump
    assert "".join(d.text for d in deltas).strip()
    assert end is not None and end.finish_reason == "length"
    assert end.completion_tokens == 8  # llama.cpp sends no usage chunk: counted from chunks


async def test_greedy_answers_from_llama_cpp_are_repeatable(llama_server: LlamaServer) -> None:
    engine = _engine(llama_server.url)
    request = _request(LLAMA_ALIAS, "What is the capital of France?", max_tokens=10, temperature=0)
    first, _ = await _collect(engine, request)
    second, _ = await _collect(engine, request)
    assert first == second and first.strip()


async def test_closing_the_stream_frees_the_server_at_once(llama_server: LlamaServer) -> None:
    engine = _engine(llama_server.url)
    stream = engine.stream(
        _request(LLAMA_ALIAS, "Write a long essay about rivers.", max_tokens=2000)
    )
    async for event in stream:
        assert isinstance(event, TextDelta)
        break
    await stream.aclose()  # type: ignore[attr-defined]
    # llama.cpp runs one request at a time: had the long one gone on (2000
    # tokens on one thread, tens of seconds), this one would wait behind it.
    started = time.perf_counter()
    text, end = await _collect(engine, _request(LLAMA_ALIAS, max_tokens=4, temperature=0))
    assert text and end.completion_tokens == 4
    assert time.perf_counter() - started < 5


async def test_a_server_killed_mid_stream_is_a_clear_failure() -> None:
    doomed = LlamaServer(name="llama-server-killed")
    try:
        request = _request(LLAMA_ALIAS, "Write a long story.", max_tokens=2000)

        def kill_once(text: str) -> None:
            if len(text) > 10 and doomed.process.proc.poll() is None:
                doomed.kill()

        error, text = await _error(_engine(doomed.url), request, on_text=kill_once)
        assert error.code == "engine_failed"
        assert "mid-answer" in error.message or "before the answer" in error.message
        assert text  # what arrived before the crash was delivered
    finally:
        doomed.stop()


async def test_an_unreachable_server_is_engine_unreachable() -> None:
    engine = _engine(f"http://127.0.0.1:{free_port()}/v1", connect_timeout=2)
    started = time.perf_counter()
    error, _ = await _error(engine, _request("whatever"))
    assert error.code == "engine_unreachable"
    assert "could not be reached" in error.message
    assert time.perf_counter() - started < 3


async def test_a_wrong_model_name_is_refused_with_what_is_served(llama_server: LlamaServer) -> None:
    # llama.cpp's Python server would answer any name with its one model; the
    # engine checks the name against /v1/models first.
    error, text = await _error(_engine(llama_server.url), _request("gpt-17"))
    assert error.code == "model_not_found"
    assert "gpt-17" in error.message and LLAMA_ALIAS in error.message
    assert text == ""


# --- the vLLM stand-in -----------------------------------------------------------------


async def test_usage_from_the_final_chunk_is_reported(vllm: VLLMStandIn) -> None:
    text, end = await _collect(_engine(vllm.url), _request(vllm.behaviour.base, max_tokens=3))
    assert text == "The quick brown "
    assert (end.finish_reason, end.prompt_tokens, end.completion_tokens) == ("length", 11, 3)
    sent = vllm.behaviour.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 3


async def test_a_whole_answer_finishes_with_stop(vllm: VLLMStandIn) -> None:
    text, end = await _collect(_engine(vllm.url), _request(vllm.behaviour.base, max_tokens=50))
    assert text.split() == vllm.behaviour.words
    assert end.finish_reason == "stop" and end.completion_tokens == 5


@pytest.mark.parametrize("flat", [False, True], ids=["nested-error", "flat-error"])
async def test_an_error_chunk_mid_stream_fails_after_the_text_so_far(
    vllm: VLLMStandIn, flat: bool
) -> None:
    vllm.behaviour.error_after = 2
    vllm.behaviour.flat_errors = flat
    error, text = await _error(_engine(vllm.url), _request(vllm.behaviour.base, max_tokens=10))
    assert error.code == "engine_failed"
    assert "CUDA error" in error.message
    assert text == "The quick "


async def test_a_stream_cut_short_without_a_finish_reason_is_a_failure(
    vllm: VLLMStandIn,
) -> None:
    # llama.cpp's Python server ends an interrupted answer with a bare [DONE]:
    # a cut answer must not pass for a finished one.
    vllm.behaviour.done_after = 2
    error, text = await _error(_engine(vllm.url), _request(vllm.behaviour.base, max_tokens=10))
    assert error.code == "engine_failed" and "interrupted" in error.message
    assert text == "The quick "


@pytest.mark.parametrize("flat", [False, True], ids=["nested-error", "flat-error"])
async def test_both_error_body_shapes_give_the_server_message(
    vllm: VLLMStandIn, flat: bool
) -> None:
    vllm.behaviour.flat_errors = flat
    vllm.behaviour.models_route = False  # so the request itself meets the 404
    error, _ = await _error(_engine(vllm.url), _request("no-such-model"))
    assert error.code == "model_not_found"
    assert "The model `no-such-model` does not exist." in error.message


def test_error_detail_reads_every_shape() -> None:
    nested = {"error": {"message": "bad", "type": "BadRequestError", "code": 400}}
    flat = {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}
    assert error_detail(nested) == error_detail(flat) == ("bad", "BadRequestError")
    assert error_detail({"detail": "Not Found"}) == ("Not Found", "")
    assert http_error(400, b'{"error": {"message": "too long"}}', model="m").code == (
        "engine_rejected"
    )
    assert http_error(429, b"slow down", model="m").code == "engine_busy"
    assert http_error(401, b"{}", model="m").code == "engine_auth"
    assert http_error(502, b"<html>bad gateway</html>", model="m").code == "engine_failed"


async def test_closing_the_stream_makes_vllm_abort_the_request(vllm: VLLMStandIn) -> None:
    vllm.behaviour.words = [f"w{i}" for i in range(200)]
    vllm.behaviour.token_delay = 0.02
    stream = _engine(vllm.url).stream(_request(vllm.behaviour.base, max_tokens=200))
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert await asyncio.to_thread(wait_until, lambda: vllm.behaviour.aborted, 5)
    assert not vllm.behaviour.finished


async def test_no_first_token_in_time_is_a_timeout(vllm: VLLMStandIn) -> None:
    vllm.behaviour.first_token_delay = 3
    started = time.perf_counter()
    engine = _engine(vllm.url, first_token_timeout=0.5)
    error, _ = await _error(engine, _request(vllm.behaviour.base))
    assert error.code == "timeout" and "no token within 0.5 s" in error.message
    assert time.perf_counter() - started < 2


async def test_a_server_going_silent_mid_answer_is_a_timeout(vllm: VLLMStandIn) -> None:
    vllm.behaviour.stall_after = 2
    error, text = await _error(_engine(vllm.url, idle_timeout=0.5), _request(vllm.behaviour.base))
    assert error.code == "timeout" and "went silent for 0.5 s" in error.message
    assert text == "The quick "


async def test_an_answer_over_the_total_time_is_a_timeout(vllm: VLLMStandIn) -> None:
    vllm.behaviour.words = [f"w{i}" for i in range(50)]
    vllm.behaviour.token_delay = 0.1
    engine = _engine(vllm.url, total_timeout=1.0, idle_timeout=5)
    error, text = await _error(engine, _request(vllm.behaviour.base, max_tokens=50))
    assert error.code == "timeout" and "longer than 1 s" in error.message
    assert 3 <= len(text.split()) < 50


async def test_the_api_key_comes_from_the_named_variable(
    vllm: VLLMStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    vllm.behaviour.api_key = "s3cret"
    engine = _engine(vllm.url, api_key_env="ARENA_TEST_VLLM_KEY")
    monkeypatch.delenv("ARENA_TEST_VLLM_KEY", raising=False)
    error, _ = await _error(engine, _request(vllm.behaviour.base))
    assert error.code == "engine_auth" and "ARENA_TEST_VLLM_KEY" in error.message
    monkeypatch.setenv("ARENA_TEST_VLLM_KEY", "wrong")
    error, _ = await _error(engine, _request(vllm.behaviour.base))
    assert error.code == "engine_auth"
    monkeypatch.setenv("ARENA_TEST_VLLM_KEY", "s3cret")
    text, _ = await _collect(engine, _request(vllm.behaviour.base))
    assert text


class _Chunks:
    """A response body arriving in the given pieces."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


async def _events_of(*chunks: bytes) -> list[str]:
    return [data async for data in _sse_data(_Chunks(*chunks))]  # type: ignore[arg-type]


async def test_sse_events_follow_the_event_stream_rules_however_the_bytes_arrive() -> None:
    body = (
        b": a comment\r\n"
        b"event: message\r\n"
        b'data: {"a": 1}\r\n\r\n'
        b"data:first\ndata: second\n\n"  # two data lines; no space after the colon
        b"id: 7\n\n"  # no data: no event
        b"data: \xc3\xa9t\xc3\xa9\n\n"
        b"data: unterminated"
    )
    expected = ['{"a": 1}', "first\nsecond", "été"]
    assert await _events_of(body) == expected
    # Every split of the bytes gives the same events: a line, a UTF-8
    # character or the CRLF pair cut across two network reads.
    for cut in range(1, len(body)):
        assert await _events_of(body[:cut], body[cut:]) == expected, cut
    assert await _events_of(*[body[i : i + 1] for i in range(len(body))]) == expected


async def test_an_sse_line_longer_than_the_buffer_is_refused() -> None:
    huge = b"data: " + b"x" * (READ_BUFFER_BYTES + 1)
    with pytest.raises(ValueError, match="longer than"):
        await _events_of(huge[: len(huge) // 2], huge[len(huge) // 2 :])
    with pytest.raises(UnicodeDecodeError):
        await _events_of(b"data: \xff\xfe\n\n")
