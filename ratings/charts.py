"""Server-rendered SVG charts: pure functions returning markup, no JS needed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any


def ci_chart(rows: Sequence[dict[str, Any]], *, width: int = 720, row_height: int = 18) -> str:
    """Each contender's rating as a dot on its 95% interval, best first."""
    rated = [r for r in rows if r["rating"] is not None and r["lower"] is not None]
    if not rated:
        return ""
    lo = min(r["lower"] for r in rated)
    hi = max(r["upper"] for r in rated)
    pad = max(5.0, (hi - lo) * 0.05)
    lo, hi = lo - pad, hi + pad
    label_w, right = 260, 20
    plot_w = width - label_w - right
    height = row_height * len(rated) + 30

    def x(value: float) -> float:
        return label_w + (value - lo) / (hi - lo) * plot_w

    parts = [
        f'<svg class="ci-chart" role="img" aria-label="Ratings with 95% confidence intervals" '
        f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">'
    ]
    step = _nice_step((hi - lo) / 6)
    tick = math.ceil(lo / step) * step
    while tick <= hi:
        parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="0" y2="{height - 20}" class="grid"/>'
            f'<text x="{x(tick):.1f}" y="{height - 6}" class="tick">{tick:.0f}</text>'
        )
        tick += step
    for i, row in enumerate(rated):
        y = i * row_height + row_height / 2 + 2
        name = escape(row["name"])
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 4:.1f}" class="label">{name}</text>'
            f'<line x1="{x(row["lower"]):.1f}" x2="{x(row["upper"]):.1f}" y1="{y:.1f}" '
            f'y2="{y:.1f}" class="ci"/>'
            f'<circle cx="{x(row["rating"]):.1f}" cy="{y:.1f}" r="3.5" class="dot">'
            f"<title>{name}: {row['rating']:.1f} [{row['lower']:.1f}, {row['upper']:.1f}]</title>"
            "</circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return float(m * power)
    return float(10 * power)


def heat_map(
    names: Sequence[str], matrix: Sequence[Sequence[float | None]], *, cell: int = 14
) -> str:
    """Row contender's win rate against the column contender, red to blue."""
    n = len(names)
    if n == 0:
        return ""
    label = 200
    size = label + n * cell
    parts = [
        f'<svg class="heat-map" role="img" aria-label="Win rate of the row model against the '
        f'column model" viewBox="0 0 {size} {size}" width="100%" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, name in enumerate(names):
        y = label + i * cell
        safe = escape(name)
        parts.append(f'<text x="{label - 4}" y="{y + cell - 3}" class="label">{safe}</text>')
        parts.append(
            f'<text transform="translate({label + i * cell + cell - 3},{label - 4}) rotate(-90)" '
            f'class="col">{safe}</text>'
        )
        for j, value in enumerate(matrix[i]):
            if value is None or i == j:
                fill = "#eee"
                title = f"{safe} vs {escape(names[j])}: no decisive votes"
            else:
                fill = _colour(value)
                title = f"{safe} beats {escape(names[j])} {value:.0%}"
            parts.append(
                f'<rect x="{label + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="{fill}"><title>{title}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _colour(p: float) -> str:
    # 0 -> red, 0.5 -> white, 1 -> blue
    t = max(0.0, min(1.0, p))
    if t < 0.5:
        k = t / 0.5
        r, g, b = 214, int(96 + (255 - 96) * k), int(77 + (255 - 77) * k)
    else:
        k = (t - 0.5) / 0.5
        r, g, b = int(255 - (255 - 51) * k), int(255 - (255 - 102) * k), int(255 - (255 - 204) * k)
    return f"#{r:02x}{g:02x}{b:02x}"


def trend_chart(points: Sequence[tuple[str, float]], *, width: int = 720, height: int = 200) -> str:
    """A rating over time as a line; points are (label, rating), oldest first."""
    if len(points) < 2:
        return ""
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    pad = max(5.0, (hi - lo) * 0.1)
    lo, hi = lo - pad, hi + pad
    left, bottom = 50, 24
    plot_w, plot_h = width - left - 10, height - bottom - 10

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + i / (len(points) - 1) * plot_w, 10 + (hi - v) / (hi - lo) * plot_h

    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(values)))
    parts = [
        f'<svg class="trend" role="img" aria-label="Online Elo over time" '
        f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">',
        f'<polyline points="{path}" fill="none" stroke="#3358d4" stroke-width="2"/>',
        f'<text x="{left - 6}" y="16" class="tick" text-anchor="end">{hi:.0f}</text>',
        f'<text x="{left - 6}" y="{10 + plot_h}" class="tick" text-anchor="end">{lo:.0f}</text>',
        f'<text x="{left}" y="{height - 6}" class="tick">{escape(points[0][0])}</text>',
        f'<text x="{width - 10}" y="{height - 6}" class="tick" text-anchor="end">'
        f"{escape(points[-1][0])}</text>",
    ]
    parts.append("</svg>")
    return "".join(parts)
