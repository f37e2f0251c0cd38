"""The preference export over HTTP, for staff, authenticated by an API token."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET

from arena.tokens import api_token_user
from ratings.exports import ExportFilter, ExportReport, records_iter
from ratings.preference import FORMATS, Options


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


def _flag(request: HttpRequest, name: str) -> bool:
    return request.GET.get(name, "").lower() in ("1", "true", "yes", "on")


def jsonl_lines(fmt: str, export_filter: ExportFilter, options: Options) -> Iterator[str]:
    for _, records in records_iter(fmt, export_filter, options, ExportReport()):
        for record in records:
            yield json.dumps(record, ensure_ascii=False) + "\n"


def _next_block(lines: Iterator[str], size: int = 500) -> str:
    return "".join(islice(lines, size))


async def _stream(lines: Iterator[str]) -> AsyncIterator[str]:
    # Pull blocks from the (synchronous, database-reading) iterator on one
    # thread, so the response streams with flat memory instead of being
    # collected whole, which is what Django does with a sync iterator on ASGI.
    while block := await sync_to_async(_next_block, thread_sensitive=True)(lines):
        yield block


@require_GET
def export_preferences(request: HttpRequest) -> HttpResponseBase:
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.startswith("Bearer ") else ""
    user: Any = api_token_user(token) if token else None
    if user is None:
        return _error(401, "unauthorized", "Send a staff API token: Authorization: Bearer <token>.")
    if not user.is_staff:
        return _error(403, "forbidden", "Only staff may export preference data.")
    fmt = request.GET.get("format", "trl")
    if fmt not in FORMATS:
        return _error(400, "bad_format", f"format must be one of {', '.join(FORMATS)}.")
    try:
        min_turns = int(request.GET.get("min_turns", "1"))
    except ValueError:
        return _error(400, "bad_field", "min_turns must be an integer.")
    export_filter = ExportFilter(
        contenders=tuple(request.GET.getlist("contender")),
        category=request.GET.get("category", ""),
        language=request.GET.get("language", ""),
        include_named=_flag(request, "include_named"),
        min_turns=max(1, min_turns),
    )
    options = Options(
        include_ties=_flag(request, "include_ties"),
        include_both_bad=_flag(request, "include_both_bad"),
        system_prompt=_flag(request, "system_prompt"),
        user_text=not _flag(request, "no_user_text"),
    )
    lines = jsonl_lines(fmt, export_filter, options)
    response = StreamingHttpResponse(_stream(lines), content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="arena-{fmt}.jsonl"'
    return response
