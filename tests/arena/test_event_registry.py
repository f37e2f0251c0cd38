"""The registries of arena/events.py hold: every server event has its
constructor, every answer error code its visitor message, and the README's
protocol tables list exactly what the code defines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from arena.events import (
    ANSWER_ERRORS,
    CLIENT_PARSERS,
    ERROR_CODES,
    ArenaError,
    ServerEvent,
    battle_state_event,
    error_event,
    gen_delta_event,
    gen_done_event,
    gen_error_event,
    gen_start_event,
    public_stats,
    vote_recorded_event,
)
from arena.services import REAP_REASONS
from inference.engines.base import ENGINE_ERROR_CODES, EngineError

ROOT = Path(__file__).resolve().parents[2]
APP_SOURCES = sorted(
    path
    for package in ("arena", "inference", "realtime")
    for path in (ROOT / package).rglob("*.py")
    if "migrations" not in path.parts
)
SERVER_TYPES = r"battle\.state|gen\.start|gen\.delta|gen\.done|gen\.error|vote\.recorded|error"


def _server_event_types() -> set[str]:
    """The `type` literal of every TypedDict in the ServerEvent union."""
    return {get_args(get_type_hints(kind)["type"])[0] for kind in get_args(ServerEvent)}


def _readme_table(caption: str) -> list[str]:
    """The first column of the README table right after the paragraph that
    starts with `caption`, without its backticks."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(caption))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    rows = []
    for line in lines[first + 2 :]:  # past the header and its rule
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip().strip("`"))
    return rows


def _codes_stored_without_an_engine_error() -> set[str]:
    """Answer error codes the apps store directly: `error_code="..."` in an
    outcome, `_fail(job, publisher, "...")` in generation, and the reaper's."""
    codes = set(REAP_REASONS)
    for path in APP_SOURCES:
        text = path.read_text()
        codes |= set(re.findall(r'error_code="([a-z_]+)"', text))
        codes |= set(re.findall(r'_fail\(\s*job,\s*publisher,\s*"([a-z_]+)"', text))
    return codes


def test_every_engine_error_code_has_a_visitor_message() -> None:
    assert ENGINE_ERROR_CODES - set(ANSWER_ERRORS) == set()


def test_an_engine_error_with_a_code_outside_the_registry_is_refused() -> None:
    with pytest.raises(ValueError, match="made_up"):
        EngineError("made_up", "The model failed.")
    assert EngineError("timeout", "Too slow.").code == "timeout"


def test_every_code_the_engines_raise_is_in_the_engine_registry() -> None:
    raised: set[str] = set()
    for path in APP_SOURCES:
        raised |= set(re.findall(r'EngineError\(\s*"([a-z_]+)"', path.read_text()))
    assert "engine_unreachable" in raised and "retrieval_failed" in raised
    assert raised - ENGINE_ERROR_CODES == set()


def test_the_answer_error_registry_is_exactly_the_codes_an_answer_can_be_saved_with() -> None:
    stored = _codes_stored_without_an_engine_error()
    assert {"internal", "unavailable", "bad_output", "worker_lost", "not_started"} <= stored
    assert set(ANSWER_ERRORS) == ENGINE_ERROR_CODES | stored


def test_no_server_event_is_built_as_a_bare_dict_outside_arena_events() -> None:
    bare = re.compile(r'"type":\s*"(' + SERVER_TYPES + r')"')
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in APP_SOURCES
        if path != ROOT / "arena" / "events.py"
        for match in bare.finditer(path.read_text())
    ]
    assert found == []


def test_each_constructor_builds_its_events_type_in_the_wire_order() -> None:
    stats = public_stats(tokens=3, finish_reason="stop")
    events = [
        battle_state_event(battle={}, turns=[]),  # type: ignore[typeddict-item]
        gen_start_event(side="a", turn=0, attempt=1),
        gen_delta_event(side="a", turn=0, attempt=1, seq=2, offset=5, text="lo"),
        gen_done_event(side="b", turn=1, attempt=0, text="Hi", html="<p>Hi</p>", stats=stats),
        gen_error_event(side="a", turn=0, attempt=0, code="timeout"),
        vote_recorded_event(choice="tie", models={"a": "x", "b": "y"}, sources=[], stats=[]),
        error_event(ArenaError("busy")),
    ]
    assert {e["type"] for e in events} == _server_event_types()
    assert [json.dumps(e) for e in events[1:4]] == [
        '{"type": "gen.start", "side": "a", "turn": 0, "attempt": 1}',
        '{"type": "gen.delta", "side": "a", "turn": 0, "attempt": 1, "seq": 2, "offset": 5,'
        ' "text": "lo"}',
        '{"type": "gen.done", "side": "b", "turn": 1, "attempt": 0, "text": "Hi",'
        ' "html": "<p>Hi</p>", "stats": {"tokens": 3, "finish_reason": "stop"}}',
    ]


def test_an_unexpected_failure_is_an_error_event_with_its_fixed_message() -> None:
    assert error_event(ArenaError("internal")) == {
        "type": "error",
        "code": "internal",
        "message": "Something went wrong; try again.",
    }


def test_the_readme_lists_every_websocket_error_code_and_no_other() -> None:
    rows = _readme_table("Error codes of `error` events")
    assert sorted(rows) == sorted(ERROR_CODES)
    assert len(rows) == len(set(rows))


def test_the_readme_lists_every_answer_error_code_and_no_other() -> None:
    rows = _readme_table("Answer error codes")
    assert sorted(rows) == sorted(ANSWER_ERRORS)
    assert len(rows) == len(set(rows))


def test_the_readme_lists_every_event_type_each_way_and_no_other() -> None:
    assert sorted(_readme_table("Server to client")) == sorted(_server_event_types())
    assert sorted(_readme_table("Client to server")) == sorted(CLIENT_PARSERS)
