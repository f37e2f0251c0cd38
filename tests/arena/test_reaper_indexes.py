"""The reaper's questions stay cheap however many answers ever finished:
PostgreSQL answers them from the partial indexes on pending and streaming
answers (arena/migrations/0005_answer_reaper_indexes.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from arena.models import Answer, Battle, Turn
from inference.models import Contender

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="EXPLAIN plans are PostgreSQL's"),
]
FINISHED = 100_000
TURNS_PER_BATTLE = 5_000


def _many_finished_answers(alpha: Contender, beta: Contender) -> None:
    """100k finished answers (and a few live ones), written by SQL in a few
    statements: what an arena has after some months."""
    battles = Battle.objects.bulk_create(
        [
            Battle(session_key=f"visitor-{i}", contender_a=alpha, contender_b=beta)
            for i in range(FINISHED // (2 * TURNS_PER_BATTLE))
        ]
    )
    Turn.objects.bulk_create(
        [Turn(battle=b, index=i, user_text="hi") for b in battles for i in range(TURNS_PER_BATTLE)],
        batch_size=10_000,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO arena_answer (turn_id, side, attempt, superseded, contender_id,
                messages, params, text, status, finish_reason, error_code, error_message,
                created_at, started_at, heartbeat_at, finished_at)
            SELECT t.id, s.side, 0, false, %s, '[]'::jsonb, '{}'::jsonb, 'an answer',
                'done', 'stop', '', '', now(), now(), now(), now()
            FROM arena_turn t CROSS JOIN (VALUES ('a'), ('b')) AS s(side)
            """,
            [alpha.pk],
        )
        assert cursor.rowcount == FINISHED
    live = list(Turn.objects.filter(battle=battles[0]).order_by("index")[:3])
    # Regenerated: the finished first attempts give way to live ones.
    Answer.objects.filter(turn__in=live, side="a").update(superseded=True)
    Answer.objects.bulk_create(
        [
            Answer(turn=t, side="a", contender=alpha, messages=[], status=status, attempt=1)
            for t, status in zip(
                live,
                [Answer.Status.PENDING, Answer.Status.STREAMING, Answer.Status.PENDING],
                strict=True,
            )
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE arena_answer")


def _plan(condition: Q) -> str:
    query = Answer.objects.filter(condition, superseded=False).values_list(
        "id", "turn__battle_id", "turn__index", "side", "attempt"
    )
    return query.explain()


def test_the_reapers_queries_use_the_partial_indexes_among_100k_finished_answers(
    alpha: Contender, beta: Contender
) -> None:
    _many_finished_answers(alpha, beta)
    now = timezone.now()
    stale = Q(status=Answer.Status.STREAMING, heartbeat_at__lt=now - timedelta(seconds=15))
    unclaimed = Q(status=Answer.Status.PENDING, created_at__lt=now - timedelta(seconds=120))

    stale_plan, unclaimed_plan = _plan(stale), _plan(unclaimed)

    assert "answer_streaming_heartbeat" in stale_plan, stale_plan
    assert "answer_pending_created" in unclaimed_plan, unclaimed_plan
    for plan in (stale_plan, unclaimed_plan):
        assert "Seq Scan on arena_answer" not in plan, plan


def test_the_partial_indexes_hold_only_live_answers(alpha: Contender, beta: Contender) -> None:
    _many_finished_answers(alpha, beta)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.reltuples FROM pg_class c "
            "WHERE c.relname IN ('answer_streaming_heartbeat', 'answer_pending_created')"
        )
        sizes = dict(cursor.fetchall())
    assert set(sizes) == {"answer_streaming_heartbeat", "answer_pending_created"}
    assert all(tuples < 10 for tuples in sizes.values()), sizes
