"""A vote's annotations are ratings' work, done after the vote commits: by the
task arena queues by name (a Celery worker, or a thread of the embedded
default), or by the next refresh when that task never ran; once either way."""

from __future__ import annotations

import time

import pytest

from arena import services
from arena.models import Answer, Battle, Vote
from inference.models import Contender
from ratings.annotation import battle_vote_annotate, votes_annotate_pending
from ratings.models import VoteCategory, VotePrompt, VoteStyle
from ratings.services import snapshots_refresh


def _voted(visitor: str, text_a: str = "Hello.", text_b: str = "Hi.") -> Vote:
    """Alpha (side a) against beta, one finished turn, voted anonymously
    through arena's services."""
    battle = services.battle_create(
        session_key=visitor, mode="named", contender_a="alpha", contender_b="beta"
    )
    Battle.objects.filter(pk=battle.pk).update(mode="anonymous")
    answers = services.turn_create(
        battle_id=battle.pk, session_key=visitor, text="Bonjour, une recette ?"
    )
    for answer, text in zip(answers, (text_a, text_b), strict=True):
        Answer.objects.filter(pk=answer.pk).update(
            status=Answer.Status.DONE, text=text, tokens=len(text.split())
        )
    return services.vote_record(battle_id=battle.pk, session_key=visitor, choice="a")


@pytest.mark.django_db
def test_a_vote_is_annotated_from_its_battle_once(contenders: list[Contender], alice: str) -> None:
    vote = _voted(alice, "# Title\n- one\n- **two**", "I am alpha.")
    assert not VoteStyle.objects.filter(vote=vote).exists()  # nothing under the vote's lock
    assert battle_vote_annotate(vote_id=vote.pk) is True
    style = VoteStyle.objects.get(vote=vote)
    assert (style.tokens_a, style.headers_a, style.lists_a, style.bold_a) == (6, 1, 2, 1)
    assert "language:fr" in set(
        VoteCategory.objects.filter(vote=vote).values_list("name", flat=True)
    )
    assert VotePrompt.objects.filter(vote=vote).exists()
    vote.refresh_from_db()
    assert (vote.identity_leak, vote.leak_evidence) == (True, "alpha")
    # A second annotation (the task and a refresh at once) changes nothing.
    assert battle_vote_annotate(vote_id=vote.pk) is False
    assert VoteStyle.objects.filter(vote=vote).count() == 1
    assert battle_vote_annotate(vote_id=vote.pk + 1000) is False  # gone: nothing to do


@pytest.mark.django_db
def test_a_refresh_annotates_the_votes_no_task_did_before_it_counts_them(
    contenders: list[Contender], alice: str, settings: object
) -> None:
    settings.ARENA_MIN_VOTES = 1  # type: ignore[attr-defined]
    clean, leak = _voted(alice), _voted(alice, "I am alpha.")
    assert not VoteStyle.objects.exists()  # no task ran (no commit in this test)
    snapshots = snapshots_refresh()
    assert snapshots is not None
    assert VoteStyle.objects.filter(vote__in=[clean, leak]).count() == 2
    overall = next(s for s in snapshots if s.category == "" and not s.style_control)
    assert overall.votes == 1  # the leak is flagged before the board is fitted
    assert votes_annotate_pending() == 0


@pytest.mark.django_db(transaction=True)
def test_ratings_task_annotates_a_committed_vote(
    contenders: list[Contender], alice: str, generation: None
) -> None:
    vote = _voted(alice)
    deadline = time.monotonic() + 60
    while not VoteStyle.objects.filter(vote=vote).exists():
        assert time.monotonic() < deadline, "no annotation from ratings' task"
        time.sleep(0.1)
