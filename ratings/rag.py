"""RAG quality beside the ratings: each RAG contender's average triad."""

from __future__ import annotations

from typing import Any

from django.db.models import Avg, Count

from inference.models import RagScore

TRIAD = ("context_relevance", "groundedness", "answer_relevance")


def rag_quality_get() -> dict[str, dict[str, Any]]:
    """{contender name: {answers, context_relevance, groundedness,
    answer_relevance, judged, judge_context_relevance, ...}}, averages over
    all its scored answers, rounded to 3 places."""
    fields = {name: Avg(name) for name in TRIAD}
    fields |= {f"judge_{name}": Avg(f"judge_{name}") for name in TRIAD}
    rows = (
        RagScore.objects.values("contender__name")
        .annotate(answers=Count("id"), judged=Count("judge_groundedness"), **fields)
        .order_by()
    )
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = row["contender__name"]
        out[name] = {
            k: round(v, 3) if isinstance(v, float) else v
            for k, v in row.items()
            if k != "contender__name"
        }
    return out


def rows_with_rag(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leaderboard rows with a `rag` entry for the contenders that have scores."""
    quality = rag_quality_get()
    return [{**row, "rag": quality.get(row["name"])} for row in rows]
