"""No public page fits a board: pages read snapshots, or a board computed once
per filter into the cache (single-flight, with a TTL); a GET never saves."""

from __future__ import annotations

import io
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from arena.models import Vote
from inference.models import Contender, Engine
from ratings.boards import COMPUTED, BoardKey
from ratings.cache import store
from ratings.models import Snapshot, VoteCategory, VoteStyle
from ratings.selectors import board_version
from ratings.services import snapshots_refresh

CHOICES = ("a", "b", "a", "tie", "both_bad", "b", "a")


def _votes(n: int, *, names: tuple[str, ...] = ("strong", "middle", "weak")) -> None:
    """n votes between the contenders, from two sources, every other one tagged
    math and carrying answer style counts."""
    people = [Contender.objects.create(name=name, engine=Engine.NONE) for name in names]
    pairs = list(itertools.permutations(people, 2))
    saved = Vote.objects.bulk_create(
        [
            Vote(
                contender_a=pairs[i % len(pairs)][0],
                contender_b=pairs[i % len(pairs)][1],
                choice=CHOICES[i % len(CHOICES)],
                anonymous=True,
                source="arena" if i % 3 else "lab",
                external_id=str(i),
                created_at=timezone.now(),
            )
            for i in range(n)
        ]
    )
    VoteCategory.objects.bulk_create([VoteCategory(vote=v, name="math") for v in saved[::2]])
    VoteStyle.objects.bulk_create(
        [
            VoteStyle(vote=v, tokens_a=10 + i, tokens_b=20, headers_a=i % 2, headers_b=0,
                      lists_a=0, lists_b=i % 3, bold_a=1, bold_b=0)
            for i, v in enumerate(saved)
        ]
    )  # fmt: skip


def _queries(n: int) -> Iterator[dict[str, Any]]:
    """Every filter combination the page offers."""
    categories = ["", "math"] if n else [""]
    for category, style, dedup, ci, sources in itertools.product(
        categories,
        ("0", "1"),
        ("0", "1"),
        ("sandwich", "bootstrap"),
        ([], ["lab"], ["arena", "lab"]),
    ):
        query: dict[str, Any] = {"style": style, "dedup": dedup, "ci": ci}
        if category:
            query["category"] = category
        if sources:
            query["source"] = sources
        yield query


def _get_all(client: Client, n: int, contender: str | None) -> list[int]:
    statuses = []
    for query in _queries(n):
        for path in (
            "/leaderboard/",
            "/leaderboard/leaderboard.json",
            "/leaderboard/leaderboard.csv",
        ):
            statuses.append(client.get(path, query).status_code)
        if contender:
            statuses.append(client.get(f"/leaderboard/contender/{contender}/", query).status_code)
    return statuses


