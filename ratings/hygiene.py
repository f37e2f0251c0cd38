"""Vote hygiene: identity leaks and outlier voters. Pure functions, no Django."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2

# Names an answer may drop to reveal who wrote it (LMArena filters these).
VENDOR_WORDS = (
    "openai",
    "chatgpt",
    "gpt-4",
    "gpt-3",
    "anthropic",
    "claude",
    "google",
    "gemini",
    "bard",
    "meta ai",
    "llama",
    "mistral",
    "mixtral",
    "qwen",
    "alibaba",
    "deepseek",
    "smollm",
    "hugging face",
    "huggingface",
    "microsoft",
    "phi-3",
    "cohere",
    "xai",
    "grok",
)


def identity_pattern(contender_names: Iterable[str]) -> re.Pattern[str]:
    words = {w.lower() for w in VENDOR_WORDS}
    # A contender's own name, and its stem before the first dash or digit
    # ("smollm2-concise" -> "smollm2"), when that is specific enough.
    for name in contender_names:
        name = name.lower()
        words.add(name)
        stem = re.split(r"[-_:/ ]", name)[0]
        if len(stem) >= 5:
            words.add(stem)
    alternatives = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    return re.compile(rf"(?<![\w-])({alternatives})(?![\w])", re.IGNORECASE)


def identity_leak(answers: Sequence[str], pattern: re.Pattern[str]) -> str:
    """The first model or vendor name found in the answers, or ""."""
    for text in answers:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return ""


def outlier_p_values(
    voter: NDArray[np.int64],
    pair: NDArray[np.int64],
    outcome: NDArray[np.int64],
    n_voters: int,
    *,
    min_votes: int = 5,
) -> NDArray[np.float64]:
    """Fisher's combined p-value per voter (NaN under `min_votes`).

    Each vote's p-value is the probability, under the pair's outcome
    frequencies from everyone else's votes (add-one smoothed), of an outcome
    at most as likely as the one cast; -2 sum(log p) over a voter's votes is
    chi-squared with 2k degrees of freedom when the voter votes like the
    crowd (the LMArena paper's anomalous-user test).
    """
    k = 4
    n_pairs = int(pair.max()) + 1 if pair.size else 0
    counts = np.zeros((n_pairs, k))
    np.add.at(counts, (pair, outcome), 1.0)
    # Leave the vote out of its own reference distribution.
    others = counts[pair] - np.eye(k)[outcome] + 1.0
    probs = others / others.sum(axis=1, keepdims=True)
    cast = probs[np.arange(len(outcome)), outcome]
    p = (probs * (probs <= cast[:, None] + 1e-12)).sum(axis=1)
    stat = np.bincount(voter, weights=-2.0 * np.log(np.clip(p, 1e-300, 1.0)), minlength=n_voters)
    votes = np.bincount(voter, minlength=n_voters)
    combined = np.full(n_voters, np.nan)
    enough = votes >= min_votes
    combined[enough] = chi2.sf(stat[enough], 2 * votes[enough])
    return combined
