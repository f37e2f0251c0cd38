"""Bob, who is staff, managing knowledge bases in the admin (the test client
with CSRF checks on): uploads, refusals with reasons, documents, questions."""

from __future__ import annotations

import html
import io
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.test.utils import override_settings

from inference.models import Chunk, Document, KnowledgeBase
from inference.rag.admin import safe_name
from inference.rag.ingest import document_ingest
from tests.inference.rag.pdfs import scanned_pdf, text_pdf

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


def test_the_list_shows_documents_chunks_and_revision(bob: Bob, handbook: KnowledgeBase) -> None:
    document_ingest(knowledge_base=handbook, source="a.md", data=b"# A\n\nAlpha text.")
    page = bob.get("/admin/inference/knowledgebase/")
    assert "handbook" in page
    assert "Upload documents" in page
    assert "Try a question" in page


def test_uploaded_files_are_ingested_and_a_bad_one_gets_a_clear_message(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    url = f"/admin/inference/knowledgebase/{handbook.pk}/upload/"
    response = bob.post(
        url,
        {
            "files": [
                _file("leave.md", b"# Leave\n\n## Holidays\n\n25 days of paid holiday."),
                _file("manual.pdf", text_pdf("Press the red button to stop the machine.")),
                _file("scan.pdf", scanned_pdf()),
                _file("latin.txt", "Caf\u00e9".encode("latin-1")),
                _file("virus.exe", b"MZ..."),
            ]
        },
    )
    assert response.status_code == 200
    shown = _messages(response)
    assert "leave.md: added, 1 chunks." in shown
    assert "manual.pdf: added, 1 chunks." in shown
    assert any("scan.pdf: the PDF has no text layer (scanned?)" in m for m in shown)
    assert any("latin.txt: not UTF-8 text" in m for m in shown)
    assert any("virus.exe: unsupported file type (.exe)" in m for m in shown)
    assert set(Document.objects.values_list("source", flat=True)) == {"leave.md", "manual.pdf"}


@override_settings(ARENA_RAG_MAX_DOCUMENT_BYTES=1000)
def test_a_file_over_the_size_limit_is_refused_and_not_kept(
    bob: Bob, handbook: KnowledgeBase
) -> None:
    url = f"/admin/inference/knowledgebase/{handbook.pk}/upload/"
    response = bob.post(
        url, {"files": [_file("big.txt", b"word " * 10_000), _file("ok.txt", b"Small.\n")]}
    )
    shown = _messages(response)
    assert any("big.txt: too large" in m for m in shown)
    assert "ok.txt: added, 1 chunks." in shown
    assert list(Document.objects.values_list("source", flat=True)) == ["ok.txt"]


def test_an_upload_without_the_csrf_token_is_refused(bob: Bob, handbook: KnowledgeBase) -> None:
    url = f"/admin/inference/knowledgebase/{handbook.pk}/upload/"
    response = bob.client.post(url, {"files": [_file("a.md", b"# A\n\nText.")]})
    assert response.status_code == 403
    assert not Document.objects.exists()


def test_a_visitor_who_is_not_staff_cannot_upload(db: None, handbook: KnowledgeBase) -> None:
    client = Client()
    url = f"/admin/inference/knowledgebase/{handbook.pk}/upload/"
    response = client.post(url, {"files": [_file("a.md", b"# A\n\nText.")]})
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert not Document.objects.exists()


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
    url = f"/admin/inference/knowledgebase/{handbook.pk}/upload/"
    response = bob.post(url, {"files": [_file("large.txt", large)]})
    assert any("large.txt: not UTF-8 text" in m for m in _messages(response))
