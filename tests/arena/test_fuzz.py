"""Property-based fuzzing: every websocket event and every import format.

Each input either does what it should or gets a clear error; nothing reaches
the server log as an error; the database stays consistent after each case.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arena.events import ERROR_CODES
from ratings.vote_import import votes_import
from tests.arena.wsclient import Client
from tests.consistency import consistency_problems

json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
TYPES = ["battle.start", "battle.resume", "message.send", "vote", "regenerate", "stop"]
event = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.text(max_size=15)},
    optional={
        "text": st.text(max_size=60) | json_value,
        "choice": st.sampled_from(["a", "b", "tie", "both_bad", "A", ""]) | json_value,
        "battle": st.uuids().map(str) | json_value,
        "mode": st.sampled_from(["anonymous", "named", "x"]) | json_value,
        "contender_a": st.sampled_from(["alpha", "beta", "nobody"]) | json_value,
        "contender_b": st.sampled_from(["alpha", "beta", "nobody"]) | json_value,
    },
)
frame = event.map(json.dumps) | json_value.map(json.dumps) | st.text(min_size=1, max_size=80)
SERVER_TYPES = {
    "battle.state",
    "gen.start",
    "gen.delta",
    "gen.done",
    "gen.error",
    "vote.recorded",
    "error",
}
CASES = {"protocol": 0, "import": 0}


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors() -> Any:
    handler = _Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler.records
    root.removeHandler(handler)


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(frame, min_size=1, max_size=6))
def test_any_sequence_of_frames_gets_answers_or_clear_errors(
    frames: list[str], contenders: object, alice: str, server_errors: list[Any]
) -> None:
    async def case() -> list[dict[str, Any]]:
        client = Client(alice)
        assert await client.connect()
        replies = []
        for raw in frames:
            await client.send(raw)
            # Every frame gets at least one reply; collect what arrives promptly.
            replies.append(await client.next(timeout=20))
            while not await client.quiet(0.05):
                replies.append(await client.next(timeout=20))
        await client.close()
        return replies

    replies = asyncio.run(case())
    CASES["protocol"] += 1
    for reply in replies:
        assert reply["type"] in SERVER_TYPES
        if reply["type"] == "error":
            assert reply["code"] in ERROR_CODES and reply["message"]
            assert reply["code"] != "internal", reply
    assert server_errors == []
    assert consistency_problems() == []


row = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=8) | st.integers(),
        "model_a": st.sampled_from(["m1", "m2", "m3", ""]) | st.text(max_size=12),
        "model_b": st.sampled_from(["m1", "m2", "m3", ""]) | st.text(max_size=12),
        "winner": st.sampled_from(["model_a", "model_b", "tie", "tie (bothbad)", "both_bad", "?"])
        | st.text(max_size=8),
        "winner_model_a": st.sampled_from([0, 1, "1", "x"]),
        "tstamp": st.floats(min_value=0, max_value=4e9) | st.text(max_size=12),
        "anony": st.booleans() | st.text(max_size=5),
        "turn": st.integers(-2, 5) | st.text(max_size=3),
        "language": st.text(max_size=12),
        "conversation_a": json_value,
        "conversation_b": json_value,
        "category_tag": json_value,
    },
)


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(row, max_size=8), fmt=st.sampled_from(["jsonl", "csv", "json.gz"]))
def test_any_import_file_imports_good_rows_and_reports_bad_ones(
    rows: list[dict[str, Any]], fmt: str, tmp_path: Path, server_errors: list[Any]
) -> None:
    path = tmp_path / f"fuzz.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json.gz":
        with gzip.open(path, "wt") as f:
            json.dump(rows, f)
    else:
        columns = sorted({k for r in rows for k in r})
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns or ["model_a"])
            writer.writeheader()
            for r in rows:
                writer.writerow(
                    {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.items()}
                )
    report = votes_import(path=path, source=f"fuzz-{fmt}")
    CASES["import"] += 1
    assert report.added + report.skipped + len(report.errors) == len(rows)
    assert all(e.message for e in report.errors)
    assert server_errors == []
    assert consistency_problems() == []


def test_fuzz_case_counts_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    # Printed for the closing note; runs last in this module.
    with capsys.disabled():
        print(f"\nfuzz cases: {CASES}")
    assert CASES["protocol"] >= 100 or CASES["protocol"] == 0
