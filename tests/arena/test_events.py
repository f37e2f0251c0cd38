import pytest

from arena.events import (
    ArenaError,
    BattleResume,
    BattleStart,
    MessageSend,
    Stop,
    VoteCast,
    client_event_parse,
)


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
