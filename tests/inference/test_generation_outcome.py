"""What a stream's result is saved as (inference.generation.stream_outcome):
plain values in, an AnswerOutcome out; no database, no engine."""

from __future__ import annotations

from inference.engines.base import EngineError, StreamEnd
from inference.generation import StreamResult, stream_outcome


def _end(finish_reason: str = "length") -> StreamEnd:
    return StreamEnd(finish_reason=finish_reason, prompt_tokens=12, completion_tokens=40)


def test_a_finished_stream_keeps_the_engines_counts_and_its_finish_reason() -> None:
    result = StreamResult(text="Hello", tokens_seen=38, ttft=0.25, duration=2.0, end=_end())
    outcome = stream_outcome(result)
    assert (outcome.status, outcome.finish_reason) == ("done", "length")
    assert (outcome.prompt_tokens, outcome.tokens) == (12, 40)
    assert (outcome.ttft_ms, outcome.duration_ms) == (250.0, 2000.0)
    assert (outcome.text, outcome.error_code, outcome.error_message) == ("Hello", "", "")


def test_a_stopped_stream_is_stopped_with_the_tokens_it_counted() -> None:
    result = StreamResult(text="Once upon", tokens_seen=2, ttft=None, duration=0.5, stopped=True)
    outcome = stream_outcome(result)
    assert (outcome.status, outcome.finish_reason) == ("stopped", "stopped")
    assert (outcome.prompt_tokens, outcome.tokens, outcome.ttft_ms) == (None, 2, None)


def test_a_failed_stream_keeps_its_partial_text_and_a_cleaned_message() -> None:
    error = EngineError("engine_unreachable", "no route to host\x00")
    result = StreamResult(
        text="Half", tokens_seen=1, ttft=0.1, duration=3.0, end=_end(), error=error
    )
    outcome = stream_outcome(result)
    assert (outcome.status, outcome.finish_reason) == ("error", "error")
    assert (outcome.error_code, outcome.error_message) == (
        "engine_unreachable",
        "no route to host\ufffd",
    )
    assert (outcome.text, outcome.tokens, outcome.prompt_tokens) == ("Half", 1, None)
    assert outcome.duration_ms == 3000.0


def test_a_time_limit_that_cut_a_stream_fails_it_even_with_an_end() -> None:
    error = EngineError("timeout", "The model took too long to answer.")
    result = StreamResult(
        text="", tokens_seen=0, ttft=None, duration=300.0, end=_end(), error=error
    )
    assert (stream_outcome(result).status, stream_outcome(result).error_code) == (
        "error",
        "timeout",
    )


def test_an_engine_finish_reason_is_cleaned_and_a_stream_without_an_end_says_stop() -> None:
    odd = StreamResult(text="x", tokens_seen=1, ttft=0.0, duration=1.0, end=_end("eos\ud800"))
    assert stream_outcome(odd).finish_reason == "eos\ufffd"
    bare = StreamResult(text="x", tokens_seen=7, ttft=0.0, duration=1.0)
    assert (stream_outcome(bare).finish_reason, stream_outcome(bare).tokens) == ("stop", 7)
