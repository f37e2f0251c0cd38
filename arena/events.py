"""Every websocket event, in one place.

Client -> server events are parsed by `client_event_parse` into dataclasses
(or a ArenaError with a stable code); server -> client events are
TypedDicts built by the small constructors below. The README documents both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast

log = logging.getLogger(__name__)

# --- errors -----------------------------------------------------------------

# Stable error codes; the README lists them. Each is a visitor-facing reason.
ERROR_CODES = {
    "bad_json": "The message is not a JSON object.",
    "unknown_type": "Unknown event type.",
    "bad_field": "A field is missing or has the wrong type.",
    "no_session": "No visitor cookie; reload the page.",
    "no_battle": "There is no battle with that id for this visitor.",
    "forbidden": "That battle belongs to another visitor.",
    "no_contenders": "Not enough enabled contenders to start a battle.",
    "bad_contender": "Pick two different, enabled contenders.",
    "empty_prompt": "The message is empty.",
    "prompt_too_long": "The message is too long.",
    "too_many_turns": "This battle has reached its turn limit; vote or start a new round.",
    "busy": "Wait until both answers are finished.",
    "not_ready": "Both answers of the last turn must be finished before voting.",
    "failed_turn": "An answer of the last turn failed; regenerate it before voting.",
    "empty_answer": "An answer of the last turn is empty; regenerate it before voting.",
    "nothing_to_do": "There is nothing to regenerate or stop.",
    "already_voted": "This battle already has a vote; start a new round.",
    "invalid_choice": "The vote must be one of a, b, tie, both_bad.",
    "too_large": "The message is too large.",
    "rate_limited": "Too many requests; wait a little and try again.",
    "too_many_sockets": "Too many open windows; close one and reload.",
    "moderated": "This message was refused by the moderation policy.",
    "unavailable": "The service is briefly unavailable; try again in a few seconds.",
    "internal": "Something went wrong; try again.",
}


class ArenaError(Exception):
    def __init__(self, code: str, message: str | None = None, *, retry_after: int = 0) -> None:
        assert code in ERROR_CODES, code
        self.code = code
        self.message = message or ERROR_CODES[code]
        self.retry_after = retry_after
        super().__init__(self.message)


# Why an answer failed, as a visitor may read it: one fixed message per code.
# The detail (endpoint, host, environment variable, served models, adapter
# path) names the contender's setup, so it goes to the log and to
# `Answer.error_message` for the admin, never to the page (issue 14).
ANSWER_ERRORS = {
    "engine_failed": "The model failed while answering; regenerate to try again.",
    "engine_unknown": "This model is not set up correctly; regenerate to try again.",
    "engine_misconfigured": "This model is not set up correctly; regenerate to try again.",
    "engine_unreachable": "The model server could not be reached; regenerate to try again.",
    "engine_rejected": "The model server refused the request; regenerate to try again.",
    "engine_busy": "The model server is busy; regenerate in a little while.",
    "engine_auth": "The model server refused the request; regenerate to try again.",
    "model_missing": "The model is not installed on the server; regenerate to try again.",
    "model_not_found": "The model server does not serve this model; regenerate to try again.",
    "adapter_invalid": "The model's adapter could not be loaded; regenerate to try again.",
    "lora_unsupported": "The model's adapter could not be loaded; regenerate to try again.",
    "lora_rejected": "The model's adapter could not be loaded; regenerate to try again.",
    "timeout": "The model took too long to answer; regenerate to try again.",
    "retrieval_failed": "Retrieval from the knowledge base failed; regenerate to try again.",
    "worker_lost": "The worker generating this answer stopped; regenerate to try again.",
    "not_started": "No worker picked this answer up in time; regenerate to try again.",
    "unavailable": "The service is briefly unavailable; regenerate in a few seconds.",
    "bad_output": "The answer could not be saved; regenerate to try again.",
    "internal": "The answer failed on the server; regenerate it.",
}
ANSWER_ERROR_GENERIC = "The answer failed; regenerate to try again."


def answer_error_message(code: str) -> str:
    """The visitor's message for an answer error code; an unknown code (a
    registry entry forgotten) gets the generic one, and is logged."""
    message = ANSWER_ERRORS.get(code)
    if message is None:
        log.error("answer error code %r has no visitor message in ANSWER_ERRORS", code)
        return ANSWER_ERROR_GENERIC
    return message


# --- client -> server -----------------------------------------------------

VoteChoice = Literal["a", "b", "tie", "both_bad"]
VOTE_CHOICES: tuple[str, ...] = ("a", "b", "tie", "both_bad")
MAX_FRAME_CHARS = 64_000


@dataclass(frozen=True)
class BattleStart:
    mode: Literal["anonymous", "named"] = "anonymous"
    contender_a: str | None = None
    contender_b: str | None = None


@dataclass(frozen=True)
class BattleResume:
    battle: str


@dataclass(frozen=True)
class MessageSend:
    text: str


@dataclass(frozen=True)
class VoteCast:
    choice: VoteChoice


@dataclass(frozen=True)
class Regenerate:
    pass


@dataclass(frozen=True)
class Stop:
    pass


ClientEvent = BattleStart | BattleResume | MessageSend | VoteCast | Regenerate | Stop


def _field(data: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise ArenaError("bad_field", f"Field {name!r} is required.")
        return None
    value = data[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ArenaError("bad_field", f"Field {name!r} must be a {kind.__name__}.")
    if isinstance(value, str) and _has_bad_chars(value):
        raise ArenaError("bad_field", f"Field {name!r} holds a NUL or an unpaired surrogate.")
    return value


def _has_bad_chars(text: str) -> bool:
    """NUL (PostgreSQL refuses it in text columns) or a lone surrogate (JSON
    allows the escape `\\ud800`; no database can store it as UTF-8)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _battle_start(data: dict[str, Any]) -> BattleStart:
    mode = _field(data, "mode", str, required=False) or "anonymous"
    if mode not in ("anonymous", "named"):
        raise ArenaError("bad_field", "Field 'mode' must be 'anonymous' or 'named'.")
    a = _field(data, "contender_a", str, required=mode == "named")
    b = _field(data, "contender_b", str, required=mode == "named")
    return BattleStart(
        mode="named" if mode == "named" else "anonymous", contender_a=a, contender_b=b
    )


