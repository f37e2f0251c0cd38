"""The README's run command on the embedded default, as a first-time user runs it.

`make run` on an empty data folder must migrate, seed the demo contenders and
serve battles with nothing else configured: no DATABASE_URL, no REDIS_URL.
This test never touches pytest's database; the server makes its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from inference.management.commands.seed_demo import DEMO, RAG_DEMO
from tests.conftest import Process, free_port

pytestmark = pytest.mark.model

Event = dict[str, Any]
STARTUP_SECONDS = 180
# The settings that would move the app off its embedded default.
NOT_SET = ("DATABASE_URL", "REDIS_URL", "ARENA_TASKS")
# Direct connections only: a proxy from the environment must not see 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_SET and not k.startswith("PYTEST")}
    # The converted model is shared so the one-off conversion is not repeated.
    env.update(
        ARENA_DATA_DIR=str(data_dir),
        ARENA_MODEL_CACHE=str(settings.ARENA_MODEL_CACHE),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`make run` on a free port with an empty data folder; its URL and that folder.

    `-o .venv/.runtime` tells make the virtualenv is installed (this test runs
    from it), so the target goes straight to migrate, seed_demo and daphne
    instead of reinstalling packages when the stamp file is missing or older
    than pyproject.toml.
    """
    port = free_port()
    data_dir = tmp_path / "data"
    server = Process(
        "make-run",
        ["make", "--no-print-directory", "-o", ".venv/.runtime", "run",
         "HOST=127.0.0.1", f"PORT={port}"],
        _embedded_env(data_dir),
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_page(server, url + "/", STARTUP_SECONDS)
        yield url, data_dir
    finally:
        _stop_group(server)


def _wait_for_page(server: Process, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"`make run` exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            with _opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer 200 within {timeout:.0f} s:\n{server.tail()}")


def _stop_group(server: Process, timeout: float = 15) -> None:
    """SIGTERM the whole group (make and the daphne it exec'd), SIGKILL what lingers."""
    group = server.proc.pid
    server.stop()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def _session_cookie(url: str) -> str:
    with _opener.open(url + "/", timeout=10) as response:
        assert response.status == 200
        cookies = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookies.load(header)
    assert "arena_visitor" in cookies, "GET / set no visitor cookie"
    return cookies["arena_visitor"].value


def _until(ws: ClientConnection, done: Callable[[Event], bool], timeout: float) -> list[Event]:
    """Events up to and including the first for which `done` is true."""
    deadline = time.monotonic() + timeout
    got: list[Event] = []
    while True:
        event: Event = json.loads(ws.recv(timeout=max(0.0, deadline - time.monotonic())))
        got.append(event)
        if done(event):
            return got


def _play_one_battle(url: str, session_key: str) -> tuple[list[Event], Event]:
    """Start, ask, wait for both answers, vote: the answers' events and the vote's."""
    with connect(
        url.replace("http://", "ws://", 1) + "/ws/battle/",
        origin=Origin(url),
        additional_headers={"Cookie": f"arena_visitor={session_key}"},
        proxy=None,
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"type": "battle.start"}))
        state = _until(ws, lambda e: e["type"] in ("battle.state", "error"), 10)[-1]
        assert state["type"] == "battle.state", state
        assert state["battle"]["models"] is None

        ws.send(json.dumps({"type": "message.send", "text": "Say hello in five words."}))
        ended = 0

        def both_ended(event: Event) -> bool:
            nonlocal ended
            ended += event["type"] in ("gen.done", "gen.error")
            return ended == 2 or event["type"] == "error"

        answers = _until(ws, both_ended, 120)
        ws.send(json.dumps({"type": "vote", "choice": "a"}))
        recorded = _until(ws, lambda e: e["type"] in ("vote.recorded", "error"), 30)[-1]
        return answers, recorded


def test_make_run_serves_a_battle_on_the_embedded_default(make_run: tuple[str, Path]) -> None:
    url, data_dir = make_run
    answers, recorded = _play_one_battle(url, _session_cookie(url))

    done = [e for e in answers if e["type"] == "gen.done"]
    assert sorted(e["side"] for e in done) == ["a", "b"], [e["type"] for e in answers]
    assert all(e["stats"]["tokens"] for e in done)
    assert recorded["type"] == "vote.recorded", recorded
    assert recorded["choice"] == "a"
    names = recorded["models"]
    assert names["a"] != names["b"]
    assert {names["a"], names["b"]} <= {spec["name"] for spec in [*DEMO, RAG_DEMO]}
    # The RAG variant answers from the project's own documentation.
    sides = {side for side in ("a", "b") if names[side] == RAG_DEMO["name"]}
    assert {s["side"] for s in recorded["sources"]} == sides
    for given in recorded["sources"]:
        assert all(p["source"].endswith(".md") for p in given["sources"]), given
    # The embedded default keeps its SQLite file in ARENA_DATA_DIR.
    assert (data_dir / "arena.sqlite3").is_file()
