from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from inference.selectors import contenders_battling


def _ensure_session(request: HttpRequest) -> None:
    # The websocket identifies the visitor by the session cookie set here.
    if not request.session.session_key:
        request.session.save()


@require_GET
def battle_page(request: HttpRequest) -> HttpResponse:
    _ensure_session(request)
    return render(request, "arena/battle.html", {"mode": "anonymous"})


@require_GET
def side_by_side_page(request: HttpRequest) -> HttpResponse:
    _ensure_session(request)
    contenders = contenders_battling()
    return render(request, "arena/battle.html", {"mode": "named", "contenders": contenders})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
