"""Prompt de-duplication keys: pure functions, no Django.

LMArena down-weights prompts asked very often (the same "hi" or riddle, tens
of thousands of times) so they do not dominate the ratings: of each such
prompt it keeps a fixed sample. Here a prompt is the conversation's first
user message with whitespace collapsed and case folded; the sample is the
votes with the smallest `sample_key`, a hash of the prompt and the vote, so
it is the same on every refresh and every database.
"""

from __future__ import annotations

import hashlib


def prompt_normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def prompt_hash(text: str) -> str:
    return hashlib.sha256(prompt_normalise(text).encode()).hexdigest()


def sample_key(prompt_hash: str, vote_id: int) -> str:
    return hashlib.sha256(f"{prompt_hash}:{vote_id}".encode()).hexdigest()[:16]


def vote_prompt_keys(vote_id: int, first_prompt: str) -> dict[str, str]:
    """The VotePrompt fields of a vote whose conversation began with `first_prompt`."""
    digest = prompt_hash(first_prompt)
    return {"prompt_hash": digest, "sample_key": sample_key(digest, vote_id)}
