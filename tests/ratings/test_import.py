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

from arena.models import Answer, Battle, Vote
from inference.models import Contender
from ratings.models import VoteCategory

pytestmark = pytest.mark.django_db
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "arena_hp140k_votes.csv.gz"


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
