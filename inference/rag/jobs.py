"""Admin uploads ingested in the background.

The view stores the accepted files' bytes in the database (never on disk) and
queues a job; a worker on the local queue (or a thread of the web process)
claims it once, ingests file by file, saves its progress as it goes and drops
each file's bytes once it is ingested. A job whose worker died is failed by
`ingest_jobs_reap`, which the admin's pages run when they load.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from inference.models import Engine, IngestJob, IngestJobFile, KnowledgeBase
from inference.queues import INGEST_TASK, work_start
from inference.rag.ingest import IngestOutcome, IngestProgress, document_ingest

log = logging.getLogger(__name__)

Status = IngestJob.Status

# A running job saves progress at every batch of chunks embedded (seconds);
# half an hour without any means its worker is gone.
STALE_AFTER = timedelta(minutes=30)
# A queued job may wait behind others on the local queue, but not for a day:
# by then it is lost (e.g. it was queued in the threads of a web process that
# has since restarted).
UNCLAIMED_AFTER = timedelta(hours=24)

STALE_MESSAGE = (
    "No progress for 30 minutes: the process ingesting these files stopped (restarted or "
    "killed). Upload again the files that have no outcome below."
)
UNCLAIMED_MESSAGE = "No worker started this job within a day. Upload the files again."
UNQUEUED_MESSAGE = "The job could not be queued (is the task broker down?). Upload the files again."


def _outcome_json(outcome: IngestOutcome) -> dict[str, Any]:
    return {
        "source": outcome.source,
        "status": outcome.status,
        "chunks": outcome.chunks,
        "message": outcome.message,
    }


def ingest_job_create(
    *,
    knowledge_base: KnowledgeBase,
    uploaded_by: Any,
    files: Sequence[tuple[str, bytes]],
    refused: Sequence[IngestOutcome] = (),
) -> IngestJob:
    """A job that ingests `files` ((source, bytes), in order) into
    `knowledge_base`, queued once its rows are committed. `refused` are uploads
    that were not read (too large, wrong type): they are recorded as done."""
    with transaction.atomic():
        job = IngestJob.objects.create(
            knowledge_base=knowledge_base,
            uploaded_by=uploaded_by,
            files_total=len(files) + len(refused),
            files_done=len(refused),
            outcomes=[_outcome_json(o) for o in refused],
        )
        IngestJobFile.objects.bulk_create(
            IngestJobFile(job=job, source=source, data=data) for source, data in files
        )
        transaction.on_commit(partial(ingest_start, job_id=job.pk))
    return job


class _JobProgress(IngestProgress):
    """Saves what the job is doing, and that it is alive, at each batch embedded."""

    def __init__(self, job_id: int, source: str) -> None:
        self.job_id = job_id
        self.source = source

    def embedded(self, done: int, total: int) -> None:
        IngestJob.objects.filter(pk=self.job_id, status=Status.RUNNING).update(
            current=f"{self.source}: {done} of {total} chunks embedded"[:600],
            progressed_at=timezone.now(),
        )


def ingest_job_run(*, job_id: int) -> None:
    """Ingest the files of a queued job. Runs it once however often it is
    called (claimed by a conditional UPDATE); a file that cannot be read is
    reported and the others go on; anything unexpected fails the job, which
    never stays running."""
    now = timezone.now()
    claimed = IngestJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=now, progressed_at=now
    )
    if not claimed:
        log.info("ingest job %s: not queued (already run, or reaped); nothing to do", job_id)
        return
    source = ""
    try:
        job = IngestJob.objects.select_related("knowledge_base").get(pk=job_id)
        for file_id, source in job.files.values_list("id", "source"):
            if not _file_ingest(job, file_id, source):
                return  # reaped meanwhile: someone else has finished it
        source = ""
        IngestJob.objects.filter(pk=job_id, status=Status.RUNNING).update(
            status=Status.DONE, current="", finished_at=timezone.now()
        )
    except Exception as exc:
        log.exception("ingest job %s failed", job_id)
        where = f" while ingesting {source}" if source else ""
        ingest_job_fail(
            job_id=job_id,
            error=f"Stopped by an unexpected error{where} ({type(exc).__name__}: {exc}); "
            "the files without an outcome below were not ingested. The server log has details.",
            status=Status.RUNNING,
        )


def _file_ingest(job: IngestJob, file_id: int, source: str) -> bool:
    """Ingest one file of a running job and record its outcome; False when
    the job is no longer running (its progress is not saved then)."""
    alive = IngestJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
        current=f"{source}: reading"[:600], progressed_at=timezone.now()
    )
    if not alive:
        return False
    data = IngestJobFile.objects.filter(pk=file_id).values_list("data", flat=True).get()
    outcome = document_ingest(
        knowledge_base=job.knowledge_base,
        source=source,
        data=bytes(data),  # a memoryview on PostgreSQL
        progress=_JobProgress(job.pk, source),
    )
    job.files_done += 1
    job.outcomes.append(_outcome_json(outcome))
    if outcome.status in {"added", "replaced"}:
        job.chunks += outcome.chunks
    with transaction.atomic():
        saved = IngestJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
            files_done=job.files_done,
            chunks=job.chunks,
            outcomes=job.outcomes,
            progressed_at=timezone.now(),
        )
        IngestJobFile.objects.filter(pk=file_id).delete()
    return bool(saved)


def ingest_job_fail(*, job_id: int, error: str, status: str = Status.QUEUED) -> bool:
    """Fail a job that is still in `status` and drop its files' bytes; False
    when it had moved on."""
    with transaction.atomic():
        failed = IngestJob.objects.filter(pk=job_id, status=status).update(
            status=Status.FAILED, error=error, current="", finished_at=timezone.now()
        )
        if failed:
            IngestJobFile.objects.filter(job_id=job_id).delete()
    return bool(failed)


def ingest_jobs_reap() -> int:
    """Fail running jobs whose progress stopped long ago and queued jobs no
    worker took, so none shows "running" forever; returns how many. Each is
    failed by a conditional UPDATE: a worker that comes back cannot finish it."""
    now = timezone.now()
    stale = Q(status=Status.RUNNING, progressed_at__lt=now - STALE_AFTER)
    unclaimed = Q(status=Status.QUEUED, created_at__lt=now - UNCLAIMED_AFTER)
    reaped = 0
    for condition, error in ((stale, STALE_MESSAGE), (unclaimed, UNCLAIMED_MESSAGE)):
        for job_id in IngestJob.objects.filter(condition).values_list("id", flat=True):
            with transaction.atomic():
                if IngestJob.objects.filter(condition, pk=job_id).update(
                    status=Status.FAILED, error=error, current="", finished_at=now
                ):
                    IngestJobFile.objects.filter(job_id=job_id).delete()
                    reaped += 1
    return reaped


def ingest_jobs_requeue() -> int:
    """Queue again the jobs still waiting: in the embedded default they were
    queued in the threads of a web process, lost when it restarted. Each runs
    once however often it is queued (ingest_job_run claims it)."""
    job_ids = list(IngestJob.objects.filter(status=Status.QUEUED).values_list("id", flat=True))
    for job_id in job_ids:
        ingest_start(job_id=job_id)
    return len(job_ids)


def ingest_jobs_recent(*, knowledge_base: KnowledgeBase, limit: int = 10) -> QuerySet[IngestJob]:
    return IngestJob.objects.filter(knowledge_base=knowledge_base).select_related("uploaded_by")[
        :limit
    ]


def ingest_start(*, job_id: int) -> None:
    """Queue an admin upload's ingestion (call after its job is committed) on
    the local queue: it is CPU-bound, and those workers have the model loaded.
    A broker that refuses it fails the job with a message saying so."""
    try:
        work_start(INGEST_TASK, ingest_job_run, engine=Engine.LOCAL, job_id=job_id)
    except Exception:
        log.exception("ingest job %s could not be queued", job_id)
        ingest_job_fail(job_id=job_id, error=UNQUEUED_MESSAGE)
