"""Battles in a real chromium against a real daphne server, with contenders
beyond the plain local model: a base against its LoRA adapter on the local
engine, and the local engine against llama.cpp's server through the
OpenAI-compatible engine. With Redis configured, the HTTP-engine side runs on
its own queue and Celery worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from arena.models import Answer, Battle, Vote
from inference.models import Contender, Endpoint, Engine
from tests.conftest import ARTIFACTS, TINY, Process
from tests.e2e.test_browser import ask, bot, wait_both_done, wait_connected
from tests.inference.servers import (
    LLAMA_ALIAS,
    LlamaServer,
    http_worker_start,
    llama_server_fixture,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.model]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    yield from llama_server_fixture()


@pytest.fixture(scope="module")
def http_worker(live_server_process: str) -> Iterator[Process | None]:
    if settings.ARENA_TASKS != "celery":
        yield None  # daphne's own HTTP thread pool runs those answers
        return
    worker = http_worker_start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def pirate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.inference.loras import lora_adapter_make

    return lora_adapter_make(tmp_path_factory.mktemp("loras") / "pirate", seed=1)


def _battle_and_vote(page: Page, shot: str) -> Battle:
    page.goto("/")
    wait_connected(page)
    ask(page, "Tell me about the sea.")
    wait_both_done(page)
    page.click('[data-vote="a"]')
    expect(page.locator("#reveal")).to_be_visible()
    expect(page.locator("#status")).not_to_have_class("error")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / shot, full_page=True)
    return Battle.objects.select_related("contender_a", "contender_b").get()


def test_a_visitor_battles_a_base_against_its_lora_adapter(
    page: Page, page_errors: list[str], alpha: Contender, pirate: Path
) -> None:
    Contender.objects.create(
        name="alpha-pirate",
        kind=Contender.Kind.LORA,
        adapter_path=str(pirate),
        system_prompt=alpha.system_prompt,
        params=TINY,
    )
    battle = _battle_and_vote(page, "battle-base-vs-lora.png")
    assert {battle.contender_a.name, battle.contender_b.name} == {"alpha", "alpha-pirate"}
    expect(page.locator("#reveal")).to_contain_text("alpha-pirate")
    answers = {a.contender.name: a.text for a in Answer.objects.select_related("contender")}
    assert answers["alpha"] != answers["alpha-pirate"]  # only the adapter differs
    for side in ("a", "b"):
        expect(bot(page, side)).to_have_text(answers[battle.contender(side).name].strip())
    assert Vote.objects.get().choice == "a"
    assert page_errors == []


def test_a_visitor_battles_the_local_engine_against_llama_cpp(
    page: Page,
    page_errors: list[str],
    alpha: Contender,
    llama_server: LlamaServer,
    http_worker: Process | None,
) -> None:
    endpoint = Endpoint.objects.create(
        name="llama-cpp", kind=Endpoint.Kind.OPENAI, base_url=llama_server.url
    )
    Contender.objects.create(
        name="gamma", engine=Engine.OPENAI, endpoint=endpoint, model=LLAMA_ALIAS, params=TINY
    )
    battle = _battle_and_vote(page, "battle-local-vs-llama-cpp.png")
    assert {battle.contender_a.name, battle.contender_b.name} == {"alpha", "gamma"}
    gamma = Answer.objects.get(contender__name="gamma")
    assert gamma.status == Answer.Status.DONE and gamma.tokens == TINY["max_tokens"]
    assert gamma.text.strip()
    expect(page.locator("#reveal")).to_contain_text("gamma")
    if http_worker is not None:
        assert "inference.tasks.generate_answer" in http_worker.tail(20_000)
    assert page_errors == []
