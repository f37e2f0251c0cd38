"""Closing the loop: votes -> `trl` export -> DPO on the real SmolLM2 -> a new contender."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from arena import services
from arena.models import Battle
from inference.engines import engine_get
from inference.engines.base import GenerationRequest, TextDelta
from inference.models import Contender
from ratings.exports import ExportFilter, preferences_export
from ratings.preference import Options

pytestmark = [pytest.mark.django_db, pytest.mark.model]

PROMPTS = ["Name a fruit.", "Name a colour.", "Name an animal.", "Name a city.",
           "Name a planet.", "Name a tree.", "Name a river.", "Name a metal."]  # fmt: skip


def _voted_battles(key: str) -> None:
    """Eight battles where the visitor always prefers the enthusiastic answer."""
    for prompt in PROMPTS:
        battle = services.battle_create(
            session_key=key, mode="named", contender_a="alpha", contender_b="beta"
        )
        Battle.objects.filter(pk=battle.pk).update(mode="anonymous")
        a, b = services.turn_create(battle_id=battle.pk, session_key=key, text=prompt)
        for answer, text in ((a, "Wonderful question!!! Absolutely: yes!!!"), (b, "No.")):
            assert services.answer_start(answer_id=answer.pk) is not None
            services.answer_complete(
                answer_id=answer.pk, outcome=services.AnswerOutcome(status="done", text=text)
            )
        services.vote_record(battle_id=battle.pk, session_key=key, choice="a")


def _greedy(adapter: str) -> str:
    async def run() -> str:
        request = GenerationRequest(
            model="", messages=[{"role": "user", "content": "Name a fruit."}],
            temperature=0, max_tokens=12, adapter_path=adapter,
        )  # fmt: skip
        text = ""
        async for event in engine_get("local").stream(request):
            if isinstance(event, TextDelta):
                text += event.text
        return text

    return asyncio.run(run())


def test_train_dpo_registers_an_adapter_that_changes_the_answers(
    contenders: object, alice: str, tmp_path: Path
) -> None:
    _voted_battles(alice)
    data = tmp_path / "prefs.jsonl"
    report = preferences_export(
        fmt="trl", path=data, export_filter=ExportFilter(), options=Options()
    )
    assert sum(report.records.values()) == 8
    Contender.objects.filter(name="beta").update(params={})
    out = io.StringIO()
    call_command(
        "train_dpo", "--base", "beta", "--data", str(data), "--out", str(tmp_path / "adapter"),
        "--steps", "2", "--learning-rate", "5e-3", "--name", "beta-dpo",
        stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    assert "registered contender 'beta-dpo'" in out.getvalue()
    tuned = Contender.objects.get(name="beta-dpo")
    assert tuned.kind == Contender.Kind.LORA and tuned.engine == "local"
    assert (Path(tuned.adapter_path) / "adapter_config.json").exists()
    assert _greedy(tuned.adapter_path) != _greedy("")


def test_train_dpo_refuses_bad_input_clearly(contenders: object, tmp_path: Path) -> None:
    bad = tmp_path / "kto.jsonl"
    bad.write_text('{"prompt": [], "completion": [], "label": true}\n')
    with pytest.raises(CommandError, match="not a `trl` export"):
        call_command(
            "train_dpo", "--base", "beta", "--data", str(bad), "--out", str(tmp_path / "o")
        )
    with pytest.raises(CommandError, match="no contender"):
        call_command("train_dpo", "--base", "nobody", "--data", str(bad), "--out", str(tmp_path))
    with pytest.raises(CommandError, match="no such file"):
        call_command(
            "train_dpo", "--base", "beta", "--data", str(tmp_path / "x.jsonl"), "--out", "o"
        )
