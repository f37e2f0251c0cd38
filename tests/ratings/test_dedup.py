"""Prompt de-duplication: a prompt asked very often keeps a fixed sample of
its votes on the leaderboard; the rest are kept but left out by default."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from arena.models import Vote
from inference.models import Contender, Engine
from ratings.annotation import vote_annotate
from ratings.dedup import prompt_hash, sample_key
from ratings.models import Snapshot, VotePrompt
from ratings.selectors import VoteFilter
from ratings.services import leaderboard_compute, prompts_dedup_mark
from ratings.vote_import import votes_import

pytestmark = pytest.mark.django_db
GREETINGS = ["hi", "Hi", "  HI\n", "hI  "]


def _votes(prompts: Sequence[str | None], source: str = "arena") -> list[Vote]:
    """One vote per prompt (None: a vote without text) between two contenders."""
    a, _ = Contender.objects.get_or_create(name="left", defaults={"engine": Engine.NONE})
    b, _ = Contender.objects.get_or_create(name="right", defaults={"engine": Engine.NONE})
    votes = Vote.objects.bulk_create(
        Vote(
            contender_a=a,
            contender_b=b,
            choice="a" if i % 3 else "b",
            anonymous=True,
            source=source,
            created_at=timezone.now(),
        )
        for i, _ in enumerate(prompts)
    )
    for vote, prompt in zip(votes, prompts, strict=True):
        if prompt is not None:
            vote_annotate(
                vote=vote,
                prompts=[prompt],
                answers_a=["x"],
                answers_b=["y"],
                tokens_a=1,
                tokens_b=1,
            )
    return votes


def test_prompts_are_the_same_whatever_their_case_and_spacing() -> None:
    assert len({prompt_hash(p) for p in GREETINGS}) == 1
    assert prompt_hash("hi there") != prompt_hash("hithere")
    assert sample_key(prompt_hash("hi"), 1) != sample_key(prompt_hash("hi"), 2)


def test_a_vote_keeps_its_first_prompts_hash_and_a_vote_without_text_has_none() -> None:
    with_text, without = _votes(["  What is   2+2? ", None])
    assert VotePrompt.objects.get(vote=with_text).prompt_hash == prompt_hash("what is 2+2?")
    assert not VotePrompt.objects.filter(vote=without).exists()


def test_a_frequent_prompt_keeps_a_fixed_sample_of_threshold_votes() -> None:
    greetings = _votes([GREETINGS[i % 4] for i in range(30)])
    others = _votes([f"question {i}" for i in range(5)])
    bare = _votes([None] * 8, source="imported")
    assert prompts_dedup_mark(threshold=10) == 20
    kept = set(VoteFilter(dedup=True).queryset().values_list("id", flat=True))
    assert len(kept) == 10 + 5 + 8
    assert {v.pk for v in others + bare} <= kept
    # The sample is the ten smallest keys: the same on every refresh and database.
    by_key = sorted(greetings, key=lambda v: sample_key(prompt_hash("hi"), v.pk))
    assert {v.pk for v in by_key[:10]} <= kept
    assert VoteFilter(dedup=False).queryset().count() == 30 + 5 + 8
    assert prompts_dedup_mark(threshold=10) == 20
    assert set(VoteFilter(dedup=True).queryset().values_list("id", flat=True)) == kept


def test_marks_follow_new_votes_and_a_higher_threshold() -> None:
    _votes(["hi"] * 12)
    assert prompts_dedup_mark(threshold=10) == 2
    _votes(["hi"] * 3)
    assert prompts_dedup_mark(threshold=10) == 5
    assert VotePrompt.objects.filter(prompt_hash=prompt_hash("hi"), duplicate=False).count() == 10
    assert prompts_dedup_mark(threshold=50) == 0
    assert VoteFilter().queryset().count() == 15


def test_imported_conversations_are_deduplicated_and_bare_votes_are_not(tmp_path: Path) -> None:
    path = tmp_path / "votes.jsonl"
    rows = [
        {
            "model_a": "x",
            "model_b": "y",
            "winner": "model_a",
            "tstamp": 1700000000 + i,
            "conversation_a": [
                {"role": "user", "content": "Tell me a joke"},
                {"role": "assistant", "content": "A joke."},
            ],
            "conversation_b": [
                {"role": "user", "content": "Tell me a joke"},
                {"role": "assistant", "content": "Another."},
            ],
        }
        for i in range(4)
    ] + [
        {"model_a": "x", "model_b": "y", "winner": "tie", "tstamp": 1700000100 + i}
        for i in range(4)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    report = votes_import(path=path, source="lab")
    assert report.added == 8
    assert VotePrompt.objects.filter(prompt_hash=prompt_hash("tell me a joke")).count() == 4
    assert prompts_dedup_mark(threshold=2) == 2
    assert VoteFilter().queryset().count() == 6  # 2 sampled jokes + 4 bare votes


def test_the_leaderboard_deduplicates_by_default_and_the_checkbox_turns_it_off(
    settings: object,
) -> None:
    settings.ARENA_DEDUP_THRESHOLD = 5  # type: ignore[attr-defined]
    _votes(["hi"] * 20 + [f"q{i}" for i in range(10)])
    prompts_dedup_mark()
    assert leaderboard_compute(save=False).votes == 15
    assert leaderboard_compute(dedup=False, save=False).votes == 30
    client = Client()
    page = client.get("/leaderboard/")
    assert page.status_code == 200
    assert b'id="dedup" checked' in page.content
    assert b"15 votes" in page.content
    off = client.get("/leaderboard/", {"dedup": ["0"], "category": ""})
    assert b'id="dedup" checked' not in off.content
    assert b"30 votes" in off.content
    on = client.get("/leaderboard/", {"dedup": ["0", "1"]})  # the form: hidden 0, then the box
    assert b"15 votes" in on.content
    assert client.get("/leaderboard/leaderboard.json", {"dedup": "0"}).json()["votes"] == 30
    # Before the first refresh both boards come from the cache: a page view saves nothing.
    assert not Snapshot.objects.exists()
