"""The battle page in a real chromium against a real daphne server.

Generation runs wherever the settings say: threads of the daphne process on
the embedded default, a Celery worker process when Redis is configured.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, ViewportSize, expect

from arena.models import Answer, Battle, Turn, Vote
from arena.visitors import visitor_from_cookie, visitor_key
from inference.models import Contender
from tests.conftest import ARTIFACTS, TINY

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.model]

GENERATION_MS = 120_000
PHONE: ViewportSize = {"width": 390, "height": 844}

# Records what the page shows after every render, so a test can check states
# too short-lived to catch by polling (an answer streams in well under a second).
WATCH_RENDERS = """() => {
  window.__renders = [];
  const last = (side) => {
    const bots = document.querySelectorAll("#log-" + side + " .msg.bot");
    const bot = bots[bots.length - 1];
    return bot ? {status: bot.dataset.status || "", chars: bot.textContent.length} : null;
  };
  const snap = () => window.__renders.push({
    a: last("a"),
    b: last("b"),
    votable: Array.from(document.querySelectorAll("[data-vote]")).some((b) => !b.disabled),
    names: ["a", "b"].map((side) => document.getElementById("name-" + side).textContent).join(""),
    revealed: !document.getElementById("reveal").hidden,
  });
  new MutationObserver(snap).observe(document.getElementById("arena"),
    {subtree: true, childList: true, attributes: true, characterData: true});
  snap();
}"""

XSS = (
    "Here you go: <script>window.__xss=1</script> and "
    '<img src=x onerror="window.__xss=2"> and [click](javascript:window.__xss=3)'
)


def wait_connected(page: Page) -> None:
    expect(page.locator("#status")).to_have_text(re.compile(r"^(Ready|Reconnected)"))


def ask(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def bot(page: Page, side: str) -> Locator:
    return page.locator(f"#log-{side} .msg.bot").last


def wait_both_done(page: Page) -> None:
    for side in ("a", "b"):
        expect(bot(page, side)).to_have_attribute("data-status", "done", timeout=GENERATION_MS)
        expect(bot(page, side)).to_have_text(re.compile(r"\S"))
    expect(page.locator("#status")).not_to_have_class(re.compile(r"\berror\b"))


def both_done(render: dict[str, Any]) -> bool:
    return all(render[side] and render[side]["status"] == "done" for side in ("a", "b"))


def vote_buttons_enabled(page: Page) -> list[bool]:
    return [b.is_enabled() for b in page.locator("[data-vote]").all()]


def test_a_visitor_battles_votes_and_then_sees_the_names(
    page: Page, page_errors: list[str], alpha: Contender, beta: Contender
) -> None:
    page.goto("/")
    wait_connected(page)
    assert vote_buttons_enabled(page) == [False] * 4
    page.evaluate(WATCH_RENDERS)

    ask(page, "Say hello.")
    wait_both_done(page)
    expect(page.locator("[data-vote]")).to_have_count(4)
    for button in page.locator("[data-vote]").all():
        expect(button).to_be_enabled()

    renders: list[dict[str, Any]] = page.evaluate("window.__renders")
    unfinished = [r for r in renders if not both_done(r)]
    assert any(r["a"] and r["b"] for r in unfinished), "never saw the answers unfinished"
    assert not any(r["votable"] for r in unfinished), "a vote was possible before both finished"
    for side in ("a", "b"):
        streamed = [
            r[side]["chars"] for r in renders if r[side] and r[side]["status"] == "streaming"
        ]
        assert any(streamed), f"pane {side} showed no text while it streamed"
    shown = [r for r in renders if r["names"] or r["revealed"]]
    assert shown == [], "names shown before the vote"
    expect(page.locator("#name-a")).to_have_text("")
    expect(page.locator("#reveal")).to_be_hidden()
    for side in ("a", "b"):  # tokens only: the speed would tell the models apart
        expect(page.locator(f"#stats-{side}")).to_have_text(re.compile(r"^\d+ tokens$"))

    page.click('[data-vote="b"]')
    battle = Battle.objects.select_related("contender_a", "contender_b").get()
    expect(page.locator("#name-a")).to_have_text(f"· {battle.contender_a.name}")
    expect(page.locator("#name-b")).to_have_text(f"· {battle.contender_b.name}")
    assert {battle.contender_a.name, battle.contender_b.name} == {"alpha", "beta"}
    reveal = page.locator("#reveal")
    expect(reveal).to_be_visible()
    expect(reveal).to_contain_text(battle.contender_a.name)
    expect(reveal).to_contain_text(battle.contender_b.name)
    for side in ("a", "b"):  # the speed comes with the names
        expect(page.locator(f"#stats-{side}")).to_contain_text("ms to first token")

    expect(page.locator("#status")).not_to_have_class(re.compile(r"\berror\b"))
    vote = Vote.objects.get()
    assert (vote.battle_id, vote.choice, vote.anonymous) == (battle.id, "b", True)
    assert vote.contender_a_id == battle.contender_a_id
    assert vote.contender_b_id == battle.contender_b_id

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "battle.png", full_page=True)
    page.set_viewport_size(PHONE)
    pane_a = page.locator("#pane-a").bounding_box()
    pane_b = page.locator("#pane-b").bounding_box()
    assert pane_a is not None
    assert pane_b is not None
    assert pane_b["y"] >= pane_a["y"] + pane_a["height"], "the panes do not stack on a phone"
    assert pane_a["x"] + pane_a["width"] <= PHONE["width"], "pane A overflows the phone screen"
    page.screenshot(path=ARTIFACTS / "battle-phone.png", full_page=True)
    assert page_errors == []


def test_side_by_side_shows_the_picked_names_before_the_vote(
    page: Page, page_errors: list[str], alpha: Contender, beta: Contender
) -> None:
    page.goto("/side-by-side/")
    wait_connected(page)
    page.select_option("#pick-a", "beta")
    page.select_option("#pick-b", "alpha")

    ask(page, "Name a fruit.")
    expect(page.locator("#name-a")).to_have_text("· beta")
    expect(page.locator("#name-b")).to_have_text("· alpha")
    wait_both_done(page)
    expect(page.locator("#reveal")).to_be_hidden()
    for side in ("a", "b"):  # named mode is revealed from the start: speeds too
        expect(page.locator(f"#stats-{side}")).to_contain_text("ms to first token")
    assert not Vote.objects.exists()

    page.click('[data-vote="tie"]')
    expect(page.locator("#reveal")).to_contain_text("A tie")
    expect(page.locator("#status")).not_to_have_class(re.compile(r"\berror\b"))
    vote = Vote.objects.select_related("battle").get()
    assert (vote.choice, vote.anonymous, vote.battle and vote.battle.mode) == (
        "tie",
        False,
        Battle.Mode.NAMED,
    )
    assert (vote.contender_a_id, vote.contender_b_id) == (beta.pk, alpha.pk)
    assert page_errors == []


def _finished_battle(session_key: str, alpha: Contender, beta: Contender, text: str) -> Battle:
    battle = Battle.objects.create(session_key=session_key, contender_a=alpha, contender_b=beta)
    turn = Turn.objects.create(battle=battle, index=0, user_text=text)
    for side, contender in (("a", alpha), ("b", beta)):
        Answer.objects.create(
            turn=turn,
            side=side,
            contender=contender,
            messages=[{"role": "user", "content": text}],
            params=TINY,
            text=text,
            status=Answer.Status.DONE,
            finish_reason="stop",
        )
    return battle


def test_model_output_reaches_the_page_as_text_never_as_markup(
    page: Page, page_errors: list[str], alpha: Contender, beta: Contender
) -> None:
    page.goto("/")
    wait_connected(page)
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "arena_visitor")
    visitor = visitor_from_cookie(cookie)
    assert visitor is not None
    battle = _finished_battle(visitor_key(visitor), alpha, beta, XSS)

    page.evaluate("(id) => sessionStorage.setItem('arena.battle.anonymous', id)", str(battle.id))
    page.reload()
    wait_connected(page)
    for side in ("a", "b"):
        expect(bot(page, side)).to_have_attribute("data-status", "done")
        expect(bot(page, side)).to_contain_text("<script>window.__xss=1</script>")
        expect(bot(page, side)).to_contain_text('<img src=x onerror="window.__xss=2">')
        expect(page.locator(f"#log-{side} .msg.user")).to_contain_text("<script>")
    # Give a broken image's onerror, had one been created, time to fire.
    page.wait_for_timeout(500)

    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator(".panes script").count() == 0
    assert page.locator("[onerror]").count() == 0
    assert page.locator('a[href^="javascript:" i]').count() == 0
    assert page_errors == []
