from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.engines.base import Message
from inference.prompts import messages_build
from inference.tokens import local_count


def characters(messages: Sequence[Message]) -> int:
    """A plain counter for the tests that are about the trimming, not the tokens."""
    return sum(len(m["content"]) + 4 for m in messages)


def test_it_puts_the_system_prompt_first_and_the_new_message_last() -> None:
    messages = messages_build(
        system_prompt="Be brief.",
        exchanges=[("hi", "hello")],
        user_text="how are you?",
        budget_tokens=1000,
        count=characters,
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
    ]


def test_it_drops_the_oldest_exchanges_first_by_the_real_token_count() -> None:
    # Four characters a token for the words, three tokens a character for the
    # emoji-like letters: a character estimate would keep the wrong exchanges.
    exchanges = [
        ("question 0 " + "plain words " * 40, "answer 0 " + "plain words " * 40),
        ("question 1 " + "\U0001d54f" * 150, "answer 1 ok"),
        ("question 2 " + "plain words " * 40, "answer 2 " + "plain words " * 40),
        ("question 3 short", "answer 3 short"),
    ]
    alone = local_count([{"role": "user", "content": "latest"}])
    last_two = local_count(
        [
            {"role": "user", "content": exchanges[2][0]},
            {"role": "assistant", "content": exchanges[2][1]},
            {"role": "user", "content": exchanges[3][0]},
            {"role": "assistant", "content": exchanges[3][1]},
            {"role": "user", "content": "latest"},
        ]
    )
    messages = messages_build(
        system_prompt="",
        exchanges=exchanges,
        user_text="latest",
        budget_tokens=last_two + 100,  # not enough for exchange 1's ~450 tokens
        count=local_count,
    )
    assert messages is not None
    assert local_count(messages) == last_two <= last_two + 100
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users == [exchanges[2][0], exchanges[3][0], "latest"]
    assert alone < last_two


def test_a_message_that_cannot_fit_gives_none() -> None:
    too_long = "\U0001d54f" * 400  # 400 characters, about 1,200 SmolLM2 tokens
    assert local_count([{"role": "user", "content": too_long}]) > 1000
    built = messages_build(
        system_prompt="", exchanges=[], user_text=too_long, budget_tokens=1000, count=local_count
    )
    assert built is None


def test_everything_fits_in_one_count() -> None:
    calls: list[int] = []

    def counting(messages: Sequence[Message]) -> int:
        calls.append(len(messages))
        return characters(messages)

    exchanges = [(f"q{i}", f"a{i}") for i in range(8)]
    built = messages_build(
        system_prompt="s", exchanges=exchanges, user_text="u", budget_tokens=10_000, count=counting
    )
    assert built is not None and len(built) == 18
    assert calls == [18]


def _linear(
    system_prompt: str, exchanges: list[tuple[str, str]], user_text: str, budget: int
) -> list[Message] | None:
    """The plain newest-first scan messages_build's bisection must agree with."""
    head: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    tail: list[Message] = [{"role": "user", "content": user_text}]
    if characters(head + tail) > budget:
        return None
    kept: list[Message] = []
    for user, assistant in reversed(exchanges):
        pair: list[Message] = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
        if characters(head + pair + kept + tail) > budget:
            break
        kept = pair + kept
    return head + kept + tail


@settings(max_examples=300, deadline=None)
@given(
    system_prompt=st.text(max_size=30),
    exchanges=st.lists(st.tuples(st.text(max_size=60), st.text(max_size=60)), max_size=10),
    user_text=st.text(min_size=1, max_size=60),
    budget=st.integers(min_value=0, max_value=800),
)
def test_bisection_keeps_exactly_what_a_newest_first_scan_keeps(
    system_prompt: str, exchanges: list[tuple[str, str]], user_text: str, budget: int
) -> None:
    built = messages_build(
        system_prompt=system_prompt,
        exchanges=exchanges,
        user_text=user_text,
        budget_tokens=budget,
        count=characters,
    )
    assert built == _linear(system_prompt, exchanges, user_text, budget)
