import re
from pathlib import Path

import pytest

from arena.events import (
    ANSWER_ERROR_GENERIC,
    ANSWER_ERRORS,
    ArenaError,
    BattleResume,
    BattleStart,
    MessageSend,
    Stop,
    VoteCast,
    client_event_parse,
    gen_error_event,
)
from arena.services import REAP_REASONS
from inference.engines.base import TextCleaner, text_clean

ROOT = Path(__file__).resolve().parents[2]


def test_it_parses_each_client_event() -> None:
    assert client_event_parse('{"type": "battle.start"}') == BattleStart()
    assert client_event_parse(
        '{"type": "battle.start", "mode": "named", "contender_a": "x", "contender_b": "y"}'
    ) == BattleStart(mode="named", contender_a="x", contender_b="y")
    assert client_event_parse('{"type": "battle.resume", "battle": "b1"}') == BattleResume("b1")
    assert client_event_parse('{"type": "message.send", "text": "hi"}') == MessageSend("hi")
    assert client_event_parse('{"type": "vote", "choice": "both_bad"}') == VoteCast("both_bad")
    assert client_event_parse('{"type": "stop"}') == Stop()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "bad_json"),
        ("", "bad_json"),
        ("null", "bad_json"),
        ('"text"', "bad_json"),
        ("[" * 100_00 + "]" * 100_00, "bad_json"),
        ("{}", "unknown_type"),
        ('{"type": 3}', "unknown_type"),
        ('{"type": "vote"}', "bad_field"),
        ('{"type": "vote", "choice": true}', "bad_field"),
        ('{"type": "vote", "choice": "A"}', "invalid_choice"),
        ('{"type": "battle.start", "mode": "ranked"}', "bad_field"),
        ('{"type": "message.send", "text": ["a"]}', "bad_field"),
    ],
)
def test_bad_frames_raise_a_stable_code(raw: str | None, code: str) -> None:
    with pytest.raises(ArenaError) as caught:
        client_event_parse(raw)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "message.send", "text": "a\\u0000b"}',
        '{"type": "message.send", "text": "a\\ud800b"}',
        '{"type": "message.send", "text": "trail \\udfff"}',
        '{"type": "battle.resume", "battle": "b1\\u0000"}',
        '{"type": "battle.resume", "battle": "\\udbff"}',
        '{"type": "battle.start", "mode": "named", "contender_a": "x\\u0000", "contender_b": "y"}',
        '{"type": "battle.start", "mode": "named", "contender_a": "x", "contender_b": "\\ud800"}',
    ],
)
def test_a_nul_or_a_lone_surrogate_in_user_text_is_a_bad_field(raw: str) -> None:
    with pytest.raises(ArenaError) as caught:
        client_event_parse(raw)
    assert caught.value.code == "bad_field"


def test_a_surrogate_pair_escaped_in_json_is_one_character_and_accepted() -> None:
    parsed = client_event_parse('{"type": "message.send", "text": "smile \\ud83d\\ude00"}')
    assert parsed == MessageSend("smile \U0001f600")


ENGINE_SOURCES = [
    ROOT / "inference" / "engines" / "openai.py",
    ROOT / "inference" / "engines" / "local.py",
    ROOT / "inference" / "engines" / "__init__.py",
    ROOT / "inference" / "generation.py",
    ROOT / "inference" / "health.py",
    ROOT / "arena" / "services.py",
    ROOT / "arena" / "consumers.py",
]


def _codes_raised() -> set[str]:
    """Every code an answer can fail with, read from the code that fails them."""
    codes: set[str] = set()
    for path in ENGINE_SOURCES:
        text = path.read_text()
        codes |= set(re.findall(r'EngineError\(\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'error_code="([a-z_]+)"', text))
        codes |= set(re.findall(r'_fail\(\s*job,\s*publisher,\s*"([a-z_]+)"', text))
    return codes | set(REAP_REASONS)


def test_every_answer_error_code_has_a_fixed_visitor_message() -> None:
    codes = _codes_raised()
    assert {"engine_unreachable", "engine_failed", "timeout", "retrieval_failed"} <= codes
    assert codes - set(ANSWER_ERRORS) == set()


def test_an_unknown_answer_error_code_gets_the_generic_message_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = gen_error_event(side="a", turn=0, attempt=0, code="made_up")
    assert event["message"] == ANSWER_ERROR_GENERIC
    assert "made_up" in caplog.text
    known = gen_error_event(side="b", turn=1, attempt=2, code="engine_unreachable")
    assert known["message"] == ANSWER_ERRORS["engine_unreachable"]
    assert (known["side"], known["turn"], known["attempt"]) == ("b", 1, 2)


def test_model_text_loses_nul_and_lone_surrogates_and_keeps_split_pairs() -> None:
    assert text_clean("plain text") == "plain text"
    assert text_clean("a\x00b") == "a\ufffdb"
    assert text_clean("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    assert text_clean("\ud83d\ude00") == "\U0001f600"
    cleaner = TextCleaner()
    pieces = [cleaner.feed("smile \ud83d"), cleaner.feed("\ude00!"), cleaner.feed("\udbff")]
    assert [*pieces, cleaner.end()] == ["smile ", "\U0001f600!", "", "\ufffd"]
    for piece in pieces:
        piece.encode("utf-8")
