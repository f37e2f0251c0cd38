"""import_votes on LMArena's formats and the real 140k file."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from arena.models import Answer, Battle, Vote
from inference.models import Contender
from ratings.models import VoteCategory
from ratings.services import leaderboard_compute

pytestmark = pytest.mark.django_db
REAL = Path(__file__).resolve().parents[2] / "data" / "arena_hp140k_votes.csv.gz"


def _import(*paths: Path, **kw: object) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_votes", *map(str, paths), stdout=out, stderr=err, **kw)
    return out.getvalue(), err.getvalue()


def test_bad_rows_are_reported_by_line_and_the_good_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "votes.csv"
    path.write_text(
        "id,model_a,model_b,winner\n"
        "1,m1,m2,model_a\n"
        "2,m1,,model_b\n"
        "3,m2,m3,nobody\n"
        "4,m3,m3,tie\n"
        "5,m2,m3,tie (bothbad)\n"
    )
    out, err = _import(path)
    assert "added 2" in out and "3 bad rows" in out
    assert "votes.csv:3: model_a and model_b are required" in err
    assert "votes.csv:4: unknown winner 'nobody'" in err
    assert "votes.csv:5: a model against itself" in err
    assert sorted(Vote.objects.values_list("choice", flat=True)) == ["a", "both_bad"]
    assert set(Contender.objects.values_list("engine", "enabled")) == {("none", False)}


def test_re_importing_adds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "votes.jsonl"
    rows = [
        {"model_a": "x", "model_b": "y", "winner": "model_b", "tstamp": 1700000000 + i}
        for i in range(3)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    first, _ = _import(path)
    second, _ = _import(path)
    assert "added 3" in first and "1 bad rows" in first
    assert "added 0, skipped 3" in second
    assert Vote.objects.count() == 3
    assert Vote.objects.first().created_at.year == 2023  # type: ignore[union-attr]


def test_the_55k_format_keeps_its_conversations_as_battles(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    table = pa.table(
        {
            "id": [30192],
            "model_a": ["gpt-4-1106-preview"],
            "model_b": ["gpt-4-0613"],
            "prompt": [json.dumps(["Is it morally right?", "And now?"])],
            "response_a": [json.dumps(["It depends.", "Still depends."])],
            "response_b": [json.dumps(["Yes.", "No."])],
            "winner_model_a": [1],
            "winner_model_b": [0],
            "winner_tie": [0],
        }
    )
    pq.write_table(table, path)
    out, _ = _import(path, source="kaggle55k")
    assert "added 1" in out
    vote = Vote.objects.select_related("battle").get()
    assert vote.choice == "a" and vote.source == "kaggle55k" and vote.external_id == "30192"
    assert vote.battle is not None and vote.battle.status == Battle.Status.VOTED
    b_answers = Answer.objects.filter(side="b").order_by("turn__index")
    assert [a.text for a in b_answers] == ["Yes.", "No."]
    assert b_answers[1].messages == [
        {"role": "user", "content": "Is it morally right?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "And now?"},
    ]
    assert (
        VoteCategory.objects.filter(vote=vote, name="multi_turn").exists() is False
    )  # no `turn` column


def test_fastchat_clean_battle_json_with_tags_and_style(tmp_path: Path) -> None:
    battles = [
        {
            "question_id": "q1",
            "model_a": "a1",
            "model_b": "b1",
            "winner": "tie (bothbad)",
            "anony": True,
            "language": "English",
            "turn": 2,
            "tstamp": 1710000000.5,
            "category_tag": {
                "math_v0.1": {"math": True},
                "criteria_v0.1": {
                    c: True
                    for c in (
                        "complexity",
                        "creativity",
                        "domain_knowledge",
                        "problem_solving",
                        "real_world",
                        "specificity",
                    )
                },
            },
            "conv_metadata": {
                "sum_assistant_a_tokens": 120,
                "sum_assistant_b_tokens": 80,
                "header_count_a": {"h1": 1, "h2": 2},
                "header_count_b": {"h1": 0},
                "list_count_a": {"ordered": 3, "unordered": 0},
                "list_count_b": {"ordered": 0, "unordered": 1},
                "bold_count_a": {"**": 2, "__": 0},
                "bold_count_b": {"**": 0},
            },
        },
        {
            "question_id": "q2",
            "model_a": "a1",
            "model_b": "b1",
            "winner": "model_a",
            "anony": False,
        },
    ]
    path = tmp_path / "clean_battle.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(battles, f)
    _import(path)
    first = Vote.objects.get(external_id="q1")
    assert first.choice == "both_bad" and first.anonymous
    assert set(VoteCategory.objects.filter(vote=first).values_list("name", flat=True)) == {
        "math",
        "hard_prompts",
        "language:en",
        "multi_turn",
        "complexity",
        "creativity",
        "domain_knowledge",
        "problem_solving",
        "real_world",
        "specificity",
    }
    style = first.style
    assert (style.tokens_a, style.headers_a, style.lists_a, style.bold_a) == (120, 3, 3, 2)
    assert Vote.objects.get(external_id="q2").anonymous is False


def test_an_unknown_format_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        _import(tmp_path / "missing.csv")
    other = tmp_path / "votes.xlsx"
    other.write_bytes(b"PK")
    with pytest.raises(CommandError, match="unknown format"):
        _import(other)


@pytest.mark.slow
def test_the_real_140k_votes_import_with_their_categories() -> None:
    out, _ = _import(REAL)
    assert "added 135624" in out and "10 bad rows" in out
    assert Contender.objects.count() == 53
    assert VoteCategory.objects.filter(name="math").count() == 10892
    again, _ = _import(REAL)
    assert "added 0, skipped 135624" in again


def test_impossible_times_and_counts_are_bad_rows_and_the_rest_are_imported(
    tmp_path: Path,
) -> None:
    good = {"model_a": "x", "model_b": "y", "winner": "model_a"}
    style = {"sum_assistant_a_tokens": 10, "sum_assistant_b_tokens": 3}
    rows = [
        {**good, "id": "ok", "tstamp": 1700000000},
        {**good, "id": "far", "tstamp": 1e20},
        {**good, "id": "year99999", "tstamp": "99999-01-01T00:00:00"},
        {**good, "id": "nan-time", "tstamp": float("nan")},
        {**good, "id": "inf-turns", "turn": float("inf")},
        {**good, "id": "nan-turns", "turn": float("nan")},
        {**good, "id": "negative-turns", "turn": -2},
        {**good, "id": "negative-tokens", "conv_metadata": {**style, "sum_assistant_a_tokens": -5}},
        {**good, "id": "huge", "conv_metadata": {**style, "header_count_a": {"h1": 1e12}}},
        {**good, "id": "nul", "model_b": "y\x00"},
        {**good, "id": "multi", "turn": 3, "conv_metadata": style},
    ]
    path = tmp_path / "votes.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n"
    )  # NaN, Infinity: as Python writes
    out, err = _import(path)
    assert "added 2" in out and "9 bad rows" in out
    assert "11 rows read" in err  # the progress line
    for line, message in [
        (2, "timestamp '1e+20' is not a date"),
        (3, "timestamp '99999-01-01T00:00:00' is not a date"),
        (4, "timestamp 'nan' is not a date"),
        (5, "turn 'inf' is not a count"),
        (6, "turn 'nan' is not a count"),
        (7, "turn '-2' is not a count"),
        (8, "sum_assistant_a_tokens '-5' is not a count"),
        (9, "is not a count from 0 to 2147483647"),
        (10, "model_b contains a NUL character"),
    ]:
        assert f"votes.jsonl:{line}: " in err and message in err, (line, message)
    assert set(Vote.objects.values_list("external_id", flat=True)) == {"ok", "multi"}
    assert Vote.objects.get(external_id="multi").style.tokens_a == 10


def test_impossible_counts_in_a_csv_are_bad_rows_too(tmp_path: Path) -> None:
    path = tmp_path / "votes.csv"
    path.write_text(
        "id,model_a,model_b,winner,turn,tstamp\n"
        "1,m1,m2,model_a,1,1700000000\n"
        "2,m1,m2,model_a,inf,1700000000\n"
        "3,m1,m2,model_b,-1,1700000000\n"
        "4,m1,m2,model_b,1,-1e300\n"
        "5,m1,m2,tie,2,1700000000\n"
    )
    out, err = _import(path)
    assert "added 2" in out and "3 bad rows" in out
    assert "votes.csv:3: turn 'inf'" in err
    assert "votes.csv:4: turn '-1'" in err
    assert "votes.csv:5: timestamp '-1e300'" in err


def test_a_row_the_database_refuses_costs_only_itself(tmp_path: Path) -> None:
    # Two names that differ only past the 100 characters a contender name
    # keeps: the same contender on both sides, which the database refuses.
    long = "m" * 100
    path = tmp_path / "votes.csv"
    path.write_text(
        f"id,model_a,model_b,winner\n1,m1,m2,model_a\n2,{long}x,{long}y,model_b\n3,m2,m3,tie\n"
    )
    out, err = _import(path)
    assert "added 2" in out and "1 bad rows" in out
    assert "votes.csv:3: not saved:" in err
    # m3 was first made in the batch the database refused: the row made it again.
    assert set(Vote.objects.values_list("contender_a__name", "contender_b__name")) == {
        ("m1", "m2"),
        ("m2", "m3"),
    }
    assert not Contender.objects.filter(name=long).exists()
    again, _ = _import(path)
    assert "added 0, skipped 2" in again


def test_a_contender_name_with_a_slash_has_its_page_its_links_and_its_rows(
    tmp_path: Path,
) -> None:
    names = ["meta-llama/Llama-3-8B", "mistralai/Mistral-7B-Instruct-v0.2", "plain"]
    path = tmp_path / "votes.jsonl"
    rows = [
        {"id": str(i), "model_a": names[i % 3], "model_b": names[(i + 1) % 3], "winner": "model_a"}
        for i in range(60)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _import(path)
    leaderboard_compute()
    client = Client()
    page = client.get("/leaderboard/")
    assert page.status_code == 200
    url = reverse("contender", args=[names[0]])
    assert url == "/leaderboard/contender/meta-llama/Llama-3-8B/"
    assert f'href="{url}?' in page.content.decode()
    contender = client.get(url)
    assert contender.status_code == 200
    assert "mistralai/Mistral-7B-Instruct-v0.2" in contender.content.decode()
    listed = {r["name"] for r in client.get("/leaderboard/leaderboard.json").json()["rows"]}
    assert listed == set(names)
    lines = client.get("/leaderboard/leaderboard.csv").content.decode().splitlines()
    assert {line.split(",")[1] for line in lines[1:]} == set(names)
