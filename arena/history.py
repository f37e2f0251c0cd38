"""Building the exact message list each side sees: pure functions, no Django."""

from __future__ import annotations

from collections.abc import Sequence

from inference.engines.base import Message

# No tokenizer is loaded in the web process; a conservative estimate (about
# three characters a token, plus per-message overhead) decides trimming.
CHARS_PER_TOKEN = 3
MESSAGE_OVERHEAD = 8


def tokens_estimate(messages: Sequence[Message]) -> int:
    return sum(len(m["content"]) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD for m in messages)


def messages_build(
    *,
    system_prompt: str,
    exchanges: Sequence[tuple[str, str]],
    user_text: str,
    budget_tokens: int,
) -> list[Message] | None:
    """System prompt + as many of the latest (user, assistant) exchanges as fit
    in `budget_tokens` + the new user message. Oldest exchanges go first.
    Returns None when even the new message alone does not fit.
    """
    head: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    tail: list[Message] = [{"role": "user", "content": user_text}]
    if tokens_estimate(head + tail) > budget_tokens:
        return None
    kept: list[Message] = []
    for user, assistant in reversed(exchanges):
        pair: list[Message] = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
        if tokens_estimate(head + pair + kept + tail) > budget_tokens:
            break
        kept = pair + kept
    return head + kept + tail
