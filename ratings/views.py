from __future__ import annotations

import csv
from typing import Any

import numpy as np
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from ratings.categories import category_label
from ratings.charts import ci_chart, heat_map, trend_chart
from ratings.elo import elo_history
from ratings.models import Snapshot
from ratings.rag import TRIAD, rag_quality_get, rows_with_rag
from ratings.selectors import (
    VoteFilter,
    categories_available,
    snapshot_latest,
    sources_available,
    vote_sequence_get,
)
from ratings.services import leaderboard_compute

CSV_FIELDS = [
    "rank",
    "name",
    "rating",
    "lower",
    "upper",
    "votes",
    "wins",
    "losses",
    "ties",
    "win_rate",
    "provisional",
    "rag_context_relevance",
    "rag_groundedness",
    "rag_answer_relevance",
]


def _board(request: HttpRequest) -> tuple[Snapshot, dict[str, Any]]:
    category = request.GET.get("category", "")
    style = request.GET.get("style") in ("1", "true", "on")
    # On unless asked off; the form sends a hidden dedup=0 before the checkbox.
    dedup = (request.GET.getlist("dedup") or ["1"])[-1] in ("1", "true", "on")
    ci = request.GET.get("ci", "sandwich")
    if ci not in ("sandwich", "bootstrap"):
        ci = "sandwich"
    known = dict(categories_available())
    if category and category not in known:
        raise Http404("No such category.")
    sources = tuple(request.GET.getlist("source"))
    snapshot: Snapshot | None
    if sources or not dedup:  # custom selections are computed, not kept
        snapshot = leaderboard_compute(
            category=category,
            style_control=style,
            ci=ci,  # type: ignore[arg-type]
            vote_filter=VoteFilter(category=category, sources=sources or None, dedup=dedup),
            save=False,
        )
    else:
        snapshot = snapshot_latest(category=category, style_control=style, ci=ci)
        if snapshot is None:
            snapshot = leaderboard_compute(category=category, style_control=style, ci=ci)  # type: ignore[arg-type]
    assert snapshot is not None
    options = {
        "category": category,
        "style": style,
        "dedup": dedup,
        "ci": ci,
        "categories": known,
        "sources": sources,
        "all_sources": sources_available(),
    }
    return snapshot, options


@require_GET
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    snapshot, options = _board(request)
    matrices = snapshot.extra.get("matrices") or {}
    order = [r["name"] for r in snapshot.rows]
    heat = ""
    if matrices:
        index = {n: i for i, n in enumerate(matrices["names"])}
        ordered = [[matrices["observed"][index[r]][index[c]] for c in order] for r in order]
        heat = heat_map(order, ordered)
    rows = rows_with_rag(snapshot.rows)
    context = {
        "snapshot": snapshot,
        "rows": rows,
        "has_rag": any(r["rag"] for r in rows),
        "ci_svg": mark_safe(ci_chart(snapshot.rows)),
        "heat_svg": mark_safe(heat),
        "category_options": [
            (name, f"{category_label(name)} ({n:,})") for name, n in options["categories"].items()
        ],
        "style_coef": snapshot.extra.get("style"),
        **options,
    }
    return render(request, "ratings/leaderboard.html", context)


@require_GET
def leaderboard_json(request: HttpRequest) -> JsonResponse:
    snapshot, options = _board(request)
    return JsonResponse(
        {
            "computed_at": snapshot.created_at.isoformat() if snapshot.created_at else None,
            "category": options["category"],
            "style_control": options["style"],
            "dedup": options["dedup"],
            "ci": options["ci"],
            "votes": snapshot.votes,
            "rows": rows_with_rag(snapshot.rows),
            "style": snapshot.extra.get("style"),
        }
    )


@require_GET
def leaderboard_csv(request: HttpRequest) -> HttpResponse:
    snapshot, _ = _board(request)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="leaderboard.csv"'
    writer = csv.DictWriter(response, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows_with_rag(snapshot.rows):
        rag = row.pop("rag") or {}
        writer.writerow({**row, **{f"rag_{k}": rag.get(k) for k in TRIAD}})
    return response


@require_GET
def contender_page(request: HttpRequest, name: str) -> HttpResponse:
    snapshot, options = _board(request)
    row = next((r for r in snapshot.rows if r["name"] == name), None)
    matrices = snapshot.extra.get("matrices") or {}
    if row is None or not matrices:
        raise Http404("No such contender on this leaderboard.")
    names = matrices["names"]
    i = names.index(name)
    ratings = {r["name"]: r for r in snapshot.rows}
    record = []
    for j, other in enumerate(names):
        battles = matrices["battles"][i][j]
        if j == i or not battles:
            continue
        record.append(
            {
                "name": other,
                "rating": ratings.get(other, {}).get("rating"),
                "battles": battles,
                "observed": matrices["observed"][i][j],
                "expected": matrices["expected"][i][j],
            }
        )
    record.sort(key=lambda r: -r["battles"])
    context = {
        "row": row,
        "rag": rag_quality_get().get(name),
        "record": record,
        "snapshot": snapshot,
        "trend_svg": mark_safe(_elo_trend(name, options)),
        **options,
    }
    return render(request, "ratings/contender.html", context)


def _elo_trend(name: str, options: dict[str, Any], points: int = 60) -> str:
    """Online Elo of one contender after each slice of the votes, oldest first."""
    vote_filter = VoteFilter(
        category=options["category"], sources=options["sources"] or None, dedup=options["dedup"]
    )
    seq = vote_sequence_get(vote_filter)
    if name not in seq.names or seq.a.size < 2:
        return ""
    marks = np.unique(np.linspace(1, seq.a.size, min(points, seq.a.size)).astype(np.int64))
    history = elo_history(seq.a, seq.b, seq.outcome, len(seq.names), checkpoints=marks)
    i = seq.names.index(name)
    return trend_chart(
        [(f"{seq.created_at[m - 1]:%Y-%m-%d}", float(history[k, i])) for k, m in enumerate(marks)]
    )
