from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_ready

from inference.generation import generation_run


@shared_task(name="inference.tasks.generate_answer", ignore_result=True)
def generate_answer(answer_id: int) -> None:
    generation_run(answer_id=answer_id)


@worker_process_init.connect
def _preload_in_child(**kwargs: Any) -> None:
    from inference.engines import engine_preload

    engine_preload()


@worker_ready.connect
def _preload_in_threads_worker(sender: Any = None, **kwargs: Any) -> None:
    # A threads or solo pool has no child processes: load in the worker itself.
    # A prefork parent does not load (its children do, above).
    pool = getattr(sender, "pool", None)
    if pool is not None and type(pool).__module__.rsplit(".", 1)[-1] in ("thread", "solo"):
        from inference.engines import engine_preload

        engine_preload()
