"""Thin tasks: leaderboard snapshots and outlier flags."""

from __future__ import annotations

import logging
import threading

from celery import shared_task
from django.conf import settings
from django.db import connection

log = logging.getLogger(__name__)


@shared_task(name="ratings.tasks.leaderboard_refresh", ignore_result=True)
def leaderboard_refresh() -> None:
    from ratings.services import snapshots_refresh

    snapshots = snapshots_refresh()
    log.info("leaderboard refreshed: %d snapshots", len(snapshots))


@shared_task(name="ratings.tasks.voters_flag", ignore_result=True)
def voters_flag() -> None:
    from ratings.services import voters_flag_outliers

    log.info("outlier voters flagged: %d", voters_flag_outliers())


def leaderboard_refresh_maybe() -> None:
    """After a vote commits: refresh the snapshots every N-th vote."""
    from arena.models import Vote

    if Vote.objects.filter(source="arena").count() % settings.ARENA_LEADERBOARD_EVERY:
        return
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
