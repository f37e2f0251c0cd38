"""Uploads ingested in the background: a job runs once, records each file's
outcome as it goes, drops the bytes it was given, and never stays running."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from inference.models import Chunk, Document, IngestJob, IngestJobFile, KnowledgeBase
from inference.rag import embeddings, jobs
from inference.rag.ingest import IngestOutcome
from inference.rag.jobs import (
    STALE_MESSAGE,
    UNCLAIMED_MESSAGE,
    ingest_job_create,
    ingest_job_fail,
    ingest_job_run,
    ingest_jobs_reap,
)

# Not transactional: the jobs are never dispatched (their on_commit never
# fires), each test runs them itself.
pytestmark = pytest.mark.django_db

LEAVE = b"# Leave\n\n## Holidays\n\n25 days of paid holiday."
TEA = b"# Tea\n\nGreen tea at 80C, black tea at 95C."


def _job(kb: KnowledgeBase, *files: tuple[str, bytes], **kwargs: Any) -> IngestJob:
    return ingest_job_create(knowledge_base=kb, uploaded_by=None, files=files, **kwargs)


def _outcomes(job: IngestJob) -> list[tuple[str, str, int]]:
    job.refresh_from_db()
    return [(o["source"], o["status"], o["chunks"]) for o in job.outcomes]


def test_a_good_and_a_bad_file_end_done_with_one_added_and_one_error(
    handbook: KnowledgeBase,
) -> None:
    job = _job(handbook, ("leave.md", LEAVE), ("latin.txt", "Caf\u00e9".encode("latin-1")))
    assert IngestJobFile.objects.filter(job=job).count() == 2
    ingest_job_run(job_id=job.pk)
    assert _outcomes(job) == [("leave.md", "added", 1), ("latin.txt", "error", 0)]
    assert "latin.txt: not UTF-8 text" in job.outcomes[1]["message"]
    assert (job.status, job.files_done, job.files_total, job.chunks) == ("done", 2, 2, 1)
    assert job.started_at and job.finished_at and not job.error and not job.current
    assert Chunk.objects.filter(document__source="leave.md").count() == 1
    assert not IngestJobFile.objects.exists()  # the bytes are not kept


def test_refused_uploads_are_recorded_as_done_with_their_reason(handbook: KnowledgeBase) -> None:
    refused = IngestOutcome("virus.exe", "error", "virus.exe: unsupported file type (.exe)")
    job = _job(handbook, ("leave.md", LEAVE), refused=[refused])
    assert (job.files_done, job.files_total) == (1, 2)
    ingest_job_run(job_id=job.pk)
    assert _outcomes(job) == [("virus.exe", "error", 0), ("leave.md", "added", 1)]
    assert (job.status, job.files_done) == ("done", 2)


def test_unchanged_files_are_reported_but_not_counted_as_new_chunks(
    handbook: KnowledgeBase,
) -> None:
    ingest_job_run(job_id=_job(handbook, ("leave.md", LEAVE)).pk)
    again = _job(handbook, ("leave.md", LEAVE))
    ingest_job_run(job_id=again.pk)
    assert _outcomes(again) == [("leave.md", "unchanged", 1)]
    assert again.chunks == 0


def test_a_job_delivered_twice_runs_once(
    handbook: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(handbook, ("leave.md", LEAVE), ("tea.md", TEA))
    ingested: list[str] = []
    real = jobs.document_ingest

    def second_delivery_midway(**kwargs: Any) -> IngestOutcome:
        # What a second worker given the same job while it runs would do.
        ingested.append(kwargs["source"])
        ingest_job_run(job_id=job.pk)
        return real(**kwargs)

    monkeypatch.setattr(jobs, "document_ingest", second_delivery_midway)
    ingest_job_run(job_id=job.pk)
    ingest_job_run(job_id=job.pk)  # and once more after it is done
    assert ingested == ["leave.md", "tea.md"]
    assert _outcomes(job) == [("leave.md", "added", 1), ("tea.md", "added", 1)]
    assert (job.status, job.files_done, job.chunks) == ("done", 2, 2)


def test_an_unexpected_error_fails_the_job_and_drops_the_remaining_bytes(
    handbook: KnowledgeBase, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job = _job(handbook, ("leave.md", LEAVE), ("tea.md", TEA), ("more.md", b"# More\n\nText."))
    real = embeddings.embed_texts
    calls = []

    def fails_the_second_time(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the disk is on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(embeddings, "embed_texts", fails_the_second_time)
    with caplog.at_level(logging.ERROR, logger="inference.rag.jobs"):
        ingest_job_run(job_id=job.pk)
    assert _outcomes(job) == [("leave.md", "added", 1)]
    assert job.status == "failed"
    assert "while ingesting tea.md (RuntimeError: the disk is on fire)" in job.error
    assert job.finished_at is not None
    assert not IngestJob.objects.filter(status="running").exists()
    assert not IngestJobFile.objects.exists()
    assert list(Document.objects.values_list("source", flat=True)) == ["leave.md"]
    assert any(r.exc_info for r in caplog.records)  # the traceback is in the log


def test_a_job_failed_while_it_runs_is_not_finished_by_its_worker(
    handbook: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(handbook, ("leave.md", LEAVE), ("tea.md", TEA))
    real = jobs.document_ingest

    def reaped_meanwhile(**kwargs: Any) -> IngestOutcome:
        ingest_job_fail(job_id=job.pk, error="reaped", status=IngestJob.Status.RUNNING)
        return real(**kwargs)

    monkeypatch.setattr(jobs, "document_ingest", reaped_meanwhile)
    ingest_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.error, job.files_done, job.outcomes) == ("failed", "reaped", 0, [])
    assert list(Document.objects.values_list("source", flat=True)) == ["leave.md"]
    assert not IngestJobFile.objects.exists()


def test_stale_and_forgotten_jobs_are_failed_and_the_rest_left_alone(
    handbook: KnowledgeBase,
) -> None:
    now = timezone.now()
    stale = _job(handbook, ("a.md", LEAVE))
    busy = _job(handbook, ("b.md", LEAVE))
    forgotten = _job(handbook, ("c.md", LEAVE))
    waiting = _job(handbook, ("d.md", LEAVE))
    IngestJob.objects.filter(pk=stale.pk).update(
        status="running", progressed_at=now - timedelta(minutes=31)
    )
    IngestJob.objects.filter(pk=busy.pk).update(
        status="running", progressed_at=now - timedelta(minutes=5)
    )
    IngestJob.objects.filter(pk=forgotten.pk).update(created_at=now - timedelta(hours=25))
    assert ingest_jobs_reap() == 2
    statuses = dict(IngestJob.objects.values_list("pk", "status"))
    assert [statuses[j.pk] for j in (stale, busy, forgotten, waiting)] == [
        "failed",
        "running",
        "failed",
        "queued",
    ]
    stale.refresh_from_db()
    forgotten.refresh_from_db()
    assert (stale.error, forgotten.error) == (STALE_MESSAGE, UNCLAIMED_MESSAGE)
    assert set(IngestJobFile.objects.values_list("source", flat=True)) == {"b.md", "d.md"}
    ingest_job_run(job_id=forgotten.pk)  # its task, delivered at last, does nothing
    assert not Document.objects.exists()


def test_waiting_jobs_are_queued_again_after_a_restart_and_only_they(
    handbook: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded default queues jobs in the web process's threads: a restart
    # loses the queue, not the jobs, and start-up queues them again.
    waiting = _job(handbook, ("leave.md", LEAVE))
    running = _job(handbook, ("tea.md", TEA))
    IngestJob.objects.filter(pk=running.pk).update(status=IngestJob.Status.RUNNING)
    done = _job(handbook, ("tea.md", TEA))
    ingest_job_run(job_id=done.pk)
    queued: list[int] = []
    monkeypatch.setattr(jobs, "ingest_start", lambda *, job_id: queued.append(job_id))
    assert jobs.ingest_jobs_requeue() == 1
    assert queued == [waiting.pk]
    ingest_job_run(job_id=waiting.pk)
    assert _outcomes(waiting) == [("leave.md", "added", 1)]