def _vote(data: dict[str, Any]) -> VoteCast:
    choice = _field(data, "choice", str)
    if choice not in VOTE_CHOICES:
        raise ArenaError("invalid_choice")
    return VoteCast(choice=cast(VoteChoice, choice))


# One parser per client event type: the README's client table lists these keys.
CLIENT_PARSERS: dict[str, Callable[[dict[str, Any]], ClientEvent]] = {
    "battle.start": _battle_start,
    "battle.resume": lambda data: BattleResume(battle=_field(data, "battle", str)),
    "message.send": lambda data: MessageSend(text=_field(data, "text", str)),
    "vote": _vote,
    "regenerate": lambda data: Regenerate(),
    "stop": lambda data: Stop(),
}


def client_event_parse(raw: str | None) -> ClientEvent:
    if raw is None:
        raise ArenaError("bad_json", "Binary frames are not accepted.")
    if len(raw) > MAX_FRAME_CHARS:
        raise ArenaError("too_large")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ArenaError("bad_json") from None
    if not isinstance(data, dict):
        raise ArenaError("bad_json")
    kind = data.get("type")
    parse = CLIENT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parse is None:
        raise ArenaError("unknown_type", f"Unknown event type {str(kind)[:40]!r}.")
    return parse(data)


# --- server -> client -----------------------------------------------------


class AnswerState(TypedDict):
    side: str
    attempt: int
    status: str
    text: str
    html: str
    # PublicStats until the battle is revealed (voted, or named mode).
    stats: PublicStats | AnswerStats
    error: ErrorInfo | None
    # RAG contenders: the passages the answer was given, once names are
    # revealed (None before, and for other contenders).
    sources: list[SourceInfo] | None


class SourceInfo(TypedDict):
    document: str
    source: str
    section: str
    text: str
    score: float  # rank fusion of the dense and lexical rankings
    similarity: float  # cosine similarity to the question


class TurnSources(TypedDict):
    turn: int
    side: str
    sources: list[SourceInfo]


class PublicStats(TypedDict):
    """What the page needs to render an answer before the reveal. Nothing
    more: `prompt_tokens` for a fixed probe prompt fingerprints a contender's
    system prompt and template, and timings fingerprint its server."""

    tokens: int | None
    finish_reason: str


