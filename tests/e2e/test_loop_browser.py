"""The whole loop in a real browser: vote, export, tune with DPO, battle the tuned model."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from arena.models import Vote
from inference.models import Contender
from tests.conftest import ARTIFACTS
from tests.e2e.test_browser import ask, wait_both_done, wait_connected

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.model,
]


def test_votes_from_the_browser_train_an_adapter_that_then_battles_its_base(
    page: Page, page_errors: list[str], alpha: Contender, beta: Contender, tmp_path: Path
) -> None:
    from datasets import load_dataset

    page.goto("/")
    wait_connected(page)
    for prompt in ("Name a fruit.", "Name a colour.", "Name an animal."):
        ask(page, prompt)
        wait_both_done(page)
        page.click('[data-vote="a"]')
        expect(page.locator("#reveal")).to_be_visible()
        page.click("#new-round")
    assert Vote.objects.filter(choice="a", anonymous=True).count() == 3

    data = tmp_path / "browser-votes.parquet"
    out = io.StringIO()
    call_command("export_preferences", "--format", "trl", "--out", str(data), stdout=out,
                 stderr=io.StringIO())  # fmt: skip
    dataset = load_dataset("parquet", data_files=str(data), split="train")
    assert dataset.num_rows == 3
    prompts = {row["prompt"][0]["content"] for row in dataset}
    assert prompts == {"Name a fruit.", "Name a colour.", "Name an animal."}

    Contender.objects.filter(name="beta").update(params={"temperature": 0, "max_tokens": 8})
    call_command(
        "train_dpo", "--base", "beta", "--data", str(data), "--out", str(tmp_path / "beta-dpo"),
        "--steps", "2", "--name", "beta-dpo", stdout=io.StringIO(), stderr=io.StringIO(),
    )  # fmt: skip
    Contender.objects.filter(name="beta-dpo").update(params={"temperature": 0, "max_tokens": 8})

    page.goto("/side-by-side/")
    wait_connected(page)
    page.select_option("#pick-a", "beta")
    page.select_option("#pick-b", "beta-dpo")
    ask(page, "Name a fruit.")
    expect(page.locator("#name-b")).to_have_text("· beta-dpo")
    wait_both_done(page)
    page.click('[data-vote="b"]')
    expect(page.locator("#reveal")).to_contain_text("beta-dpo")
    expect(page.locator("#status")).not_to_have_class(re.compile(r"\berror\b"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tuned-vs-base.png"), full_page=True)
    vote = Vote.objects.get(contender_b__name="beta-dpo")
    assert vote.choice == "b" and not vote.anonymous
    assert page_errors == []
