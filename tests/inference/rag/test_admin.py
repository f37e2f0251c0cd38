"""Bob, who is staff, managing knowledge bases in the admin (the test client
with CSRF checks on): uploads ingested in the background with their progress
shown, refusals with reasons, documents, questions."""

from __future__ import annotations

import html
import io
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.test.utils import override_settings
from django.utils import timezone

from inference.models import Chunk, Document, IngestJob, IngestJobFile, KnowledgeBase
from inference.rag.admin import safe_name
from inference.rag.ingest import IngestOutcome, document_ingest
from inference.rag.jobs import STALE_MESSAGE, ingest_job_create, ingest_job_run
from tests.inference.rag.pdfs import scanned_pdf, text_pdf

# Not transactional (but for the test that says otherwise): an upload's job is
# never dispatched here, since the test's transaction never commits; the tests
# run it themselves with ingest_job_run.
pytestmark = pytest.mark.django_db


class Bob:
    def __init__(self) -> None:
        self.client = Client(enforce_csrf_checks=True)

    def token(self, url: str) -> str:
        assert self.client.get(url).status_code == 200
        return str(self.client.cookies["csrftoken"].value)

    def get(self, url: str) -> str:
        response = self.client.get(url)
        assert response.status_code == 200
        return html.unescape(response.content.decode())

    def post(self, url: str, data: dict[str, Any], *, follow: bool = True) -> Any:
        return self.client.post(
            url, {**data, "csrfmiddlewaretoken": self.token(url)}, follow=follow
        )


@pytest.fixture
def bob(db: None) -> Bob:
    User.objects.create_user("bob", password="bob-pw", is_staff=True).user_permissions.set(
        Permission.objects.filter(content_type__app_label="inference")
    )
    pages = Bob()
    assert pages.client.login(username="bob", password="bob-pw")
    return pages


def _file(name: str, data: bytes) -> io.BytesIO:
    upload = io.BytesIO(data)
    upload.name = name
    return upload


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _upload(bob: Bob, kb: KnowledgeBase, *files: io.BytesIO) -> IngestJob:
    """Upload `files`, follow to the job's page; the job, not run yet."""
    url = f"/admin/inference/knowledgebase/{kb.pk}/upload/"
    response = bob.post(url, {"files": list(files)}, follow=False)
    assert response.status_code == 302
    job = IngestJob.objects.get()
    assert response["Location"] == f"/admin/inference/knowledgebase/{kb.pk}/ingest/{job.pk}/"
    return job


def _job_page(bob: Bob, job: IngestJob) -> str:
    """The job's page, whitespace collapsed."""
    return " ".join(
        bob.get(f"/admin/inference/knowledgebase/{job.knowledge_base_id}/ingest/{job.pk}/").split()
    )


def _ingested(bob: Bob, job: IngestJob) -> dict[str, str]:
    """Run the job as its worker would; each file's outcome as the page shows it."""
    ingest_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "done"
    page = _job_page(bob, job)
    assert f"Done: {job.files_done} of {job.files_total} file" in page
    for o in job.outcomes:
        assert o["source"] in page
        assert o["message"] in page
    return {
        o["source"]: f"{o['status']}, {o['chunks']} chunks. {o['message']}" for o in job.outcomes
    }


def test_the_list_shows_documents_chunks_and_revision(bob: Bob, handbook: KnowledgeBase) -> None:
    document_ingest(knowledge_base=handbook, source="a.md", data=b"# A\n\nAlpha text.")
    page = bob.get("/admin/inference/knowledgebase/")
    assert "handbook" in page
    assert "Upload documents" in page
    assert "Try a question" in page


