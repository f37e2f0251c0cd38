"""A RAG battle in a real chromium: "plain" against "answers from the
knowledge base", anonymous until the vote; then the names and the passages
the RAG side was given; then its triad beside its score on the leaderboard."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from arena.models import Battle
from inference.models import Contender, KnowledgeBase, RagScore
from tests.conftest import ARTIFACTS, TINY
from tests.e2e.test_browser import GENERATION_MS, ask, bot, wait_both_done, wait_connected
from tests.inference.rag_facts import facts_kb_make

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.model]

QUESTION = "When is the Zorblax lantern festival held?"


@pytest.fixture
def plain_and_docs(db: None) -> tuple[Contender, Contender]:
    kb: KnowledgeBase = facts_kb_make()
    plain = Contender.objects.create(name="smol-plain", params=TINY)
    docs = Contender.objects.create(name="smol-docs", params=TINY, knowledge_base=kb, rag_k=2)
    return plain, docs


def _scored(contender: Contender, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if RagScore.objects.filter(contender=contender).exists():
            return True
        time.sleep(0.2)
    return False


def test_a_rag_battle_reveals_its_sources_after_the_vote(
    page: Page, page_errors: list[str], plain_and_docs: tuple[Contender, Contender]
) -> None:
    _, docs = plain_and_docs
    page.goto("/")
    wait_connected(page)
    ask(page, QUESTION)
    wait_both_done(page)
    battle = Battle.objects.select_related("contender_a").get()
    rag = "a" if battle.contender_a_id == docs.pk else "b"
    plain = "b" if rag == "a" else "a"

    # Nothing on the page tells which side read the knowledge base.
    expect(page.locator(".sources")).to_have_count(0)
    expect(page.locator("#name-a")).to_have_text("")

    page.click(f'[data-vote="{rag}"]')
    expect(page.locator("#reveal")).to_be_visible(timeout=GENERATION_MS)
    expect(page.locator(f"#name-{rag}")).to_have_text("· smol-docs")
    sources = page.locator(f"#log-{rag} .sources")
    expect(sources).to_have_count(1)
    expect(sources.locator("summary")).to_have_text("Sources: 2 passages from the knowledge base")
    first = sources.locator(".source").first
    expect(first.locator(".source-head")).to_contain_text("Zorblax lantern festival")
    expect(first.locator(".source-text")).to_contain_text("second Saturday of April")
    expect(page.locator(f"#log-{plain} .sources")).to_have_count(0)
    expect(bot(page, rag)).to_have_attribute("data-status", "done")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "rag-sources.png", full_page=True)

    # A reload resyncs from the database, sources included.
    page.reload()
    wait_connected(page)
    expect(page.locator(f"#log-{rag} .sources .source")).to_have_count(2)

    assert _scored(docs), "the RAG answer was not scored"
    page.goto("/leaderboard/")
    header = page.locator("#board thead")
    expect(header).to_contain_text("Context rel.")
    expect(header).to_contain_text("Grounded")
    expect(header).to_contain_text("Answer rel.")
    row = page.locator("#board tbody tr", has_text="smol-docs")
    cells = row.locator("td.rag")
    expect(cells).to_have_count(3)
    for i in range(3):
        expect(cells.nth(i)).to_have_text(re.compile(r"^[01]\.\d\d$"))
    plain_cells = page.locator("#board tbody tr", has_text="smol-plain").locator("td.rag")
    expect(plain_cells.first).to_have_text("")
    page.screenshot(path=ARTIFACTS / "leaderboard-rag.png", full_page=True)
    assert page_errors == []
