"""The garbage collector of the long-running processes (web server, workers).

A full collection walks every container object the process holds, and a
Django process holds a few hundred thousand of them from its start-up alone
(modules, models, URL patterns, the app registry). With 400 streams that was
a 75-300 ms pause of a worker's event loop now and then, every token held up
behind it (bench/load.py, GC callbacks timing each collection). Once a
process is ready, its start-up objects are moved out of the collector's way
(gc.freeze: they stay for the process's life anyway); later collections walk
only what was made since.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def gc_settle() -> None:
    """Collect what start-up left behind, then freeze the rest: call once a
    process has loaded what it will keep (again after a later load).
    ARENA_GC_FREEZE = False leaves the collector as Python sets it up."""
    from django.conf import settings

    if not settings.ARENA_GC_FREEZE:
        return
    gc.collect()
    gc.freeze()
    log.debug("%d objects moved out of the garbage collector's walks", gc.get_freeze_count())