class AnswerStats(PublicStats):
    """An answer's full stats, once the battle is revealed."""

    prompt_tokens: int | None
    ttft_ms: float | None
    duration_ms: float | None
    tokens_per_s: float | None


class TurnStats(TypedDict):
    turn: int
    side: str
    stats: AnswerStats


class ErrorInfo(TypedDict):
    code: str
    message: str


class TurnState(TypedDict):
    index: int
    user: str
    a: AnswerState | None
    b: AnswerState | None


class BattleInfo(TypedDict):
    id: str
    mode: str
    status: str
    can_vote: bool
    can_send: bool
    turns_left: int
    # Names are present only when the mode is named or the battle is voted.
    models: dict[str, str] | None
    vote: str | None


class BattleStateEvent(TypedDict):
    type: Literal["battle.state"]
    battle: BattleInfo
    turns: list[TurnState]


class GenStartEvent(TypedDict):
    type: Literal["gen.start"]
    side: str
    turn: int
    attempt: int


class GenDeltaEvent(TypedDict):
    type: Literal["gen.delta"]
    side: str
    turn: int
    attempt: int
    seq: int
    offset: int  # where `text` starts in the full answer: lets a client stitch after a resync
    text: str


class GenDoneEvent(TypedDict):
    type: Literal["gen.done"]
    side: str
    turn: int
    attempt: int
    text: str
    html: str
    stats: PublicStats  # the worker does not know the mode: never more before the reveal


class GenErrorEvent(TypedDict):
    type: Literal["gen.error"]
    side: str
    turn: int
    attempt: int
    code: str
    message: str


class VoteRecordedEvent(TypedDict):
    type: Literal["vote.recorded"]
    choice: str
    models: dict[str, str]
    sources: list[TurnSources]  # RAG answers' passages, revealed with the names
    stats: list[TurnStats]  # every current answer's full stats, revealed with the names


class ErrorEvent(TypedDict, total=False):
    type: Literal["error"]
    code: str
    message: str
    retry_after: int  # seconds, with rate_limited and unavailable


ServerEvent = (
    BattleStateEvent
    | GenStartEvent
    | GenDeltaEvent
    | GenDoneEvent
    | GenErrorEvent
    | VoteRecordedEvent
    | ErrorEvent
)


def public_stats(*, tokens: int | None, finish_reason: str) -> PublicStats:
    return {"tokens": tokens, "finish_reason": finish_reason}


def answer_error_info(code: str) -> ErrorInfo:
    return {"code": code, "message": answer_error_message(code)}


def battle_state_event(*, battle: BattleInfo, turns: list[TurnState]) -> BattleStateEvent:
    return {"type": "battle.state", "battle": battle, "turns": turns}


def gen_start_event(*, side: str, turn: int, attempt: int) -> GenStartEvent:
    return {"type": "gen.start", "side": side, "turn": turn, "attempt": attempt}


def gen_delta_event(
    *, side: str, turn: int, attempt: int, seq: int, offset: int, text: str
) -> GenDeltaEvent:
    return {
        "type": "gen.delta",
        "side": side,
        "turn": turn,
        "attempt": attempt,
        "seq": seq,
        "offset": offset,
        "text": text,
    }


def gen_done_event(
    *, side: str, turn: int, attempt: int, text: str, html: str, stats: PublicStats
) -> GenDoneEvent:
    return {
        "type": "gen.done",
        "side": side,
        "turn": turn,
        "attempt": attempt,
        "text": text,
        "html": html,
        "stats": stats,
    }


def gen_error_event(*, side: str, turn: int, attempt: int, code: str) -> GenErrorEvent:
    """A failed answer as the visitor sees it: the code and its fixed message."""
    return {
        "type": "gen.error",
        "side": side,
        "turn": turn,
        "attempt": attempt,
        "code": code,
        "message": answer_error_message(code),
    }


def vote_recorded_event(
    *,
    choice: str,
    models: dict[str, str],
    sources: list[TurnSources],
    stats: list[TurnStats],
) -> VoteRecordedEvent:
    return {
        "type": "vote.recorded",
        "choice": choice,
        "models": models,
        "sources": sources,
        "stats": stats,
    }


def error_event(err: ArenaError) -> ErrorEvent:
    event: ErrorEvent = {"type": "error", "code": err.code, "message": err.message}
    if err.retry_after:
        event["retry_after"] = err.retry_after
    return event
