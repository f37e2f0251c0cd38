"""The engine interface: what every way of producing an answer implements.

Small on purpose: one async streaming call. The local transformers engine and
an OpenAI-compatible HTTP engine sit beside each other behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    messages: list[Message]
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    extra: dict[str, float] = field(default_factory=dict)
    # The local engine: a LoRA adapter folder to run on the base. (Servers
    # name an adapter by its model name instead.)
    adapter_path: str = ""


@dataclass(frozen=True)
class TextDelta:
    text: str
    tokens: int = 0  # new tokens this delta covers, when the engine knows


@dataclass(frozen=True)
class StreamEnd:
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


StreamEvent = TextDelta | StreamEnd


REPLACEMENT = "\ufffd"


def text_clean(text: str) -> str:
    """Model text with what no database stores replaced by U+FFFD: NUL
    (PostgreSQL refuses it in text columns) and lone surrogates (a server's
    JSON may escape one, `\\ud800`; they have no UTF-8). Pairs of surrogates
    are joined into the character they encode. Pure; the common case (clean
    text) costs one scan and one encode."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class TextCleaner:
    """text_clean over a stream of deltas: a surrogate pair split across two
    deltas (each chunk decoded on its own) is joined, not replaced."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        self._held = ""
        if text and "\ud800" <= text[-1] <= "\udbff":  # a high surrogate: its pair may follow
            self._held, text = text[-1], text[:-1]
        return text_clean(text)

    def end(self) -> str:
        """What is still held when the stream ends: a lone surrogate, replaced."""
        held, self._held = self._held, ""
        return text_clean(held)


ZERO_WIDTH_SPACE = "\u200b"


def special_tokens_defused(messages: Sequence[Message], specials: Iterable[str]) -> list[Message]:
    """The messages with every special-token string a visitor or a model wrote
    (`<|im_start|>`, `<|endoftext|>`, ...) broken by a zero-width space after
    its first character: a tokenizer reads such a string in the rendered
    prompt as the control token itself, so a user message could otherwise
    close its own turn and forge a system one. The system prompt is the
    admin's and stays as written."""
    tokens = sorted({t for t in specials if len(t) > 1}, key=len, reverse=True)
    if not tokens:
        return list(messages)
    out: list[Message] = []
    for message in messages:
        content = message["content"]
        if message["role"] != "system" and any(t in content for t in tokens):
            for token in tokens:
                content = content.replace(token, token[0] + ZERO_WIDTH_SPACE + token[1:])
            message = {"role": message["role"], "content": content}
        out.append(message)
    return out


# Every code an EngineError may carry. Each is an answer error code with a
# fixed visitor message in arena.events.ANSWER_ERRORS (tests/arena/
# test_event_registry.py holds the two together; engines import no arena).
ENGINE_ERROR_CODES = frozenset(
    {
        "engine_failed",
        "engine_unknown",
        "engine_misconfigured",
        "engine_unreachable",
        "engine_rejected",
        "engine_busy",
        "engine_auth",
        "model_missing",
        "model_not_found",
        "adapter_invalid",
        "lora_unsupported",
        "lora_rejected",
        "timeout",
        "retrieval_failed",
    }
)


class EngineError(Exception):
    """A failure the visitor should see as that side's error, with a stable
    code from ENGINE_ERROR_CODES: a code outside it is a bug, refused here."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ENGINE_ERROR_CODES:
            raise ValueError(f"unknown engine error code {code!r}: add it to ENGINE_ERROR_CODES")
        super().__init__(message)
        self.code = code
        self.message = message


class Engine(Protocol):
    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        """Yield text deltas, then exactly one StreamEnd.

        Closing the iterator early (`aclose()`) cancels the generation and
        frees what it holds. Raises EngineError for failures.
        """
        ...
