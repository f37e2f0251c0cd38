from __future__ import annotations

import gc
from typing import Any

from arena.gcpolicy import gc_settle


def test_start_up_objects_leave_the_collectors_walks() -> None:
    kept = [[i] for i in range(1000)]  # containers alive at "start-up"
    try:
        gc_settle()
        assert gc.get_freeze_count() >= len(kept)
        walked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
        assert not any(id(x) in walked for x in kept)
        made_later = [0]
        walked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
        assert id(made_later) in walked
    finally:
        gc.unfreeze()  # the test process goes on collecting as before


def test_the_freeze_can_be_turned_off(settings: Any) -> None:
    settings.ARENA_GC_FREEZE = False
    before = gc.get_freeze_count()
    gc_settle()
    assert gc.get_freeze_count() == before
