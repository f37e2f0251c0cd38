from __future__ import annotations

import csv
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from ratings.boards import Board, BoardKey, board_get
from ratings.cache import Computing
from ratings.categories import category_label
from ratings.charts import ci_chart, heat_map, trend_chart
from ratings.exports import csv_row
from ratings.rag import TRIAD, rag_quality_get, rows_with_rag
from ratings.selectors import board_lists_get, board_version

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


RETRY_MESSAGE = "This board is being computed; it will be ready in a few seconds."


def _board(request: HttpRequest) -> tuple[Board, dict[str, Any]]:
    """The board the query asks for, from a snapshot or the cache (never a
    fit of its own beyond one single-flight computation per filter)."""
    version = board_version()
    lists = board_lists_get(version=version)
    known = {name: n for name, n in lists["categories"]}
    category = request.GET.get("category", "")
    if category and category not in known:
        raise Http404("No such category.")
    # On unless asked off; the form sends a hidden dedup=0 before the checkbox.
    dedup = (request.GET.getlist("dedup") or ["1"])[-1] in ("1", "true", "on")
    key = BoardKey.of(
        category=category,
        style_control=request.GET.get("style") in ("1", "true", "on"),
        ci=request.GET.get("ci", "sandwich"),
        dedup=dedup,
        sources=request.GET.getlist("source"),
        known_sources=lists["sources"],
    )
    options = {
        "category": key.category,
        "style": key.style_control,
        "dedup": key.dedup,
        "ci": key.ci,
        "categories": known,
        "sources": key.sources or (),
        "all_sources": lists["sources"],
    }
    return board_get(key, version=version), options


def _computing(request: HttpRequest, busy: Computing, *, kind: str) -> HttpResponse:
    """503 with Retry-After: another request is computing this board."""
    response: HttpResponse
    if kind == "json":
        response = JsonResponse(
            {"error": "computing", "message": RETRY_MESSAGE, "retry_after": busy.retry_after},
            status=503,
        )
    elif kind == "csv":
        response = HttpResponse(RETRY_MESSAGE, status=503, content_type="text/plain")
    else:
        context = {"retry_after": busy.retry_after, "message": RETRY_MESSAGE}
        response = render(request, "ratings/computing.html", context, status=503)
    response["Retry-After"] = str(busy.retry_after)
    return response


@require_GET
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    try:
        snapshot, options = _board(request)
    except Computing as busy:
        return _computing(request, busy, kind="html")
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
def leaderboard_json(request: HttpRequest) -> HttpResponse:
    try:
        snapshot, options = _board(request)
    except Computing as busy:
        return _computing(request, busy, kind="json")
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
    try:
        snapshot, _ = _board(request)
    except Computing as busy:
        return _computing(request, busy, kind="csv")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="leaderboard.csv"'
    writer = csv.DictWriter(response, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows_with_rag(snapshot.rows):
        rag = row.pop("rag") or {}
        writer.writerow(csv_row({**row, **{f"rag_{k}": rag.get(k) for k in TRIAD}}))
    return response


@require_GET
def contender_page(request: HttpRequest, name: str) -> HttpResponse:
    try:
        snapshot, options = _board(request)
    except Computing as busy:
        return _computing(request, busy, kind="html")
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
        "trend_svg": mark_safe(_trend_svg(snapshot, name)),
        **options,
    }
    return render(request, "ratings/contender.html", context)


def _trend_svg(board: Board, name: str) -> str:
    """The contender's online Elo over time, as the refresh (or the cache) replayed it."""
    trend = board.extra.get("trend") or {}
    values = (trend.get("ratings") or {}).get(name)
    if not values:
        return ""
    points = [(label, v) for label, v in zip(trend["labels"], values, strict=True) if v is not None]
    return trend_chart(points)