def _vote_table_reads(queries: CaptureQueriesContext) -> list[str]:
    """Reads of the votes beyond the one-row lookup of the latest vote (the
    cache's version before the first refresh): what a fit would run."""
    table = Vote._meta.db_table
    return [
        q["sql"]
        for q in queries.captured_queries
        if table in q["sql"] and not q["sql"].rstrip().endswith("DESC LIMIT 1")
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("n", [0, 1, 3, 30])
def test_every_filter_answers_200_and_a_second_request_fits_nothing(
    n: int, settings: object
) -> None:
    settings.ARENA_MIN_VOTES = 1  # type: ignore[attr-defined]  # math gets its own snapshots
    _votes(n)
    client = Client()
    contender = "strong" if n else None
    first = _get_all(client, n, contender)
    assert set(first) == {200}
    fitted = COMPUTED.value
    with CaptureQueriesContext(connection) as again:
        assert set(_get_all(client, n, contender)) == {200}
    assert COMPUTED.value == fitted  # within the TTL: read from the cache
    assert _vote_table_reads(again) == []
    assert not Snapshot.objects.exists()  # a page view never saves a snapshot

    refreshed = snapshots_refresh()
    assert refreshed is not None
    saved = Snapshot.objects.count()
    fitted = COMPUTED.value
    with CaptureQueriesContext(connection) as public:
        for query in _queries(n):
            query.pop("source", None)
            assert client.get("/leaderboard/leaderboard.json", query).status_code == 200
            assert client.get("/leaderboard/", query).status_code == 200
    # Every board the page offers without a choice of sources is a snapshot.
    assert COMPUTED.value == fitted
    assert _vote_table_reads(public) == []
    assert Snapshot.objects.count() == saved


@pytest.mark.django_db
def test_the_contender_page_draws_the_elo_trend_the_refresh_stored() -> None:
    _votes(30)
    snapshots_refresh()
    with CaptureQueriesContext(connection) as page:
        response = Client().get("/leaderboard/contender/strong/")
    assert response.status_code == 200
    assert b'<svg class="trend"' in response.content
    assert _vote_table_reads(page) == []  # no replay of the votes on a view
    overall = Snapshot.objects.filter(kind="board", category="", style_control=False).first()
    assert overall is not None
    assert set(overall.extra["trend"]["ratings"]) == {"strong", "middle", "weak"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_for_one_uncached_board_run_one_computation(
    settings: object,
) -> None:
    settings.ARENA_BOARD_WAIT_SECONDS = 60  # type: ignore[attr-defined]  # all wait, none retry
    _votes(300)
    query = {"source": "lab", "style": "1", "ci": "bootstrap", "dedup": "0"}
    before = COMPUTED.value
    start = threading.Barrier(8)
    answers: list[tuple[int, int]] = []

    def ask() -> None:
        try:
            start.wait()
            response = Client().get("/leaderboard/leaderboard.json", query)
            answers.append((response.status_code, response.json()["votes"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert answers == [(200, 100)] * 8  # the lab's third of the votes, for everyone
    assert COMPUTED.value == before + 1


@pytest.mark.django_db
def test_a_board_another_request_is_computing_answers_retry_after(settings: object) -> None:
    settings.ARENA_BOARD_WAIT_SECONDS = 0  # type: ignore[attr-defined]
    _votes(30)
    key = BoardKey.of(category="", style_control=False, ci="sandwich", dedup=True,
                      sources=["lab"], known_sources=["arena", "lab"])  # fmt: skip
    lock = f"{key.cache_key(board_version())}:lock"
    token = store().lock(lock, 60)
    assert token is not None
    try:
        client = Client()
        data = client.get("/leaderboard/leaderboard.json", {"source": "lab"})
        assert data.status_code == 503 and int(data["Retry-After"]) >= 1
        assert data.json()["error"] == "computing"
        page = client.get("/leaderboard/", {"source": "lab"})
        assert page.status_code == 503 and b'id="computing"' in page.content
        assert client.get("/leaderboard/leaderboard.csv", {"source": "lab"}).status_code == 503
    finally:
        store().unlock(lock, token)
    assert Client().get("/leaderboard/leaderboard.json", {"source": "lab"}).status_code == 200


@pytest.mark.django_db
def test_unknown_sources_and_all_sources_share_the_every_source_board() -> None:
    _votes(30)
    known = ["arena", "lab"]
    every = BoardKey.of(category="", style_control=False, ci="sandwich", dedup=True,
                        sources=[], known_sources=known)  # fmt: skip
    for sources in (["arena", "lab"], ["lab", "arena", "lab"], ["nowhere"], ["nowhere", "x"]):
        key = BoardKey.of(category="", style_control=False, ci="sandwich", dedup=True,
                          sources=sources, known_sources=known)  # fmt: skip
        assert key == every
    data = Client().get("/leaderboard/leaderboard.json", {"source": ["arena", "lab"]}).json()
    assert data["votes"] == 30


@pytest.mark.django_db
def test_a_filtered_compute_leaderboard_never_becomes_the_overall_board() -> None:
    _votes(30)
    Vote.objects.filter(external_id__in=["1", "2", "4"]).update(identity_leak=True)
    client = Client()
    assert client.get("/leaderboard/leaderboard.json").json()["votes"] == 27
    out = io.StringIO()
    call_command("compute_leaderboard", "--source", "lab", stdout=out)
    call_command("compute_leaderboard", "--include-flagged", stdout=out)
    assert set(Snapshot.objects.values_list("kind", flat=True)) == {"filtered"}
    assert Snapshot.objects.get(filter__include_flagged=True).votes == 30
    assert client.get("/leaderboard/leaderboard.json").json()["votes"] == 27
    snapshots_refresh()
    call_command("compute_leaderboard", "--source", "lab", stdout=out)
    assert client.get("/leaderboard/leaderboard.json").json()["votes"] == 27
    assert client.get("/leaderboard/").content.count(b"27 votes") == 1


@pytest.mark.django_db(transaction=True)
def test_twenty_different_custom_boards_at_once_answer_200_or_retry_never_an_error(
    settings: object,
) -> None:
    settings.ARENA_BOARD_WAIT_SECONDS = 0  # type: ignore[attr-defined]  # busy: retry at once
    _votes(300)
    queries = [q for q in _queries(300) if "source" in q][:20]
    start = threading.Barrier(len(queries))
    answers: list[tuple[int, str | None]] = []

    def ask(query: dict[str, Any]) -> None:
        try:
            start.wait()
            response = Client().get("/leaderboard/leaderboard.json", query)
            answers.append((response.status_code, response.headers.get("Retry-After")))
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(q,)) for q in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 20
    assert {status for status, _ in answers} <= {200, 503}
    assert all(retry and int(retry) >= 1 for status, retry in answers if status == 503)
    settings.ARENA_BOARD_WAIT_SECONDS = 30  # type: ignore[attr-defined]
    client = Client()
    assert {client.get("/leaderboard/leaderboard.json", q).status_code for q in queries} == {200}
