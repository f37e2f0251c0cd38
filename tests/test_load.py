"""The load benchmark's machinery at a small N, on the real stack.

bench/load.py starts its own daphne, Celery workers and token server on a
scratch database of the PostgreSQL server the tests use, and Redis database
12 of theirs; here five visitors battle at once and vote. The full N runs by
its documented command (`bench/load.py --battles 200`, `--sweep`).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from django.conf import settings

from bench.load import LoadConfig, Stack, redis_bench_url
from tests.conftest import ARTIFACTS

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]


def _pg_server() -> str:
    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        pytest.skip("the load benchmark needs PostgreSQL: set DATABASE_URL")
    user = quote(db.get("USER") or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"


@pytest.fixture
def stack() -> Iterator[Stack]:
    if not settings.REDIS_URL:
        pytest.skip("the load benchmark needs Redis (channel layer, Celery): set REDIS_URL")
    config = LoadConfig(
        tokens=20,
        workers=1,
        pg_server=_pg_server(),
        redis_url=redis_bench_url(settings.REDIS_URL, 12),
        log_dir=ARTIFACTS / "load",
        progress=False,
        slack_seconds=30,
        idle_seconds=10,
    )
    with Stack(config) as running:
        yield running


def test_five_visitors_battling_at_once_lose_no_vote_and_no_token(stack: Stack) -> None:
    report = stack.run(5)

    assert report.failures == {}, report.failures
    assert report.voted == report.votes_in_db == 5
    assert report.votes_lost == 0
    assert report.tokens_emitted == 5 * 2 * 20
    assert report.tokens_delivered / report.tokens_emitted >= 0.999
    assert report.answers_mismatched == 0
