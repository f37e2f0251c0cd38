"""`manage.py ingest` and `manage.py rag_query`, as an admin runs them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from inference.models import Document, KnowledgeBase

pytestmark = pytest.mark.django_db


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "guide.md").write_text(
        "# Arena guide\n\n## Voting\n\nPick the better of the two answers, or call it a tie."
    )
    (tmp_path / "faq.html").write_text(
        "<title>FAQ</title><h2>Accounts</h2><p>No account is needed to vote.</p>"
    )
    (tmp_path / "broken.txt").write_bytes(b"\xff\xfe\x00broken")
    return tmp_path


def _run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_ingest_creates_the_knowledge_base_and_reports_each_file(
    embedder: None, folder: Path
) -> None:
    out, err = _run("ingest", "docs", str(folder), "--chunk-size", "300", "--overlap", "30")
    assert "created knowledge base docs" in out
    assert "guide.md: added" in out
    assert "2 added, 0 replaced, 0 unchanged, 0 skipped, 1 failed" in out
    assert "broken.txt" in err
    kb = KnowledgeBase.objects.get(name="docs")
    assert (kb.chunk_size, kb.chunk_overlap) == (300, 30)
    assert set(Document.objects.values_list("source", flat=True)) == {"guide.md", "faq.html"}


def test_a_second_ingest_reports_everything_unchanged(embedder: None, folder: Path) -> None:
    (folder / "broken.txt").unlink()
    _run("ingest", "docs", str(folder))
    out, _ = _run("ingest", "docs", str(folder))
    assert "0 added, 0 replaced, 2 unchanged, 0 skipped, 0 failed" in out


def test_ingest_fails_when_every_file_fails(embedder: None, tmp_path: Path) -> None:
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4 not really")
    with pytest.raises(CommandError, match="every file failed"):
        _run("ingest", "docs", str(tmp_path))


def test_ingest_fails_when_nothing_is_found(embedder: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no supported files found"):
        _run("ingest", "docs", str(tmp_path))


def test_ingest_refuses_an_overlap_above_the_chunk_size(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="overlap"):
        _run("ingest", "docs", str(tmp_path), "--chunk-size", "200", "--overlap", "500")


def test_rag_query_prints_the_passages_as_json(embedder: None, folder: Path) -> None:
    _run("ingest", "docs", str(folder))
    out, _ = _run("rag_query", "docs", "Do I need an account to vote?", "--k", "2", "--json")
    payload = json.loads(out)
    assert payload["knowledge_base"] == "docs"
    passages = payload["passages"]
    assert len(passages) == 2
    assert passages[0]["source"] == "faq.html"
    assert passages[0]["document"] == "FAQ"
    assert passages[0]["section"] == "Accounts"
    assert passages[0]["score"] >= passages[1]["score"]


def test_rag_query_prints_readable_passages(embedder: None, folder: Path) -> None:
    _run("ingest", "docs", str(folder))
    out, _ = _run("rag_query", "docs", "Can a vote be a tie between two answers?", "--k", "1")
    assert "[1] Arena guide \u203a Voting  (guide.md; score" in out
    assert "    Pick the better of the two answers" in out


def test_rag_query_on_an_unknown_knowledge_base_is_an_error(db: None) -> None:
    with pytest.raises(CommandError, match="no knowledge base 'nope'"):
        _run("rag_query", "nope", "anything")
