from arena.history import messages_build, tokens_estimate


def test_it_puts_the_system_prompt_first_and_the_new_message_last() -> None:
    messages = messages_build(
        system_prompt="Be brief.",
        exchanges=[("hi", "hello")],
        user_text="how are you?",
        budget_tokens=1000,
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
    ]


def test_it_drops_the_oldest_exchanges_first_to_fit() -> None:
    exchanges = [(f"question {i} " + "x" * 300, f"answer {i} " + "y" * 300) for i in range(5)]
    budget = 2 * 220 + 100  # room for about two exchanges
    messages = messages_build(
        system_prompt="", exchanges=exchanges, user_text="latest", budget_tokens=budget
    )
    assert messages is not None
    assert tokens_estimate(messages) <= budget
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users[-1] == "latest"
    assert users[0].startswith("question 3")
    assert not any(u.startswith("question 0") for u in users)


def test_a_message_that_cannot_fit_gives_none() -> None:
    assert (
        messages_build(system_prompt="", exchanges=[], user_text="x" * 900, budget_tokens=100)
        is None
    )
