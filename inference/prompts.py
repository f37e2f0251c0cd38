"""Building the exact message list a contender is sent for a turn: as many
of the side's earlier exchanges as fit its context window. Pure functions,
no Django (inference.selectors.contender_messages feeds them the counts)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from inference.engines.base import Message

# Tokens of a whole message list, as the contender's engine will see it
# (inference.tokens.prompt_counter gives the one for a contender).
PromptCounter = Callable[[Sequence[Message]], int]


def messages_build(
    *,
    system_prompt: str,
    exchanges: Sequence[tuple[str, str]],
    user_text: str,
    budget_tokens: int,
    count: PromptCounter,
) -> list[Message] | None:
    """System prompt + as many of the latest (user, assistant) exchanges as fit
    in `budget_tokens` by `count` + the new user message. Oldest exchanges go
    first. Returns None when even the new message alone does not fit.

    A count tokenizes the whole list (a chat template is not a sum of its
    messages), so the number of exchanges kept is found by bisection: one
    count when everything fits, about log2(turns) + 2 otherwise. Counts grow
    with every exchange added, which is what makes bisection exact.
    """
    head: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    tail: list[Message] = [{"role": "user", "content": user_text}]
    pairs: list[list[Message]] = [
        [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        for user, assistant in exchanges
    ]

    def latest(n: int) -> list[Message]:
        kept = [m for pair in pairs[len(pairs) - n :] for m in pair] if n else []
        return head + kept + tail

    if count(latest(len(pairs))) <= budget_tokens:
        return latest(len(pairs))
    if not pairs or count(latest(0)) > budget_tokens:
        return None
    fits, too_many = 0, len(pairs)  # latest(fits) fits, latest(too_many) does not
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        if count(latest(middle)) <= budget_tokens:
            fits = middle
        else:
            too_many = middle
    return latest(fits)