def test_uploaded_files_are_ingested_and_a_bad_one_gets_a_clear_message(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    job = _upload(
        bob,
        handbook,
        _file("leave.md", b"# Leave\n\n## Holidays\n\n25 days of paid holiday."),
        _file("manual.pdf", text_pdf("Press the red button to stop the machine.")),
        _file("scan.pdf", scanned_pdf()),
        _file("latin.txt", "Caf\u00e9".encode("latin-1")),
        _file("virus.exe", b"MZ..."),
    )
    queued = _job_page(bob, job)
    assert "Queued: 1 of 5 files done, 0 chunks stored." in queued
    assert '<meta http-equiv="refresh" content="2">' in queued
    assert not Document.objects.exists()  # nothing ingested inside the request
    shown = _ingested(bob, job)
    assert shown["leave.md"] == "added, 1 chunks. "
    assert shown["manual.pdf"] == "added, 1 chunks. "
    assert "scan.pdf: the PDF has no text layer (scanned?)" in shown["scan.pdf"]
    assert "latin.txt: not UTF-8 text" in shown["latin.txt"]
    assert "virus.exe: unsupported file type (.exe)" in shown["virus.exe"]
    assert set(Document.objects.values_list("source", flat=True)) == {"leave.md", "manual.pdf"}
    assert not IngestJobFile.objects.exists()


@override_settings(ARENA_RAG_MAX_DOCUMENT_BYTES=1000)
def test_a_file_over_the_size_limit_is_refused_and_not_kept(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    job = _upload(bob, handbook, _file("big.txt", b"word " * 10_000), _file("ok.txt", b"Small.\n"))
    assert list(IngestJobFile.objects.values_list("source", flat=True)) == ["ok.txt"]
    shown = _ingested(bob, job)
    assert "big.txt: too large" in shown["big.txt"]
    assert shown["ok.txt"] == "added, 1 chunks. "
    assert list(Document.objects.values_list("source", flat=True)) == ["ok.txt"]


def test_an_upload_with_nothing_readable_says_why_and_queues_nothing(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    url = f"/admin/inference/knowledgebase/{handbook.pk}/upload/"
    response = bob.post(url, {"files": [_file("virus.exe", b"MZ...")]})
    assert any("virus.exe: unsupported file type (.exe)" in m for m in _messages(response))
    assert not IngestJob.objects.exists()
    response = bob.post(url, {})
    assert "Choose at least one file." in _messages(response)


def test_an_upload_without_the_csrf_token_is_refused(bob: Bob, handbook: KnowledgeBase) -> None:
    url = f"/admin/inference/knowledgebase/{handbook.pk}/upload/"
    response = bob.client.post(url, {"files": [_file("a.md", b"# A\n\nText.")]})
    assert response.status_code == 403
    assert not IngestJob.objects.exists()


def test_a_visitor_who_is_not_staff_cannot_upload(db: None, handbook: KnowledgeBase) -> None:
    client = Client()
    url = f"/admin/inference/knowledgebase/{handbook.pk}/upload/"
    response = client.post(url, {"files": [_file("a.md", b"# A\n\nText.")]})
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert not IngestJob.objects.exists()
    job = ingest_job_create(knowledge_base=handbook, uploaded_by=None, files=[("a.md", b"A")])
    response = client.get(f"/admin/inference/knowledgebase/{handbook.pk}/ingest/{job.pk}/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_staff_who_may_not_change_the_knowledge_base_cannot_upload_or_follow_a_job(
    db: None, handbook: KnowledgeBase
) -> None:
    carol = User.objects.create_user("carol", password="carol-pw", is_staff=True)
    carol.user_permissions.set(Permission.objects.filter(codename="view_knowledgebase"))
    client = Client()
    assert client.login(username="carol", password="carol-pw")
    job = ingest_job_create(knowledge_base=handbook, uploaded_by=None, files=[("a.md", b"A")])
    base = f"/admin/inference/knowledgebase/{handbook.pk}"
    assert client.get(f"{base}/upload/").status_code == 403
    assert client.get(f"{base}/ingest/{job.pk}/").status_code == 403


def test_a_job_is_shown_only_under_its_own_knowledge_base(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    other = KnowledgeBase.objects.create(name="other")
    job = ingest_job_create(knowledge_base=handbook, uploaded_by=None, files=[("a.md", b"A")])
    response = bob.client.get(f"/admin/inference/knowledgebase/{other.pk}/ingest/{job.pk}/")
    assert response.status_code == 404


def test_the_job_page_escapes_file_names(bob: Bob, handbook: KnowledgeBase) -> None:
    job = ingest_job_create(
        knowledge_base=handbook,
        uploaded_by=None,
        files=[("<script>x</script>.md", b"# X\n\nText.")],
        refused=[IngestOutcome("<b>bold</b>.exe", "error", "<b>bold</b>.exe: unsupported")],
    )
    ingest_job_run(job_id=job.pk)
    url = f"/admin/inference/knowledgebase/{handbook.pk}/ingest/{job.pk}/"
    raw = bob.client.get(url).content.decode()
    assert "&lt;script&gt;x&lt;/script&gt;.md" in raw
    assert "&lt;b&gt;bold&lt;/b&gt;.exe: unsupported" in raw
    assert "<script>x" not in raw
    assert "<b>bold" not in raw


def test_the_upload_page_lists_recent_jobs_and_fails_stale_ones(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    done = _upload(bob, handbook, _file("a.md", b"# A\n\nAlpha text."))
    ingest_job_run(job_id=done.pk)
    stale = ingest_job_create(knowledge_base=handbook, uploaded_by=None, files=[("b.md", b"B")])
    IngestJob.objects.filter(pk=stale.pk).update(
        status="running", progressed_at=timezone.now() - timedelta(hours=1)
    )
    page = bob.get(f"/admin/inference/knowledgebase/{handbook.pk}/upload/")
    assert f"/admin/inference/knowledgebase/{handbook.pk}/ingest/{done.pk}/" in page
    assert "<td>bob</td>" in page
    assert page.count("<td>Done</td>") == 1
    assert page.count("<td>Failed</td>") == 1  # the stale one, failed as the page loaded
    stale.refresh_from_db()
    assert (stale.status, stale.error) == ("failed", STALE_MESSAGE)
    assert not IngestJobFile.objects.exists()
    job_page = _job_page(bob, stale)
    assert STALE_MESSAGE in job_page
    assert "http-equiv" not in job_page


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generation")
def test_an_upload_is_ingested_in_the_background_while_its_page_follows(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    # Committed, so dispatched for real: a thread of this process in the
    # embedded default, the Celery worker's local queue on the services.
    job = _upload(
        bob,
        handbook,
        _file("leave.md", b"# Leave\n\n## Holidays\n\n25 days of paid holiday."),
        _file("latin.txt", "Caf\u00e9".encode("latin-1")),
    )
    deadline = time.monotonic() + 120
    while job.active and time.monotonic() < deadline:
        time.sleep(0.2)
        job.refresh_from_db()
    assert job.status == "done", job.error
    assert [(o["source"], o["status"]) for o in job.outcomes] == [
        ("leave.md", "added"),
        ("latin.txt", "error"),
    ]
    page = _job_page(bob, job)
    assert "Done: 2 of 2 files done, 1 chunk stored." in page
    assert "http-equiv" not in page
    assert Chunk.objects.filter(document__source="leave.md").count() == 1
    assert not IngestJobFile.objects.exists()


@pytest.mark.parametrize(
    ("uploaded", "source"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\eve\\notes.md", "notes.md"),
        (".hidden.md", "hidden.md"),
        ("a\x00b.txt", "ab.txt"),
    ],
)
def test_upload_names_are_reduced_to_a_plain_file_name(uploaded: str, source: str) -> None:
    assert safe_name(uploaded) == source


def test_deleting_a_document_in_the_admin_bumps_the_revision(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    document_ingest(knowledge_base=handbook, source="a.md", data=b"# A\n\nAlpha text.")
    document = Document.objects.get()
    response = bob.post(f"/admin/inference/document/{document.pk}/delete/", {"post": "yes"})
    assert response.status_code == 200
    assert not Chunk.objects.exists()
    handbook.refresh_from_db()
    assert handbook.revision == 2


def test_the_document_list_is_read_only(bob: Bob, handbook: KnowledgeBase) -> None:
    document_ingest(knowledge_base=handbook, source="a.md", data=b"# A\n\nAlpha text.")
    page = bob.get("/admin/inference/document/")
    assert "a.md" in page
    assert bob.client.get("/admin/inference/document/add/").status_code == 403


def test_trying_a_question_shows_what_it_retrieves(bob: Bob, handbook: KnowledgeBase) -> None:
    document_ingest(knowledge_base=handbook, source="tea.md", data=b"# Tea\n\nGreen tea at 80C.")
    document_ingest(knowledge_base=handbook, source="car.md", data=b"# Cars\n\nCheck the oil.")
    url = f"/admin/inference/knowledgebase/{handbook.pk}/try/"
    response = bob.post(url, {"question": "What temperature for green tea?", "k": "1"})
    page = html.unescape(response.content.decode())
    assert "1 passage in" in page
    assert "Green tea at 80C." in page
    assert "Check the oil." not in page


@override_settings(FILE_UPLOAD_TEMP_DIR="/nonexistent/no-temp-files-here")
def test_a_large_upload_is_read_in_memory_not_written_to_disk(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    # Over Django's 2.5 MB in-memory limit: its default handler would write a
    # temporary file (and fail, with this temp dir); ours never does.
    large = b"\xff" + b"x" * 3_000_000
    job = _upload(bob, handbook, _file("large.txt", large))
    assert "large.txt: not UTF-8 text" in _ingested(bob, job)["large.txt"]
