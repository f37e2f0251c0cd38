"""Services that write knowledge bases: documents in, embedded chunks out.

A document's chunks are embedded first, outside any transaction (seconds of
CPU), then swapped in one short transaction that also bumps the knowledge
base's `revision`, which is what retrieval caches are keyed on. A file that
fails is reported and changes nothing already saved.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inference.models import Chunk, Document, KnowledgeBase
from inference.rag import embeddings
from inference.rag.chunking import Passage, chunk_blocks
from inference.rag.extract import KINDS, DocumentError, extract, kind_of

Status = Literal["added", "replaced", "unchanged", "error", "skipped"]
_CHUNKING = ("chunk_size", "chunk_overlap")
_OPTIONS = {"description", "chunk_size", "chunk_overlap", "top_k", "score_threshold"}


@dataclass(frozen=True)
class IngestOutcome:
    source: str
    status: Status
    message: str = ""
    chunks: int = 0

    @property
    def failed(self) -> bool:
        return self.status == "error"

    def __str__(self) -> str:
        if self.status in {"error", "skipped"}:
            return f"{self.source}: {self.status}: {self.message}"
        return f"{self.source}: {self.status} ({self.chunks} chunks)"


class IngestProgress:
    """What long ingests report; the default reports nothing."""

    def file_started(self, index: int, total: int, source: str) -> None:
        pass

    def embedded(self, done: int, total: int) -> None:
        pass

    def file_done(self, outcome: IngestOutcome) -> None:
        pass


# --- knowledge bases -----------------------------------------------------------------


def knowledge_base_get_or_create(*, name: str, **options: Any) -> tuple[KnowledgeBase, bool]:
    """The knowledge base called `name` (created when missing), with `options`
    (description, chunk_size, chunk_overlap, top_k, score_threshold) applied.
    Changing the chunking of an existing one marks its documents for
    re-chunking on their next ingest. Raises ValidationError on bad values."""
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"unknown knowledge base options: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        kb = KnowledgeBase.objects.select_for_update().filter(name=name).first()
        created = kb is None
        if kb is None:
            kb = KnowledgeBase(name=name, embedding_model=embeddings.model_name())
        rechunk = not created and any(
            getattr(kb, k) != options[k] for k in _CHUNKING if k in options
        )
        for key, value in options.items():
            setattr(kb, key, value)
        kb.full_clean()
        kb.save()
        if rechunk:
            documents_mark_stale(knowledge_base=kb)
    return kb, created


# --- documents -----------------------------------------------------------------------


def document_ingest(
    *,
    knowledge_base: KnowledgeBase,
    source: str,
    data: bytes,
    progress: IngestProgress | None = None,
) -> IngestOutcome:
    """Add or replace the document `source` of `knowledge_base` from `data`
    (the file's bytes; `source`'s extension says how to read them)."""
    progress = progress or IngestProgress()
    digest = hashlib.sha256(data).hexdigest()
    current = Document.objects.filter(knowledge_base=knowledge_base, source=source).first()
    if current is not None and current.content_hash == digest:
        return IngestOutcome(source, "unchanged", chunks=current.chunk_count)
    try:
        _check_model(knowledge_base)
        doc = extract(source, data, max_bytes=settings.ARENA_RAG_MAX_DOCUMENT_BYTES)
        passages = chunk_blocks(
            title=doc.title,
            blocks=doc.blocks,
            chunk_size=knowledge_base.chunk_size,
            overlap=knowledge_base.chunk_overlap,
        )
    except DocumentError as exc:
        return IngestOutcome(source, "error", str(exc))
    vectors = embeddings.embed_texts([p.embed_text for p in passages], progress=progress.embedded)
    fields = {"title": doc.title[:500], "kind": doc.kind, "content_hash": digest, "size": len(data)}
    _chunks_replace(knowledge_base, source, fields, passages, vectors)
    return IngestOutcome(source, "replaced" if current else "added", chunks=len(passages))


def _check_model(kb: KnowledgeBase) -> None:
    """Chunks of one knowledge base must share one embedding space."""
    name = embeddings.model_name()
    if kb.embedding_model != name and kb.chunks.exists():
        raise DocumentError(
            f"knowledge base {kb.name} was embedded with {kb.embedding_model}, but the "
            f"configured model is {name}; use another knowledge base or delete its documents"
        )


@transaction.atomic
def _chunks_replace(
    kb: KnowledgeBase,
    source: str,
    fields: dict[str, Any],
    passages: list[Passage],
    vectors: Any,
) -> None:
    # The row lock orders concurrent ingests into one knowledge base.
    KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
    fields = {**fields, "chunk_count": len(passages), "ingested_at": timezone.now()}
    document, _ = Document.objects.update_or_create(
        knowledge_base=kb, source=source, defaults=fields
    )
    Chunk.objects.filter(document=document).delete()
    Chunk.objects.bulk_create(
        (
            Chunk(
                knowledge_base=kb,
                document=document,
                index=p.index,
                section=p.section[:500],
                text=p.text,
                embedding=embeddings.to_bytes(vector),
            )
            for p, vector in zip(passages, vectors, strict=True)
        ),
        batch_size=500,
    )
    _revision_bump(kb, dimensions=int(vectors.shape[1]))


def _revision_bump(kb: KnowledgeBase, *, dimensions: int | None = None) -> None:
    changes: dict[str, Any] = {"revision": F("revision") + 1, "updated_at": timezone.now()}
    if dimensions is not None:
        changes.update(dimensions=dimensions, embedding_model=embeddings.model_name())
    KnowledgeBase.objects.filter(pk=kb.pk).update(**changes)
    kb.refresh_from_db(fields=["revision", "dimensions", "embedding_model", "updated_at"])


@transaction.atomic
def document_delete(*, document: Document) -> None:
    """Delete a document and its chunks; retrieval caches see it at once."""
    kb = KnowledgeBase.objects.select_for_update().get(pk=document.knowledge_base_id)
    document.delete()
    _revision_bump(kb)


# --- files and folders -----------------------------------------------------------------


def paths_ingest(
    *,
    knowledge_base: KnowledgeBase,
    paths: Iterable[str | Path],
    progress: IngestProgress | None = None,
) -> list[IngestOutcome]:
    """Ingest files and folders (recursively; supported extensions only).
    A folder's documents are named by their path inside it. Nothing outside
    the folders given is read: a link that leads out is skipped."""
    progress = progress or IngestProgress()
    found = [item for given in paths for item in _walk(Path(given))]
    outcomes = []
    for i, item in enumerate(found, 1):
        if isinstance(item, IngestOutcome):
            progress.file_started(i, len(found), item.source)
            outcome = item
        else:
            source, file = item
            progress.file_started(i, len(found), source)
            outcome = _file_ingest(knowledge_base, source, file, progress)
        progress.file_done(outcome)
        outcomes.append(outcome)
    return outcomes


def _file_ingest(
    kb: KnowledgeBase, source: str, file: Path, progress: IngestProgress
) -> IngestOutcome:
    limit = settings.ARENA_RAG_MAX_DOCUMENT_BYTES
    try:
        size = file.stat().st_size
        if size > limit:
            raise DocumentError(
                f"{source}: too large ({size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB)"
            )
        data = file.read_bytes()
    except DocumentError as exc:
        return IngestOutcome(source, "error", str(exc))
    except OSError as exc:
        return IngestOutcome(source, "error", f"{source}: cannot be read ({exc.strerror})")
    return document_ingest(knowledge_base=kb, source=source, data=data, progress=progress)


_Found = tuple[str, Path] | IngestOutcome  # a file to read, or why one is not read


def _walk(given: Path) -> Iterator[_Found]:
    if not given.exists():
        yield IngestOutcome(str(given), "error", f"{given}: no such file or folder")
        return
    root = given.resolve()
    if root.is_file():
        try:
            kind_of(root.name)
        except DocumentError as exc:
            yield IngestOutcome(given.name, "error", str(exc))
            return
        yield given.name, root
        return
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in list(dirs):
            if (here / name).is_symlink():
                # Never followed (a loop, or a second copy of what is inside);
                # one that leads out is reported, its files may not be meant for this.
                dirs.remove(name)
                yield from _escaping(root, here / name)
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or path.suffix.lower() not in KINDS:
                continue
            if path.is_symlink():
                escaping = list(_escaping(root, path))
                if escaping:
                    yield from escaping
                    continue
            yield path.relative_to(root).as_posix(), path


def _escaping(root: Path, link: Path) -> Iterator[IngestOutcome]:
    target = link.resolve()
    if not target.is_relative_to(root):
        source = link.relative_to(root).as_posix()
        yield IngestOutcome(source, "skipped", f"{source}: a link to {target}, outside {root}")


def documents_mark_stale(*, knowledge_base: KnowledgeBase) -> int:
    """Make the next ingest of every document re-chunk it (the chunking
    changed); returns how many documents that is."""
    return Document.objects.filter(knowledge_base=knowledge_base).update(content_hash="")
