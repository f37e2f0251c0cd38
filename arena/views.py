from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from arena.visitors import visitor_cookie_ensure
from inference.selectors import contenders_battling


@require_GET
def battle_page(request: HttpRequest) -> HttpResponse:
    response = render(request, "arena/battle.html", {"mode": "anonymous"})
    # The websocket identifies the visitor by the cookie set here.
    visitor_cookie_ensure(request, response)
    return response


@require_GET
def side_by_side_page(request: HttpRequest) -> HttpResponse:
    contenders = contenders_battling()
    response = render(request, "arena/battle.html", {"mode": "named", "contenders": contenders})
    visitor_cookie_ensure(request, response)
    return response


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
