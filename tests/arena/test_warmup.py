"""The web process loads py3langid's model at start-up, so the first vote
does not wait ~0.7 s for it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import threading, time
import django
{setup}
from py3langid import langid
for t in threading.enumerate():
    if t.name == "warm-up":
        t.join(30)
loaded = langid.IDENTIFIER is not None
from ratings.categories import language_of
started = time.perf_counter()
language_of("Quelle heure est-il ?")
print(loaded, round(time.perf_counter() - started, 3))
"""


def _probe(setup: str) -> tuple[bool, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(DJANGO_SETTINGS_MODULE="arena.settings", ARENA_PRELOAD="0", ARENA_HEALTH_MONITOR="0")
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    loaded, seconds = out.stdout.split()[-2:]
    return loaded == "True", float(seconds)


def test_the_asgi_application_warms_the_language_model_and_a_bare_setup_does_not() -> None:
    warmed, first_vote = _probe("import arena.asgi")
    cold, cold_first = _probe("django.setup()")
    assert (warmed, cold) == (True, False)
    assert first_vote < 0.1 < cold_first
