import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

app = Celery("arena")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _consumes(celery: Any) -> frozenset[str] | None:
    queues = getattr(celery.amqp.queues, "consume_from", None) or {}
    return frozenset(queues) or None


@worker_process_init.connect
def _worker_child_ready(**kwargs: Any) -> None:
    # A prefork pool's child. arena.processes imports the apps' models: this
    # module is imported before Django is set up, the signal fires after.
    from arena.processes import worker_process_ready

    worker_process_ready(consumes=_consumes(app))


@worker_ready.connect
def _worker_ready(sender: Any = None, **kwargs: Any) -> None:
    # A threads or solo pool has no child processes: start in the worker itself
    # (and a threads pool starts its threads now). A prefork parent starts
    # nothing (its children do, above).
    from arena.processes import worker_process_ready, worker_threads_start  # as above

    pool: Any = getattr(sender, "pool", None)
    kind = type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else ""
    if kind == "thread":
        worker_threads_start(pool.executor, pool.limit)
    if kind in ("thread", "solo"):
        worker_process_ready(consumes=_consumes(sender.app))
