"""What ratings keeps of a fresh vote: its categories, the answers' style
counts, the prompt's de-duplication key, the identity-leak flag and the
visitor's daily-cap flag.

Computed after the vote commits, outside the battle's lock: by the task arena
queues by name when it records a vote (ratings.tasks.vote_counted), or by the
next refresh for a vote whose task was delayed or lost (its broker down), so
no board is computed from a vote that was never looked at. A vote is
annotated once: its style row is the claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from arena.models import Side, Turn, Vote
from ratings.categories import conversation_categories
from ratings.dedup import vote_prompt_keys
from ratings.hygiene import identity_leak, identity_pattern
from ratings.models import VoteCategory, VotePrompt, VoteStyle
from ratings.selectors import identities_battling
from ratings.style import markdown_counts


def battle_vote_annotate(*, vote_id: int) -> bool:
    """Annotate a battle's vote from the battle's conversation (closed by the
    vote, so it reads the same however late this runs). False when the vote
    is annotated already, gone, or has no battle."""
    vote = Vote.objects.filter(pk=vote_id, battle__isnull=False).first()
    if vote is None:
        return False
    turns = list(
        Turn.objects.filter(battle__vote=vote).prefetch_related("answers").order_by("index")
    )
    current = [{a.side: a for a in t.answers.all() if not a.superseded} for t in turns]
    try:
        with transaction.atomic():
            vote_annotate(
                vote=vote,
                prompts=[t.user_text for t in turns],
                answers_a=[c[Side.A].text for c in current],
                answers_b=[c[Side.B].text for c in current],
                tokens_a=sum(c[Side.A].tokens or 0 for c in current),
                tokens_b=sum(c[Side.B].tokens or 0 for c in current),
            )
    except IntegrityError:  # annotated meanwhile (the task and a refresh at once)
        return False
    return True


def votes_annotate_pending() -> int:
    """Annotate the votes cast here that have no annotation yet; how many.
    (An imported vote with a conversation but no style counts stays so.)"""
    pending = Vote.objects.filter(source="arena", battle__isnull=False, style__isnull=True)
    pending = pending.order_by("pk")
    return sum(battle_vote_annotate(vote_id=pk) for pk in pending.values_list("pk", flat=True))


def vote_annotate(
    *,
    vote: Vote,
    prompts: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    tokens_a: int,
    tokens_b: int,
) -> None:
    """Save a vote's annotations from its conversation. The style row goes
    first: a second annotation of the vote fails on it (IntegrityError)."""
    ha, la, ba = (sum(x) for x in zip(*(markdown_counts(t) for t in answers_a), strict=True))
    hb, lb, bb = (sum(x) for x in zip(*(markdown_counts(t) for t in answers_b), strict=True))
    VoteStyle.objects.create(
        vote=vote,
        tokens_a=tokens_a,
        tokens_b=tokens_b,
        headers_a=ha,
        headers_b=hb,
        lists_a=la,
        lists_b=lb,
        bold_a=ba,
        bold_b=bb,
    )
    if prompts and prompts[0].strip():
        VotePrompt.objects.create(vote=vote, **vote_prompt_keys(vote.pk, prompts[0]))
    VoteCategory.objects.bulk_create(
        [VoteCategory(vote=vote, name=n) for n in sorted(conversation_categories(prompts))]
    )
    _flags_save(vote, [*answers_a, *answers_b])


def _flags_save(vote: Vote, answers: list[str]) -> None:
    """The identity-leak flag, and the daily-cap flag: over the visitor's cap
    (the votes cast in the day before this one), or over its network's (set
    by arena when it recorded the vote: the count is where the address is)."""
    identities = identities_battling(also=(vote.contender_a_id, vote.contender_b_id))
    leak = identity_leak(answers, identity_pattern(identities))
    earlier = Vote.objects.filter(
        session_key=vote.session_key,
        created_at__gte=vote.created_at - timedelta(days=1),
        pk__lt=vote.pk,
    )
    over_cap = vote.over_cap or earlier.count() >= settings.ARENA_DAILY_VOTE_CAP
    if leak or over_cap:
        Vote.objects.filter(pk=vote.pk).update(
            identity_leak=bool(leak), leak_evidence=leak[:200], over_cap=over_cap
        )
