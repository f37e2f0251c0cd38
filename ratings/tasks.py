"""Thin tasks: leaderboard snapshots and outlier flags, on their own queue
(ARENA_QUEUE_RATINGS), so a refresh never waits behind or delays answers."""

from __future__ import annotations

import logging
import threading

from celery import shared_task
from django.conf import settings
from django.db import connection

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


def leaderboard_refresh_maybe() -> None:
    """After a vote commits: refresh the snapshots every N-th vote since the
    last refresh began, counted in Redis (or this process), never by counting
    the votes in the database."""
    if store().incr(VOTES_SINCE_REFRESH) % settings.ARENA_LEADERBOARD_EVERY:
        return
    leaderboard_refresh_start()


def leaderboard_refresh_start() -> None:
    """A refresh in the background: on the ratings queue, or (embedded) a thread."""
    if settings.ARENA_TASKS == "celery":
        leaderboard_refresh.delay()
        return

    def run() -> None:
        try:
            leaderboard_refresh()
        except Exception:
            log.exception("leaderboard refresh failed")
        finally:
            connection.close()

    threading.Thread(target=run, name="leaderboard-refresh", daemon=True).start()
