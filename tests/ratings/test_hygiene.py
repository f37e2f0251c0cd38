import numpy as np

from ratings.categories import conversation_categories, imported_categories
from ratings.hygiene import identity_leak, identity_pattern, outlier_p_values


def test_categories_of_a_conversation() -> None:
    assert conversation_categories(["Bonjour, pouvez-vous m'aider avec ma recette ?"]) == {
        "language:fr"
    }
    tags = conversation_categories(["Fix this:\n```python\ndef f(): pass\n```", "thanks"])
    assert {"coding", "multi_turn", "language:en"} <= tags
    assert "longer_query" in conversation_categories(["word " * 500])


def test_hard_prompts_need_six_of_seven_criteria() -> None:
    five = {
        f"criteria_v0.1.{c}": "True"
        for c in ("complexity", "creativity", "domain_knowledge", "problem_solving", "real_world")
    }
    assert "hard_prompts" not in imported_categories(five)
    six = {**five, "criteria_v0.1.specificity": "True"}
    assert "hard_prompts" in imported_categories(six)


def test_an_answer_naming_a_model_or_vendor_is_caught() -> None:
    pattern = identity_pattern(["smollm2-concise", "alpha"])
    assert identity_leak(["I am ChatGPT, made by OpenAI."], pattern).lower() == "chatgpt"
    assert identity_leak(["Trained by Anthropic."], pattern).lower() == "anthropic"
    assert identity_leak(["As smollm2, I think"], pattern) == "smollm2"
    assert identity_leak(["The alphabet has 26 letters."], pattern) == ""


def test_a_contrarian_voter_gets_a_tiny_p_value_and_a_normal_one_does_not() -> None:
    rng = np.random.default_rng(0)
    votes = 4000
    pair = rng.integers(0, 5, votes)
    # Everyone: side A wins pair k with probability 0.9 (a strong side A).
    outcome = (rng.random(votes) > 0.9).astype(np.int64)
    voter = rng.integers(1, 40, votes)
    # Voter 0 always picks the side everyone else rejects.
    contrarian = 30
    pair = np.concatenate([pair, rng.integers(0, 5, contrarian)])
    outcome = np.concatenate([outcome, np.ones(contrarian, dtype=np.int64)])
    voter = np.concatenate([voter, np.zeros(contrarian, dtype=np.int64)])
    p = outlier_p_values(voter, pair, outcome, 40)
    assert p[0] < 1e-6
    assert np.nanmedian(p[1:]) > 0.05
