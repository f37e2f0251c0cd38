"""Vote hygiene: identity leaks and outlier voters. Pure functions, no Django."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2

# Names an answer may drop to reveal who wrote it, that no ordinary sentence
# uses: a leak wherever they stand.
VENDOR_WORDS = (
    "openai",
    "chatgpt",
    "anthropic's",
    "deepmind",
    "mixtral",
    "qwen",
    "deepseek",
    "smollm",
    "hugging face",
    "huggingface",
    "lmsys",
    "lmarena",
    "chatglm",
    "zhipu",
)
# GPT-3.5, gpt-4o, GPT4, gpt-4.1-mini...
VENDOR_PATTERNS = (r"gpt-?\d(?:\.\d+)?[a-z]?",)
# Names that are also ordinary words (a river, an algorithm, a wind, a
# shell command, a poet): a leak only where an answer says who it is
# ("I am Gemma", "trained by Google", "an AI assistant from Amazon").
SELF_NAMED_WORDS = (
    "google",
    "meta",
    "meta ai",
    "microsoft",
    "amazon",
    "apple",
    "nvidia",
    "ibm",
    "anthropic",
    "claude",
    "gemini",
    "gemma",
    "bard",
    "palm",
    "llama",
    "mistral",
    "mistral ai",
    "cohere",
    "command",
    "xai",
    "grok",
    "alibaba",
    "alibaba cloud",
    "phi",
    "nova",
    "minimax",
    "moonshot",
    "kimi",
    "tencent",
    "hunyuan",
    "baidu",
    "ernie",
    "granite",
    "olmo",
    "tulu",
    "databricks",
    "dbrx",
    "vicuna",
)
# What comes before a name when an answer speaks of itself: "I am X", "my
# name is X", "I was trained by X", "I'm a language model built by X", "an
# AI assistant from X". Not "the Kindle was built by Amazon".
_MAKERS = r"(?:made|developed|created|trained|built|designed|released|produced|owned)"
_APOSTROPHE = "['\u2019]"
_SELF_NAMING = (
    rf"(?:\b(?:i\s+am|i{_APOSTROPHE}m|my\s+name\s+is|call\s+me)\s+"
    rf"|\b(?:i\s+am|i{_APOSTROPHE}m|i\s+was|i\s+have\s+been|i{_APOSTROPHE}ve\s+been)\s+"
    rf"(?:[\w-]+\s+){{0,5}}?{_MAKERS}\s+by\s+"
    rf"|\b(?:ai|assistant|chatbot|language\s+model)\s+(?:{_MAKERS}\s+)?(?:by|from)\s+)"
    r"(?:the\s+)?(?:team\s+at\s+)?"
)
# A derived stem shorter than this is too often something else ("o3" is ozone).
_MIN_STEM = 4
_SEPARATORS = r"[-_:/. ]"


def identity_terms(identities: Iterable[str]) -> tuple[set[str], set[str]]:
    """(terms that leak wherever they appear, terms that leak only where an
    answer names itself) for the contenders that can battle.

    `identities` are their names and model ids. A full name leaks anywhere; so
    do stems with a digit ("smollm2" of "smollm2-concise", "gemma-3" of
    "gemma-3-27b-it"), which no dictionary holds. A stem of letters only
    ("command" of "command-a-03-2025"), or a name of letters alone, is an
    ordinary word as often as not: only "I am Command" gives it away."""
    anywhere: set[str] = set()
    self_named: set[str] = set()
    for identity in identities:
        name = identity.strip().lower()
        if not name:
            continue
        last = name.rsplit("/", 1)[-1]  # "HuggingFaceTB/SmolLM2-135M-Instruct"
        for whole in {name, last}:
            # A name of letters alone ("alpha", "concise") can be any word.
            (self_named if whole.isalpha() else anywhere).add(whole)
        parts = [p for p in re.split(_SEPARATORS, last) if p]
        for stem in (parts[:1], parts[:2]):
            term = "-".join(stem)
            if not term or term == last:
                continue
            if re.search(r"\d", term) and re.search(r"[a-z]{2}", term) and len(term) >= _MIN_STEM:
                anywhere.add(term)
            elif term.isalpha() and len(term) >= 3:
                self_named.add(term)
    return anywhere, self_named


def _alternatives(words: Iterable[str]) -> str:
    # Longest first, so "meta ai" wins over "meta"; a dash or a space inside a
    # name matches either or none ("gemma-3", "Gemma 3", "gemma3").
    ordered = sorted(set(words), key=len, reverse=True)
    return "|".join(re.sub(r"\\[- ]", r"[-\\s]?", re.escape(w)) for w in ordered)


@lru_cache(maxsize=64)
def _compiled(identities: tuple[str, ...]) -> re.Pattern[str]:
    anywhere, self_named = identity_terms(identities)
    # A vendor's word with a version ("qwen2.5", "smollm3") is the same leak.
    vendors = rf"(?:{_alternatives(VENDOR_WORDS)})(?:\d+(?:\.\d+)?)?"
    # The contenders' own names first: the evidence is the longest name.
    always = "|".join(a for a in (_alternatives(anywhere), *VENDOR_PATTERNS, vendors) if a)
    named = _alternatives({*SELF_NAMED_WORDS, *self_named})
    # Not "I am command-line savvy", but "I'm Claude-3".
    return re.compile(
        rf"(?<![\w-])(?P<word>{always})(?![\w])"
        rf"|{_SELF_NAMING}(?P<self>{named})(?![\w]|-[a-z])",
        re.IGNORECASE,
    )


def identity_pattern(identities: Iterable[str]) -> re.Pattern[str]:
    """What counts as a leak in an answer, given the names and model ids of
    the contenders that can battle (never those known only from imports:
    their names are words like "command", "amazon", "o3" or "gemma")."""
    return _compiled(tuple(sorted({i.strip().lower() for i in identities if i.strip()})))


def identity_leak(answers: Sequence[str], pattern: re.Pattern[str]) -> str:
    """The first model or vendor name found in the answers, or ""."""
    for text in answers:
        match = pattern.search(text)
        if match:
            return match.group("word") or match.group("self")
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
