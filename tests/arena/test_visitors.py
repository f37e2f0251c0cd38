"""Visitor identity: a signed cookie, no row on a page view, only keyed
hashes in the database. Pages through Django's test client, the websocket
through the real ASGI application, on whichever database the settings name."""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.db import connection
from django.test import Client as PageClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from arena import tasks
from arena.models import Battle, Visitor, Vote
from arena.visitors import (
    COOKIE,
    network_key,
    network_of,
    visitor_cookie_value,
    visitor_from_cookie,
    visitor_key,
    visitor_new,
)
from tests.arena.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _fresh_view() -> tuple[str, Any]:
    response = PageClient(enforce_csrf_checks=True).get("/")
    assert response.status_code == 200
    return response.cookies[COOKIE].value, response.cookies[COOKIE]


def test_a_thousand_cookieless_page_views_write_nothing_and_each_get_a_visitor_cookie() -> None:
    with CaptureQueriesContext(connection) as queries:
        ids = {visitor_from_cookie(_fresh_view()[0]) for _ in range(1000)}
    assert None not in ids and len(ids) == 1000
    writes = [
        q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)
    ]
    assert writes == []
    assert Session.objects.count() == 0
    assert Visitor.objects.count() == 0


def test_the_visitor_cookie_is_http_only_same_site_and_lasts_the_configured_age() -> None:
    _, morsel = _fresh_view()
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert int(morsel["max-age"]) == settings.ARENA_VISITOR_SECONDS
    assert not morsel["secure"]


def test_the_visitor_cookie_is_secure_in_production(settings: Any) -> None:
    settings.ARENA_PRODUCTION = True
    assert _fresh_view()[1]["secure"] is True


def test_a_visitor_with_a_valid_cookie_keeps_it() -> None:
    page = PageClient()
    first = page.get("/").cookies[COOKIE].value
    again = page.get("/side-by-side/")
    assert again.status_code == 200
    assert COOKIE not in again.cookies
    assert page.cookies[COOKIE].value == first


def test_a_tampered_cookie_is_replaced() -> None:
    page = PageClient()
    value = page.get("/").cookies[COOKIE].value
    visitor = value.split(":")[0]
    forged = visitor[:-1] + ("0" if visitor[-1] != "0" else "1") + value[len(visitor) :]
    page.cookies[COOKIE] = forged
    replaced = page.get("/").cookies[COOKIE].value
    assert visitor_from_cookie(forged) is None
    assert visitor_from_cookie(replaced) not in (None, visitor)


def test_a_value_signed_for_another_purpose_or_expired_is_no_visitor(settings: Any) -> None:
    visitor = visitor_new()
    assert visitor_from_cookie(signing.TimestampSigner(salt="other").sign(visitor)) is None
    assert visitor_from_cookie(visitor_cookie_value("not-a-visitor-id")) is None
    assert visitor_from_cookie(visitor_cookie_value(visitor)) == visitor
    settings.ARENA_VISITOR_SECONDS = -1  # every cookie is older than that
    assert visitor_from_cookie(visitor_cookie_value(visitor)) is None


async def test_a_tampered_cookie_gets_no_session_over_the_websocket(contenders: object) -> None:
    visitor = visitor_new()
    value = visitor_cookie_value(visitor)
    forged = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    for cookie in (f"{COOKIE}={forged}", f"{COOKIE}={visitor}", "sessionid=abc"):
        client = Client(None, cookie=cookie)
        assert await client.connect()
        assert (await client.error({"type": "battle.start"}))["code"] == "no_session"
        await client.close()
    assert await sync_to_async(Battle.objects.count)() == 0


def _columns(model: type[Any]) -> list[str]:
    rows = model.objects.values_list(*[f.attname for f in model._meta.concrete_fields])
    return [str(value) for row in rows for value in row]


async def test_a_battle_started_over_the_websocket_makes_one_visitor_row_holding_only_hashes(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice, address="198.51.100.23")
    assert await client.connect()
    state = await client.start()
    assert state["type"] == "battle.state"
    visitor = await sync_to_async(Visitor.objects.get)()
    battle = await sync_to_async(Battle.objects.get)()
    assert visitor.key == battle.session_key == visitor_key(alice) != alice
    assert battle.ip_key == network_key("198.51.100.23") != ""
    await client.send({"type": "message.send", "text": "Say hi."})
    await client.answers_finished()
    await client.send({"type": "vote", "choice": "tie"})
    await client.until(lambda e: e["type"] == "vote.recorded")
    vote = await sync_to_async(Vote.objects.get)()
    assert (vote.session_key, vote.ip_key) == (battle.session_key, battle.ip_key)
    # A second battle marks the visitor seen; still one row.
    await client.start()
    await client.close()
    assert await sync_to_async(Visitor.objects.count)() == 1
    seen = await sync_to_async(Visitor.objects.get)()
    assert seen.last_seen_at >= visitor.last_seen_at
    for model in (Battle, Vote, Visitor):
        stored = await sync_to_async(_columns)(model)
        assert not [v for v in stored if alice in v or "198.51.100.23" in v], model


def test_ipv6_addresses_of_one_slash_64_are_one_network() -> None:
    assert (
        network_of("2001:db8:1:2::5") == network_of("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    )
    assert network_of("2001:db8:1:3::5") != network_of("2001:db8:1:2::5")
    assert network_of("::ffff:203.0.113.9") == network_of("203.0.113.9") == "203.0.113.9"
    assert network_of("") == network_of("not an address") == ""
    assert network_key("2001:db8:1:2::5") == network_key("2001:db8:1:2:aaaa::9")
    assert network_key("203.0.113.9") != network_key("203.0.113.10")
    assert "203.0.113.9" not in network_key("203.0.113.9")


def test_the_migration_hashes_old_keys_exactly_as_visitor_key_does() -> None:
    migration = importlib.import_module("arena.migrations.0006_visitor")
    for value in ("a" * 32, visitor_new(), "x"):
        assert migration._visitor_key(settings.SECRET_KEY, value) == visitor_key(value)
    assert not migration._stored_in_clear("import:lmarena")
    assert not migration._stored_in_clear("")


def test_the_expiry_task_forgets_old_visitors_and_expired_sessions() -> None:
    old = timezone.now() - timedelta(seconds=settings.ARENA_VISITOR_SECONDS + 60)
    Visitor.objects.create(key="old")
    Visitor.objects.filter(key="old").update(last_seen_at=old)
    Visitor.objects.create(key="fresh")
    expired, live = SessionStore(), SessionStore()
    expired.set_expiry(-60)
    expired.create()
    live.create()
    assert settings.CELERY_BEAT_SCHEDULE["visitors-expire"]["task"] == tasks.visitors_expire.name
    tasks.visitors_expire()
    assert list(Visitor.objects.values_list("key", flat=True)) == ["fresh"]
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]
