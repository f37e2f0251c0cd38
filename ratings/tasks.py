"""The tasks of ratings, leaderboard snapshots and outlier flags, on their own
queue (ARENA_QUEUE_RATINGS) so a refresh never waits behind or delays answers;
and when a vote starts a refresh (every N-th vote, queued or a thread)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from arena.concurrency import daemon
from ratings.annotation import battle_vote_annotate
from ratings.cache import store
from ratings.services import VOTES_SINCE_REFRESH, snapshots_refresh, voters_flag_outliers

log = logging.getLogger(__name__)


@shared_task(name="ratings.tasks.leaderboard_refresh", ignore_result=True)
def leaderboard_refresh() -> None:
    snapshots = snapshots_refresh()
    if snapshots is None:
        log.info("leaderboard refresh skipped: another one is running")
        return
    log.info("leaderboard refreshed: %d snapshots", len(snapshots))


@shared_task(name="ratings.tasks.voters_flag", ignore_result=True)
def voters_flag() -> None:
    log.info("outlier voters flagged: %d", voters_flag_outliers())


@shared_task(name="ratings.tasks.vote_counted", ignore_result=True)
def vote_counted(*, vote_id: int) -> None:
    """A vote just committed (arena queues this by name): annotate it, then
    count it towards the next refresh. A vote the refresh annotated first is
    on that refresh's boards already, so it is not counted again."""
    if battle_vote_annotate(vote_id=vote_id):
        leaderboard_refresh_maybe()


def leaderboard_refresh_maybe() -> None:
    """After a vote is annotated: refresh the snapshots every N-th vote since the
    last refresh began, counted in Redis (or this process), never by counting
    the votes in the database."""
    if store().incr(VOTES_SINCE_REFRESH) % settings.ARENA_LEADERBOARD_EVERY_VOTES:
        return
    leaderboard_refresh_start()


def leaderboard_refresh_start() -> None:
    """A refresh in the background: on the ratings queue, or (embedded) a thread."""
    if settings.ARENA_TASKS == "celery":
        leaderboard_refresh.delay()
        return
    daemon("leaderboard-refresh", leaderboard_refresh)
