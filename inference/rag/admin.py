"""Admin pages for knowledge bases: documents uploaded (read in memory, never
written to disk) and ingested in the background with their progress shown,
documents listed and deleted, a question tried. Thin: the work is in
inference.rag.jobs, inference.rag.ingest and inference.rag.retrieval."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path, PurePath
from typing import Any, NoReturn

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template import engines
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from inference.models import Document, IngestJob, KnowledgeBase
from inference.rag.extract import SUPPORTED, DocumentError, kind_of
from inference.rag.ingest import IngestOutcome, document_delete, documents_mark_stale
from inference.rag.jobs import ingest_job_create, ingest_jobs_reap, ingest_jobs_recent
from inference.rag.retrieval import passages_retrieve

_TEMPLATES = Path(__file__).resolve().parent


def _render(request: HttpRequest, name: str, context: dict[str, Any]) -> HttpResponse:
    # These pages' templates live beside this module (inference.rag is no app,
    # and "*.html" beside a package ships with it); from_string still resolves
    # {% extends "admin/base_site.html" %}.
    template = engines["django"].from_string((_TEMPLATES / name).read_text())
    return HttpResponse(template.render(context, request))


# --- uploads, in memory ----------------------------------------------------------------


class _InMemoryUploads(FileUploadHandler):
    """Keeps each uploaded file in memory up to the document size limit, and
    refuses (without reading the rest) files that are too large, of a kind
    that cannot be ingested, or beyond the count limit."""

    def __init__(self, request: HttpRequest, *, max_bytes: int, max_files: int) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.accepted = 0
        self.refused: list[IngestOutcome] = []
        self.buffer = io.BytesIO()

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        name = safe_name(file_name)
        if self.accepted >= self.max_files:
            self._refuse(name, f"{name}: not read, more than {self.max_files} files at once")
        try:
            kind_of(name)
        except DocumentError as exc:
            self._refuse(name, str(exc))
        self.accepted += 1
        self.buffer = io.BytesIO()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if start + len(raw_data) > self.max_bytes:
            name = safe_name(self.file_name or "")
            self._refuse(name, f"{name}: too large (the limit is {self.max_bytes / 1e6:.1f} MB)")
        self.buffer.write(raw_data)

    def _refuse(self, name: str, message: str) -> NoReturn:
        self.refused.append(IngestOutcome(name, "error", message))
        raise SkipFile

    def file_complete(self, file_size: int) -> InMemoryUploadedFile:
        self.buffer.seek(0)
        return InMemoryUploadedFile(
            self.buffer,
            self.field_name,
            self.file_name,
            self.content_type,
            file_size,
            self.charset,
            self.content_type_extra,
        )


def safe_name(name: str) -> str:
    """An upload's name as a document source: the last path part only, no
    control characters, at most 200 characters (the extension kept)."""
    base = PurePath(name.replace("\\", "/")).name
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip().lstrip(".") or "upload"
    stem, suffix = PurePath(base).stem, PurePath(base).suffix
    return stem[: 200 - len(suffix)] + suffix


# --- knowledge bases -------------------------------------------------------------------


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(admin.ModelAdmin):
    list_display = ("name", "documents", "chunks", "revision", "updated_at", "links")
    search_fields = ("name", "description")
    readonly_fields = ("embedding_model", "dimensions", "revision", "updated_at", "links")
    fieldsets = (
        (None, {"fields": ("name", "description", "links")}),
        ("Chunking", {"fields": ("chunk_size", "chunk_overlap")}),
        ("Retrieval", {"fields": ("top_k", "score_threshold")}),
        ("Index", {"fields": ("embedding_model", "dimensions", "revision", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[KnowledgeBase]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                document_total=Count("documents", distinct=True),
                chunk_total=Count("chunks", distinct=True),
            )
        )

    @admin.display(description="documents", ordering="document_total")
    def documents(self, obj: KnowledgeBase) -> int:
        return int(getattr(obj, "document_total", 0))

    @admin.display(description="chunks", ordering="chunk_total")
    def chunks(self, obj: KnowledgeBase) -> int:
        return int(getattr(obj, "chunk_total", 0))

    @admin.display(description="")
    def links(self, obj: KnowledgeBase) -> str:
        if obj.pk is None:
            return "Save first, then upload documents."
        return format_html(
            '<a href="{}">Upload documents</a> · <a href="{}">Try a question</a> · '
            '<a href="{}">Documents</a>',
            reverse("admin:inference_knowledgebase_upload", args=[obj.pk]),
            reverse("admin:inference_knowledgebase_try", args=[obj.pk]),
            reverse("admin:inference_document_changelist") + f"?knowledge_base__id__exact={obj.pk}",
        )

    def save_model(self, request: HttpRequest, obj: KnowledgeBase, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and {"chunk_size", "chunk_overlap"} & set(form.changed_data):
            stale = documents_mark_stale(knowledge_base=obj)
            if stale:
                self.message_user(
                    request,
                    f"The chunking changed: ingest the {stale} documents again to apply it "
                    "(until then they keep their old chunks).",
                    messages.WARNING,
                )

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:pk>/upload/",
                self.admin_site.admin_view(self.upload_view),
                name="inference_knowledgebase_upload",
            ),
            path(
                "<int:pk>/ingest/<int:job_id>/",
                self.admin_site.admin_view(self.ingest_job_view),
                name="inference_knowledgebase_ingest_job",
            ),
            path(
                "<int:pk>/try/",
                self.admin_site.admin_view(self.try_view),
                name="inference_knowledgebase_try",
            ),
        ]
        return own + super().get_urls()

    @csrf_exempt
    def upload_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        # The upload handlers must be in place before anything reads the body,
        # CSRF's check included: it is exempted here and done just below.
        request.upload_handlers = [
            _InMemoryUploads(
                request,
                max_bytes=settings.ARENA_RAG_MAX_DOCUMENT_BYTES,
                max_files=settings.ARENA_RAG_MAX_UPLOAD_FILES,
            )
        ]
        return self._upload(request, pk)

    @method_decorator(csrf_protect)
    def _upload(self, request: HttpRequest, pk: int) -> HttpResponse:
        kb = get_object_or_404(KnowledgeBase, pk=pk)
        if not self.has_change_permission(request, kb):
            raise PermissionDenied
        if request.method == "POST":
            return self._upload_queue(request, kb)
        ingest_jobs_reap()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Upload documents to {kb.name}",
            "kb": kb,
            "accept": ",".join(SUPPORTED),
            "supported": ", ".join(SUPPORTED),
            "max_files": settings.ARENA_RAG_MAX_UPLOAD_FILES,
            "max_mb": f"{settings.ARENA_RAG_MAX_DOCUMENT_BYTES / 1e6:.0f}",
            "jobs": ingest_jobs_recent(knowledge_base=kb),
        }
        return _render(request, "admin_upload.html", context)

    def _upload_queue(self, request: HttpRequest, kb: KnowledgeBase) -> HttpResponse:
        """The files read are queued for ingestion, the page of their job shown;
        with none read, the upload page again with the reasons."""
        handler = request.upload_handlers[0]
        assert isinstance(handler, _InMemoryUploads)
        files = [
            (safe_name(upload.name or "upload"), upload.read())
            for upload in request.FILES.getlist("files")
        ]
        if not files:
            for refusal in handler.refused:
                self.message_user(request, refusal.message, messages.ERROR)
            if not handler.refused:
                self.message_user(request, "Choose at least one file.", messages.WARNING)
            return HttpResponseRedirect(request.path)
        job = ingest_job_create(
            knowledge_base=kb,
            uploaded_by=request.user if request.user.is_authenticated else None,
            files=files,
            refused=handler.refused,
        )
        return HttpResponseRedirect(
            reverse("admin:inference_knowledgebase_ingest_job", args=[kb.pk, job.pk])
        )

    def ingest_job_view(self, request: HttpRequest, pk: int, job_id: int) -> HttpResponse:
        """An upload's ingestion: its progress and each file's outcome; the page
        reloads itself until the job is over."""
        kb = get_object_or_404(KnowledgeBase, pk=pk)
        if not self.has_change_permission(request, kb):
            raise PermissionDenied
        ingest_jobs_reap()
        job = get_object_or_404(
            IngestJob.objects.select_related("uploaded_by"), pk=job_id, knowledge_base=kb
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Upload {job.pk} into {kb.name}",
            "kb": kb,
            "job": job,
            "waiting": job.files_total - job.files_done,
        }
        return _render(request, "admin_ingest_job.html", context)

    def try_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """What a question retrieves, as a RAG contender would see it."""
        kb = get_object_or_404(KnowledgeBase, pk=pk)
        if not self.has_view_permission(request, kb):
            raise PermissionDenied
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Try a question on {kb.name}",
            "kb": kb,
            "question": "",
            "k": kb.top_k,
            "threshold": "" if kb.score_threshold is None else kb.score_threshold,
            "passages": None,
        }
        if request.method == "POST":
            context.update(_tried(kb, request.POST))
        return _render(request, "admin_try.html", context)


def _tried(kb: KnowledgeBase, form: Any) -> dict[str, Any]:
    question = (form.get("question") or "").strip()[:2000]
    try:
        k = min(max(int(form.get("k") or kb.top_k), 1), 50)
        raw = (form.get("threshold") or "").strip()
        threshold = float(raw) if raw else None
    except ValueError:
        return {"question": question, "error": "Passages and similarity must be numbers."}
    if not question:
        return {"error": "Type a question."}
    started = time.perf_counter()
    passages = passages_retrieve(knowledge_base=kb, query=question, k=k, threshold=threshold)
    return {
        "question": question,
        "k": k,
        "threshold": "" if threshold is None else threshold,
        "passages": passages,
        "elapsed_ms": (time.perf_counter() - started) * 1000,
    }


# --- documents -------------------------------------------------------------------------


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    """Read-only: documents come in through uploads or `manage.py ingest`."""

    list_display = (
        "source",
        "knowledge_base",
        "title",
        "kind",
        "chunk_count",
        "size",
        "ingested_at",
    )
    list_filter = ("knowledge_base", "kind")
    search_fields = ("source", "title")
    list_select_related = ("knowledge_base",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        document_delete(document=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        for document in queryset:
            document_delete(document=document)
