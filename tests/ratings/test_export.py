"""Preference exports, checked record by record on battles made through the services."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections
from django.test import Client

from arena import services
from arena.models import ApiToken, Battle, Vote
from arena.tokens import api_token_create
from inference.models import Contender, Engine
from ratings.annotation import battle_vote_annotate
from ratings.exports import ExportFilter, csv_cell, csv_row, preferences_export
from ratings.preference import Options
from ratings.services import leaderboard_compute

pytestmark = pytest.mark.django_db


def _answer(answer_id: int, text: str, *, failed: bool = False) -> None:
    """What the generation worker does for one answer: claim it, save the outcome."""
    job = services.answer_start(answer_id=answer_id)
    assert job is not None
    services.answer_complete(
        answer_id=answer_id,
        outcome=services.AnswerOutcome(
            status="error" if failed else "done", text=text, tokens=len(text.split()),
            error_code="engine_failed" if failed else "",
        ),
    )  # fmt: skip


def _battle(
    key: str, turns: list[tuple[str, str, str]], choice: str, *, named: bool = False
) -> Battle:
    """A battle alpha (side a) vs beta (side b) with (user, answer a, answer b) turns."""
    battle = services.battle_create(
        session_key=key, mode="named", contender_a="alpha", contender_b="beta"
    )
    if not named:
        Battle.objects.filter(pk=battle.pk).update(mode="anonymous")
    for user, text_a, text_b in turns:
        a, b = services.turn_create(battle_id=battle.pk, session_key=key, text=user)
        _answer(a.pk, text_a)
        _answer(b.pk, text_b)
    vote = services.vote_record(battle_id=battle.pk, session_key=key, choice=choice)
    # As ratings' task does after the commit (which, in a transactional test,
    # may have done it already: then this changes nothing).
    battle_vote_annotate(vote_id=vote.pk)
    return battle


@pytest.fixture
def battles(contenders: list[Contender], alice: str, mallory: str) -> dict[str, Battle]:
    out = {
        "single": _battle(alice, [("Capital of France?", "Paris.", "Lyon.")], "a"),
        "multi": _battle(
            alice, [("Hi", "Hello!", "Hey."), ("Tell a joke", "Knock knock.", "No.")], "b"
        ),
        "tie": _battle(mallory, [("2+2?", "4", "Four")], "tie"),
        "both_bad": _battle(mallory, [("Sing", "La", "Lo")], "both_bad"),
        "named": _battle(alice, [("Named?", "Yes", "No")], "a", named=True),
    }
    # A failed answer, regenerated, then voted: only the new answers count.
    battle = services.battle_create(
        session_key=alice, mode="named", contender_a="alpha", contender_b="beta"
    )
    Battle.objects.filter(pk=battle.pk).update(mode="anonymous")
    a, b = services.turn_create(battle_id=battle.pk, session_key=alice, text="Regen me")
    _answer(a.pk, "first try")
    _answer(b.pk, "", failed=True)
    a2, b2 = services.turn_regenerate(battle_id=battle.pk, session_key=alice)
    _answer(a2.pk, "second a")
    _answer(b2.pk, "second b")
    vote = services.vote_record(battle_id=battle.pk, session_key=alice, choice="a")
    battle_vote_annotate(vote_id=vote.pk)
    out["regenerated"] = battle
    return out


def _export(
    tmp_path: Path, fmt: str, name: str = "out.jsonl", options: Options | None = None, **kw: Any
) -> list[dict]:
    path = tmp_path / name
    preferences_export(
        fmt=fmt, path=path, export_filter=ExportFilter(**kw), options=options or Options()
    )
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f]


def test_trl_pairs_are_the_decisive_anonymous_votes_record_by_record(
    battles: object, tmp_path: Path
) -> None:
    records = _export(tmp_path, "trl")
    by_prompt = {r["prompt"][0]["content"]: r for r in records}
    assert set(by_prompt) == {"Capital of France?", "Hi", "Regen me"}  # no tie, both-bad, named
    assert by_prompt["Capital of France?"] == {
        "prompt": [{"role": "user", "content": "Capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon."}],
    }
    multi = by_prompt["Hi"]  # b won: its whole conversation after the first message
    assert multi["chosen"] == [
        {"role": "assistant", "content": "Hey."},
        {"role": "user", "content": "Tell a joke"},
        {"role": "assistant", "content": "No."},
    ]
    assert multi["rejected"][-1] == {"role": "assistant", "content": "Knock knock."}
    regen = by_prompt["Regen me"]
    assert regen["chosen"][0]["content"] == "second a"
    assert regen["rejected"][0]["content"] == "second b"


def test_the_system_prompt_and_named_votes_when_asked(battles: object, tmp_path: Path) -> None:
    records = _export(tmp_path, "trl", include_named=True, options=Options(system_prompt=True))
    named = next(r for r in records if r["prompt"][-1]["content"] == "Named?")
    # alpha (side a, the winner) has a system prompt; it leads the prompt.
    assert named["prompt"][0] == {"role": "system", "content": "You are terse."}


def test_kto_gives_a_positive_and_a_negative_and_both_bad_two_negatives(
    battles: object, tmp_path: Path
) -> None:
    records = _export(tmp_path, "kto", name="kto.jsonl.gz")
    labels: dict[str, list[tuple[str, bool]]] = {}
    for r in records:
        labels.setdefault(r["prompt"][0]["content"], []).append(
            (r["completion"][0]["content"], r["label"])
        )
    assert labels["Capital of France?"] == [("Paris.", True), ("Lyon.", False)]
    assert labels["Sing"] == [("La", False), ("Lo", False)]
    assert "2+2?" not in labels  # ties only when asked
    with_ties = _export(tmp_path, "kto", name="kto2.jsonl", options=Options(include_ties=True))
    assert [r["label"] for r in with_ties if r["prompt"][0]["content"] == "2+2?"] == [True, True]


def test_arena_format_round_trips_through_import_votes(battles: object, tmp_path: Path) -> None:
    path = tmp_path / "arena.jsonl"
    preferences_export(
        fmt="arena", path=path, export_filter=ExportFilter(include_named=True),
        options=Options(include_ties=True, include_both_bad=True),
    )  # fmt: skip
    exported = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["winner"] for r in exported} == {"model_a", "model_b", "tie", "tie (bothbad)"}
    original = sorted(
        Vote.objects.values_list("contender_a__name", "contender_b__name", "choice", "anonymous")
    )
    call_command("import_votes", str(path), "--source", "roundtrip", stdout=io.StringIO())
    again = sorted(
        Vote.objects.filter(source="roundtrip").values_list(
            "contender_a__name", "contender_b__name", "choice", "anonymous"
        )
    )
    assert again == original
    from ratings.models import VoteCategory

    def tags(source: str) -> list[tuple[str, str]]:
        return sorted(
            VoteCategory.objects.filter(vote__source=source).values_list(
                "vote__contender_a__name", "name"
            )
        )

    assert tags("roundtrip") == tags("arena")
    assert ("alpha", "multi_turn") in tags("roundtrip")
    multi = Vote.objects.get(source="roundtrip", battle__turns__index=1)
    assert multi.battle is not None and multi.battle.turns.count() == 2


def test_no_session_keys_and_visitor_ids_differ_per_export(
    battles: object, tmp_path: Path, alice: str
) -> None:
    first = tmp_path / "a.jsonl"
    preferences_export(fmt="arena", path=first, export_filter=ExportFilter(), options=Options())
    second = tmp_path / "b.jsonl"
    preferences_export(fmt="arena", path=second, export_filter=ExportFilter(), options=Options())
    text = first.read_text()
    assert alice not in text
    judges_a = {json.loads(x)["judge"] for x in text.splitlines()}
    judges_b = {json.loads(x)["judge"] for x in second.read_text().splitlines()}
    assert len(judges_a) == 1 and judges_a.isdisjoint(judges_b)
    blank = _export(tmp_path, "trl", name="c.jsonl", options=Options(user_text=False))
    assert {m["content"] for r in blank for m in r["prompt"] if m["role"] == "user"} == {""}


def test_the_split_keeps_each_battle_on_one_side(battles: object, tmp_path: Path) -> None:
    path = tmp_path / "split.jsonl"
    report = preferences_export(
        fmt="arena", path=path, export_filter=ExportFilter(include_named=True),
        options=Options(include_ties=True, include_both_bad=True), test_share=0.5,
    )  # fmt: skip
    train = (tmp_path / "split-train.jsonl").read_text().splitlines()
    test = (tmp_path / "split-test.jsonl").read_text().splitlines()
    ids_train = {json.loads(x)["question_id"] for x in train}
    ids_test = {json.loads(x)["question_id"] for x in test}
    assert ids_train.isdisjoint(ids_test)
    assert len(ids_train | ids_test) == 6 == report.votes
    card = (tmp_path / "split.card.md").read_text()
    assert "train/test split by battle: 0.5" in card and "contenders (2): alpha, beta" in card


def test_at_most_n_records_per_identical_prompt(
    contenders: object, alice: str, tmp_path: Path
) -> None:
    for _ in range(3):
        _battle(alice, [("Same question", "x", "y")], "a")
    records = _export(tmp_path, "trl", max_per_prompt=2)
    assert len(records) == 2


def test_parquet_loads_with_datasets_and_passes_trl_checks(battles: object, tmp_path: Path) -> None:
    from datasets import load_dataset
    from django.conf import settings
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from inference.engines.local import converted_model_dir

    path = tmp_path / "prefs.parquet"
    preferences_export(fmt="trl", path=path, export_filter=ExportFilter(), options=Options())
    dataset = load_dataset("parquet", data_files=str(path), split="train")
    assert dataset.num_rows == 3
    assert set(dataset.column_names) == {"prompt", "chosen", "rejected"}
    tokenizer = AutoTokenizer.from_pretrained(converted_model_dir(settings.ARENA_MODEL_CACHE))
    for example in dataset:
        assert is_conversational(example)
        text = maybe_apply_chat_template(example, tokenizer)
        assert text["prompt"].endswith("assistant\n") and text["chosen"] and text["rejected"]
    jsonl = tmp_path / "prefs.jsonl"
    preferences_export(fmt="kto", path=jsonl, export_filter=ExportFilter(), options=Options())
    kto = load_dataset("json", data_files=str(jsonl), split="train")
    assert set(kto.column_names) == {"prompt", "completion", "label"}
    assert all(is_conversational(x) for x in kto)


def test_the_export_command_reports_and_refuses_bad_options(
    battles: object, tmp_path: Path
) -> None:
    out = io.StringIO()
    call_command(
        "export_preferences", "--format", "trl-text", "--out", str(tmp_path / "t.jsonl"),
        "--licence", "CC-BY-4.0", stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    assert "3 records from" in out.getvalue()
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert all(isinstance(r["prompt"], str) and r["chosen"] for r in rows)
    assert "license: CC-BY-4.0" in (tmp_path / "t.card.md").read_text()
    from django.core.management import CommandError

    with pytest.raises(CommandError, match=r"\.jsonl"):
        call_command("export_preferences", "--format", "trl", "--out", str(tmp_path / "x.csv"))
    with pytest.raises(CommandError, match="test-share"):
        call_command(
            "export_preferences", "--format", "trl", "--out", str(tmp_path / "y.jsonl"),
            "--test-share", "1.5",
        )  # fmt: skip


async def _collect(response: Any) -> bytes:
    body = b"".join([chunk async for chunk in response.streaming_content])
    # The blocks were read on asgiref's thread-sensitive thread; outside a
    # request nothing closes its connection, which would keep the test
    # database open past the session (the server closes it at request end).
    await sync_to_async(connections.close_all, thread_sensitive=True)()
    return body


# The response streams from another thread: the rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_the_api_streams_exports_to_staff_tokens_only(battles: object) -> None:
    bob = User.objects.create_user("bob", is_staff=True)
    carol = User.objects.create_user("carol")
    bob_token = api_token_create(user=bob, name="ci")
    carol_token = api_token_create(user=carol, name="ci")
    assert not ApiToken.objects.filter(token_hash=bob_token).exists()  # stored hashed
    client = Client()
    url = "/leaderboard/export/preferences.jsonl?format=trl"
    assert client.get(url).status_code == 401
    assert client.get(url, HTTP_AUTHORIZATION="Bearer arena_nope").status_code == 401
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {carol_token}").status_code == 403
    bad = client.get(url + "&format=csv", HTTP_AUTHORIZATION=f"Bearer {bob_token}")
    assert bad.status_code == 400 and bad.json()["error"] == "bad_format"
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {bob_token}")
    assert response.status_code == 200 and response.streaming
    body = asyncio.run(_collect(response)).decode()
    assert len(body.splitlines()) == 3


def test_the_admin_action_downloads_selected_votes(battles: object) -> None:
    User.objects.create_superuser("admin", password="pw")
    client = Client()
    client.login(username="admin", password="pw")
    ids = list(Vote.objects.values_list("id", flat=True)[:2])
    response = client.post(
        "/admin/arena/vote/", {"action": "export_arena", "_selected_action": ids, "index": 0}
    )
    assert response.status_code == 200
    lines = response.content.decode().splitlines()
    assert len(lines) == 2 and {json.loads(x)["model_a"] for x in lines} == {"alpha"}


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_quoted(db: None) -> None:
    names = ['=HYPERLINK("http://x.example/","y")', "+1+1", "-2+3", "@SUM(A1)", "\tTab", "plain"]
    contenders = [Contender.objects.create(name=n, engine=Engine.NONE) for n in names]
    Vote.objects.bulk_create(
        Vote(contender_a=a, contender_b=b, choice="a", anonymous=True)
        for a in contenders
        for b in contenders
        if a != b
    )
    leaderboard_compute()
    response = Client().get("/leaderboard/leaderboard.csv")
    assert response.status_code == 200
    written = {r["name"] for r in csv.DictReader(io.StringIO(response.content.decode()))}
    assert written == {"plain"} | {"'" + n for n in names if n != "plain"}
    assert csv_cell("\rCR") == "'\rCR"
    assert csv_cell(-3.5) == -3.5  # numbers are numbers, not formulas
    assert csv_row({"name": "=1", "votes": 3}) == {"name": "'=1", "votes": 3}
