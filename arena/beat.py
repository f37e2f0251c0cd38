"""The embedded default's beat: with no Celery beat process (ARENA_TASKS=thread),
one daemon thread of the web process runs every CELERY_BEAT_SCHEDULE entry on
its schedule, by task name, in this process.

The schedule is read again on every tick, so an entry added or changed in the
settings is picked up without a restart. A failing run is logged and the
entry runs again at its next time: the thread never dies of a task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from celery import current_app as app  # arena.celery's app: arena/__init__ made it
from celery.schedules import BaseSchedule, maybe_schedule
from django.conf import settings
from django.db import close_old_connections, connection

from arena.concurrency import daemon

log = logging.getLogger(__name__)

# Tasks with their own loop in the embedded default: the health monitor
# (inference.health.health_monitor_start, ARENA_HEALTH_MONITOR).
RUN_ELSEWHERE = frozenset({"inference.tasks.serving_health_check"})
# The longest the thread sleeps: how soon it sees a changed schedule.
MAX_SLEEP_SECONDS = 1.0

_started = threading.Event()


class Beat:
    """Runs due entries of a schedule; `tick()` is one look at the clock."""

    def __init__(
        self, entries: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None
    ) -> None:
        # Read on every tick: the settings' schedule, unless given one.
        self.entries = entries or (lambda: settings.CELERY_BEAT_SCHEDULE)
        self.last_run: dict[str, datetime] = {}
        self.schedules: dict[str, tuple[Any, BaseSchedule]] = {}
        self.broken: dict[str, str] = {}

    def _schedule(self, name: str, entry: Mapping[str, Any]) -> BaseSchedule:
        raw = entry["schedule"]
        known = self.schedules.get(name)
        if known is None or known[0] != raw:
            schedule = maybe_schedule(raw, app=app)
            if not isinstance(schedule, BaseSchedule):
                raise ValueError(f"beat entry {name}: no schedule in {raw!r}")
            self.schedules[name] = (raw, schedule)
        return self.schedules[name][1]

    def tick(self) -> float:
        """Run what is due; return the seconds until something may be due."""
        wait = MAX_SLEEP_SECONDS
        for name, entry in dict(self.entries()).items():
            if entry.get("task") in RUN_ELSEWHERE:
                continue
            try:
                wait = min(wait, self._entry_tick(name, entry))
            except Exception:  # a malformed entry: logged once, the others go on
                if self.broken.get(name) != repr(entry):
                    log.exception("beat entry %s is malformed: %r", name, entry)
                self.broken[name] = repr(entry)
        return wait

    def _entry_tick(self, name: str, entry: Mapping[str, Any]) -> float:
        schedule = self._schedule(name, entry)
        # As Celery beat: the first run is one interval after start.
        last = self.last_run.setdefault(name, schedule.now())
        due, next_in = schedule.is_due(last)
        if due:
            self.last_run[name] = schedule.now()
            if settings.ARENA_BEAT:
                entry_run(name=name, task=entry["task"])
        return max(float(next_in), 0.01)


def entry_run(*, name: str, task: str) -> None:
    """Run one task in this thread, as a worker would; whatever happens, the
    thread's database connection is closed afterwards."""
    close_old_connections()
    started = time.perf_counter()
    try:
        app.tasks[task].apply(throw=True)
    except Exception:
        log.exception("beat entry %s (%s) failed", name, task)
    else:
        log.info("beat entry %s (%s) ran in %.2f s", name, task, time.perf_counter() - started)
    finally:
        connection.close()


def _loop(beat: Beat) -> None:
    while True:
        try:
            wait = beat.tick()
        except Exception:  # a bad schedule entry: logged, and looked at again later
            log.exception("beat tick failed")
            wait = MAX_SLEEP_SECONDS
        time.sleep(wait)


def beat_start() -> None:
    """Start the embedded beat (once per process, only in the embedded default)."""
    if settings.ARENA_TASKS != "thread" or _started.is_set():
        return
    _started.set()
    # Tasks are found when first needed (Celery's lazy autodiscovery): now.
    app.loader.import_default_modules()
    daemon("beat", partial(_loop, Beat()))
