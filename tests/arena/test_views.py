import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_battle_page_gives_a_visitor_a_visitor_cookie_and_no_session() -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.get("/")
    assert response.status_code == 200
    assert "arena_visitor" in response.cookies
    assert "sessionid" not in response.cookies
    body = response.content.decode()
    assert 'data-mode="anonymous"' in body
    assert 'data-vote="both_bad"' in body


def test_the_side_by_side_page_lists_enabled_contenders(contenders: object) -> None:
    body = Client().get("/side-by-side/").content.decode()
    assert 'data-mode="named"' in body
    assert '<option value="alpha"' in body and '<option value="beta"' in body


def test_pages_refuse_posts() -> None:
    assert Client().post("/").status_code == 405
