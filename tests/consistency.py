"""Database invariants that must hold whatever a visitor or an import sends."""

from __future__ import annotations

from django.db.models import Count, F, Q

from arena.models import Answer, Battle, Vote


def consistency_problems() -> list[str]:
    problems = []
    voted_without = Battle.objects.filter(status=Battle.Status.VOTED, vote__isnull=True).exclude(
        session_key__startswith="import:"
    )
    if voted_without.exists():
        problems.append("a voted battle has no vote")
    if Battle.objects.filter(status=Battle.Status.OPEN, vote__isnull=False).exists():
        problems.append("an open battle has a vote")
    doubled = (
        Answer.objects.filter(superseded=False)
        .values("turn_id", "side")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    if doubled.exists():
        problems.append("a turn has two current answers on one side")
    if Vote.objects.filter(contender_a=models_f("contender_b")).exists():
        problems.append("a vote pits a contender against itself")
    bad_choice = Vote.objects.exclude(choice__in=Vote.Choice.values)
    if bad_choice.exists():
        problems.append("a vote has an unknown choice")
    on_failed = Vote.objects.filter(
        battle__isnull=False,
        turn__answers__superseded=False,
        turn__answers__status=Answer.Status.ERROR,
    )
    if on_failed.exists():
        problems.append("a vote was cast on a failed turn")
    mismatched = Vote.objects.filter(battle__isnull=False).exclude(
        Q(contender_a=models_f("battle__contender_a"))
        & Q(contender_b=models_f("battle__contender_b"))
    )
    if mismatched.exists():
        problems.append("a vote's contenders differ from its battle's")
    return problems


def models_f(name: str) -> F:
    return F(name)
