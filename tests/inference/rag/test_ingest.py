"""Ingesting files and folders: idempotent re-runs, replaced documents,
bad files reported while the rest go in, nothing read from outside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from inference.models import Chunk, Document, KnowledgeBase
from inference.rag.ingest import (
    document_delete,
    document_ingest,
    knowledge_base_get_or_create,
    paths_ingest,
)

pytestmark = pytest.mark.django_db

POLICY = b"# Leave policy\n\n## Holidays\n\nEveryone gets 25 days of paid holiday a year.\n"


def _rows(kb: KnowledgeBase) -> list[tuple[str, int]]:
    return list(Chunk.objects.filter(knowledge_base=kb).values_list("text", "id"))


def test_a_new_document_is_added_with_its_chunks(handbook: KnowledgeBase) -> None:
    outcome = document_ingest(knowledge_base=handbook, source="leave.md", data=POLICY)
    assert (outcome.status, outcome.chunks) == ("added", 1)
    document = Document.objects.get(knowledge_base=handbook, source="leave.md")
    assert (document.title, document.kind, document.chunk_count) == ("Leave policy", "markdown", 1)
    chunk = Chunk.objects.get(document=document)
    assert chunk.section == "Holidays"
    assert len(bytes(chunk.embedding)) == 384 * 4
    handbook.refresh_from_db()
    assert handbook.revision == 1


def test_ingesting_the_same_file_again_changes_nothing(handbook: KnowledgeBase) -> None:
    document_ingest(knowledge_base=handbook, source="leave.md", data=POLICY)
    before = _rows(handbook)
    outcome = document_ingest(knowledge_base=handbook, source="leave.md", data=POLICY)
    assert outcome.status == "unchanged"
    assert _rows(handbook) == before
    handbook.refresh_from_db()
    assert handbook.revision == 1


def test_a_changed_file_replaces_its_chunks_and_bumps_the_revision(
    handbook: KnowledgeBase,
) -> None:
    document_ingest(knowledge_base=handbook, source="leave.md", data=POLICY)
    old_ids = {pk for _, pk in _rows(handbook)}
    changed = POLICY.replace(b"25 days", b"30 days")
    outcome = document_ingest(knowledge_base=handbook, source="leave.md", data=changed)
    assert outcome.status == "replaced"
    rows = _rows(handbook)
    assert not old_ids & {pk for _, pk in rows}
    assert ["30 days" in text for text, _ in rows] == [True]
    handbook.refresh_from_db()
    assert handbook.revision == 2


def test_a_bad_new_version_keeps_the_saved_one(handbook: KnowledgeBase) -> None:
    document_ingest(knowledge_base=handbook, source="leave.md", data=POLICY)
    outcome = document_ingest(knowledge_base=handbook, source="leave.md", data=b"  \n")
    assert outcome.status == "error"
    assert "empty document" in outcome.message
    assert "25 days" in _rows(handbook)[0][0]


def test_deleting_a_document_removes_its_chunks_and_bumps_the_revision(
    handbook: KnowledgeBase,
) -> None:
    document_ingest(knowledge_base=handbook, source="leave.md", data=POLICY)
    document_delete(document=Document.objects.get(source="leave.md"))
    assert _rows(handbook) == []
    handbook.refresh_from_db()
    assert handbook.revision == 2


def test_a_folder_is_walked_and_a_bad_file_is_reported_while_the_rest_go_in(
    handbook: KnowledgeBase, tmp_path: Path
) -> None:
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "leave.md").write_bytes(POLICY)
    (tmp_path / "it.txt").write_text("Laptops\n\nLaptops are replaced every three years.")
    (tmp_path / "latin.txt").write_bytes("Caf\u00e9".encode("latin-1"))
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff")  # not a supported kind: ignored
    (tmp_path / ".hidden.md").write_text("# Secret")
    outcomes = {o.source: o for o in paths_ingest(knowledge_base=handbook, paths=[tmp_path])}
    assert set(outcomes) == {"hr/leave.md", "it.txt", "latin.txt"}
    assert outcomes["hr/leave.md"].status == "added"
    assert outcomes["it.txt"].status == "added"
    assert outcomes["latin.txt"].status == "error"
    assert "latin.txt: not UTF-8 text" in outcomes["latin.txt"].message
    assert set(Document.objects.values_list("source", flat=True)) == {"hr/leave.md", "it.txt"}


def test_links_that_lead_outside_the_folder_are_not_followed(
    handbook: KnowledgeBase, tmp_path: Path
) -> None:
    inside, outside = tmp_path / "kb", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    (outside / "salaries.md").write_text("# Salaries\n\nAlice earns a lot.")
    (inside / "ok.md").write_text("# Fine\n\nThis one is fine.")
    os.symlink(outside / "salaries.md", inside / "salaries.md")
    os.symlink(outside, inside / "private")
    outcomes = {o.source: o for o in paths_ingest(knowledge_base=handbook, paths=[inside])}
    assert outcomes["ok.md"].status == "added"
    assert outcomes["salaries.md"].status == "skipped"
    assert outcomes["private"].status == "skipped"
    assert "outside" in outcomes["private"].message
    assert list(Document.objects.values_list("source", flat=True)) == ["ok.md"]
    assert not Chunk.objects.filter(text__contains="Alice").exists()


def test_a_missing_path_is_an_error_not_a_crash(handbook: KnowledgeBase, tmp_path: Path) -> None:
    [outcome] = paths_ingest(knowledge_base=handbook, paths=[tmp_path / "nope"])
    assert outcome.status == "error"
    assert "no such file or folder" in outcome.message


def test_changing_the_chunk_size_re_chunks_documents_on_the_next_ingest(
    handbook: KnowledgeBase,
) -> None:
    document_ingest(knowledge_base=handbook, source="leave.md", data=POLICY)
    kb, created = knowledge_base_get_or_create(name="handbook", chunk_size=200, chunk_overlap=20)
    assert not created
    outcome = document_ingest(knowledge_base=kb, source="leave.md", data=POLICY)
    assert outcome.status == "replaced"


def test_an_overlap_as_large_as_the_chunk_size_is_refused(db: None) -> None:
    with pytest.raises(ValidationError, match="overlap"):
        knowledge_base_get_or_create(name="bad", chunk_size=200, chunk_overlap=200)
    assert not KnowledgeBase.objects.filter(name="bad").exists()
