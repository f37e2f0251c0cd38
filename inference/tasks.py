"""Celery tasks: each takes ids and calls one service. What a worker process
starts once it is ready is in arena.processes (connected in arena.celery)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from inference.generation import generation_run
from inference.health import health_check_all
from inference.queues import GENERATE_TASK, HEALTH_TASK, INGEST_TASK, JUDGE_TASK
from inference.rag.jobs import ingest_job_run
from inference.rag.scoring import answer_rag_judge

# A claim that failed because the database was briefly away is retried; once
# claimed, the task handles its own failures (and a reaper the rest).
DB_RETRIED: dict[str, Any] = {
    "ignore_result": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 8,
    "retry_jitter": False,
    "max_retries": 5,
}


@shared_task(name=GENERATE_TASK, **DB_RETRIED)
def generate_answer(answer_id: int) -> None:
    generation_run(answer_id=answer_id)


@shared_task(name=JUDGE_TASK, ignore_result=True)
def judge_rag_answer(answer_id: int) -> None:
    answer_rag_judge(answer_id=answer_id)


@shared_task(name=INGEST_TASK, **DB_RETRIED)
def ingest_upload(job_id: int) -> None:
    """An admin upload's documents ingested (queued on the local queue)."""
    ingest_job_run(job_id=job_id)


@shared_task(name=HEALTH_TASK, ignore_result=True, expires=120)
def serving_health_check() -> None:
    health_check_all()
