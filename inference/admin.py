"""Admin pages for endpoints and contenders. Thin: every check, load and
try goes through inference.services or inference.health."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from inference.adapters import AdapterInvalid
from inference.engines.base import EngineError
from inference.health import endpoint_check, health_check_all
from inference.models import Contender, Endpoint, Engine, Health
from inference.rag import admin as _rag_admin  # noqa: F401
from inference.services import (
    TRY_PROMPT,
    ContenderCheck,
    adapter_upload_store,
    contender_check,
    contender_save,
    contender_try,
    contenders_from_models,
    endpoint_models_discover,
)

_BADGE = {Health.OK: "#1a7f37", Health.DOWN: "#cf222e", Health.UNKNOWN: "#6e7781"}


def _health_badge(health: str, message: str) -> str:
    label = Health(health).label
    return format_html(
        '<span title="{}" style="color:{};font-weight:600">{}</span>',
        message,
        _BADGE.get(Health(health), "#6e7781"),
        label,
    )


# --- endpoints -----------------------------------------------------------------------


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "base_url",
        "api_key",
        "health_badge",
        "health_checked_at",
        "latency",
        "enabled",
    )
    list_filter = ("kind", "health", "enabled")
    search_fields = ("name", "base_url")
    # A model server is usually reached inside the deployment over plain HTTP
    # (http://vllm:8000/v1): a URL typed without a scheme means http, said
    # here rather than left to Django's changing default.
    formfield_overrides = {models.URLField: {"assume_scheme": "http"}}
    readonly_fields = (
        "health",
        "health_message",
        "health_checked_at",
        "health_latency_ms",
        "served_models",
    )
    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "api_key_env", "enabled")}),
        ("LoRA", {"fields": ("max_lora_rank",)}),
        (
            "Timeouts",
            {"fields": ("connect_timeout", "first_token_timeout", "idle_timeout", "total_timeout")},
        ),
        ("Health (set by the checks)", {"fields": readonly_fields}),
    )
    actions = ("check_health", "discover_models")

    @admin.display(description="API key")
    def api_key(self, obj: Endpoint) -> str:
        if not obj.api_key_env:
            return "none"
        if obj.api_key_refusal():
            # Not even looked up: the variable is not one a key may come from.
            return f"${obj.api_key_env} (REFUSED: not under {settings.ARENA_KEY_PREFIX})"
        state = "set" if os.environ.get(obj.api_key_env) else "NOT SET"
        return f"${obj.api_key_env} ({state})"

    @admin.display(description="health", ordering="health")
    def health_badge(self, obj: Endpoint) -> str:
        return _health_badge(obj.health, obj.health_message)

    @admin.display(description="latency")
    def latency(self, obj: Endpoint) -> str:
        return f"{obj.health_latency_ms:.0f} ms" if obj.health_latency_ms is not None else "-"

    @admin.action(description="Check health now")
    def check_health(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            report = endpoint_check(endpoint=endpoint)
            level = messages.SUCCESS if report.healthy else messages.ERROR
            detail = "healthy" if report.healthy else f"unhealthy: {report.message}"
            self.message_user(
                request,
                f"Endpoint {endpoint.name} is {detail} ({report.latency_ms:.0f} ms).",
                level,
            )

    @admin.action(description="Discover models (/v1/models)")
    def discover_models(
        self, request: HttpRequest, queryset: QuerySet[Endpoint]
    ) -> HttpResponseRedirect | None:
        if queryset.count() != 1:
            self.message_user(request, "Pick one endpoint to discover.", messages.WARNING)
            return None
        endpoint = queryset.get()
        return HttpResponseRedirect(reverse("admin:inference_endpoint_models", args=[endpoint.pk]))

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:pk>/models/",
                self.admin_site.admin_view(self.models_view),
                name="inference_endpoint_models",
            )
        ]
        return own + super().get_urls()

    def models_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The endpoint's /v1/models, with a button to add the chosen ones as contenders."""
        endpoint = get_object_or_404(Endpoint, pk=pk)
        if not self.has_change_permission(request, endpoint):
            raise PermissionDenied
        try:
            served = endpoint_models_discover(endpoint=endpoint)
            error = ""
        except EngineError as exc:
            served, error = [], exc.message
        if request.method == "POST" and not error:
            chosen = set(request.POST.getlist("model"))
            made = contenders_from_models(
                endpoint=endpoint, models=[m for m in served if m.id in chosen]
            )
            names = ", ".join(c.name for c in made) or "none (already registered)"
            self.message_user(request, f"Added contenders: {names}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:inference_contender_changelist"))
        registered = _registered(endpoint)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Models served by {endpoint.name}",
            "endpoint": endpoint,
            "error": error,
            "rows": [{"model": m, "registered": registered.get(m.id)} for m in served],
        }
        return TemplateResponse(request, "admin/inference/endpoint_models.html", context)


def _registered(endpoint: Endpoint) -> dict[str, str]:
    """Served model id -> the contender already registered for it."""
    out = {}
    for contender in Contender.objects.filter(endpoint=endpoint):
        out[contender.served_name] = contender.name
    return out


# --- contenders ----------------------------------------------------------------------


class ContenderForm(forms.ModelForm):
    adapter_upload = forms.FileField(
        required=False,
        label="Upload an adapter",
        help_text="A .zip of a PEFT LoRA folder (adapter_config.json + adapter_model."
        "safetensors). It is checked, then kept under ARENA_ADAPTER_DIR and used as the "
        "adapter path.",
    )

    class Meta:
        model = Contender
        fields = (
            "name",
            "engine",
            "endpoint",
            "kind",
            "model",
            "adapter_name",
            "adapter_path",
            "system_prompt",
            "params",
            "context_window",
            "knowledge_base",
            "rag_template",
            "rag_k",
            "rag_judge",
            "enabled",
            "weight",
        )

    check: ContenderCheck | None = None
    stored_upload: Path | None = None  # the folder this form unpacked an upload into

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("adapter_upload")
        if upload is not None:
            endpoint = data.get("endpoint")
            try:
                folder = adapter_upload_store(
                    archive=upload,
                    label=data.get("name") or "adapter",
                    engine=data.get("engine") or Engine.LOCAL,
                    max_rank=endpoint.max_lora_rank if endpoint else _local_max_rank(),
                )
            except AdapterInvalid as exc:
                for reason in exc.reasons:
                    self.add_error("adapter_upload", reason)
                return data
            data["adapter_path"] = str(folder)
            data["kind"] = Contender.Kind.LORA
            self.stored_upload = folder
        return data

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]  # builds the instance, runs Contender.clean()
        stored = self.stored_upload
        if not self.errors:
            self.check = contender_check(self.instance)
            for name, reasons in self.check.errors.items():
                target = name if name in self.fields else None
                if name == "adapter_path" and stored:
                    target = "adapter_upload"
                for reason in reasons:
                    self.add_error(target, reason)
        if self.errors and stored:
            # The form is refused after all: keep no orphan adapter folder.
            shutil.rmtree(stored, ignore_errors=True)


def _local_max_rank() -> int:
    return int(settings.ARENA_LORA_MAX_RANK)


@admin.register(Contender)
class ContenderAdmin(admin.ModelAdmin):
    form = ContenderForm
    list_display = (
        "name",
        "engine",
        "endpoint",
        "kind",
        "served",
        "knowledge_base",
        "health_badge",
        "enabled",
        "weight",
        "try_link",
    )
    list_filter = ("engine", "kind", "health", "enabled", "endpoint", "knowledge_base")
    list_editable = ("enabled", "weight")
    search_fields = ("name", "model", "adapter_name")
    readonly_fields = ("health", "health_message", "health_checked_at")
    fieldsets = (
        (None, {"fields": ("name", "engine", "endpoint", "kind", "model")}),
        (
            "LoRA adapter",
            {"fields": ("adapter_name", "adapter_path", "adapter_upload")},
        ),
        ("Behaviour", {"fields": ("system_prompt", "params", "context_window")}),
        (
            "RAG: answer from a knowledge base",
            {"fields": ("knowledge_base", "rag_template", "rag_k", "rag_judge")},
        ),
        ("Battles", {"fields": ("enabled", "weight")}),
        ("Health (set by the checks)", {"fields": readonly_fields}),
    )
    actions = ("try_generation", "check_health")

    @admin.display(description="model")
    def served(self, obj: Contender) -> str:
        if obj.kind == Contender.Kind.LORA:
            adapter = obj.adapter_name or obj.adapter_path.rstrip("/").rsplit("/", 1)[-1]
            return f"{adapter} on {obj.model or 'default'}"
        return obj.model or "default"

    @admin.display(description="health", ordering="health")
    def health_badge(self, obj: Contender) -> str:
        return _health_badge(obj.health, obj.health_message)

    @admin.display(description="")
    def try_link(self, obj: Contender) -> str:
        if obj.engine == Engine.NONE:
            return ""
        return format_html(
            '<a href="{}">Test</a>', reverse("admin:inference_contender_try", args=[obj.pk])
        )

    def save_model(self, request: HttpRequest, obj: Contender, form: Any, change: bool) -> None:
        check = getattr(form, "check", None) or ContenderCheck()
        contender_save(contender=obj, check=check)
        for warning in check.warnings:
            self.message_user(request, warning, messages.WARNING)

    @admin.action(description="Test: run a short generation")
    def try_generation(self, request: HttpRequest, queryset: QuerySet[Contender]) -> None:
        for contender in queryset.exclude(engine=Engine.NONE)[:10]:
            result = contender_try(contender=contender)
            if result.ok:
                self.message_user(
                    request,
                    f"Test of {contender.name}: replied in {result.total_ms:.0f} ms "
                    f"(first token {result.ttft_ms or 0:.0f} ms, {result.tokens} tokens): "
                    f"{result.text.strip()[:200]!r}",
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    f"Test of {contender.name}: failed ({result.error_code}): "
                    f"{result.error_message}",
                    messages.ERROR,
                )

    @admin.action(description="Check health now (all endpoints and local contenders)")
    def check_health(self, request: HttpRequest, queryset: QuerySet[Contender]) -> None:
        health_check_all()
        down = queryset.filter(health=Health.DOWN)
        for contender in down:
            self.message_user(
                request, f"Contender {contender.name}: {contender.health_message}", messages.ERROR
            )
        self.message_user(
            request, f"Checked; {queryset.count() - down.count()} selected healthy.", messages.INFO
        )

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:pk>/try/",
                self.admin_site.admin_view(self.try_view),
                name="inference_contender_try",
            )
        ]
        return own + super().get_urls()

    def try_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Run one short generation with a prompt of the admin's choosing."""
        contender = get_object_or_404(Contender.objects.select_related("endpoint"), pk=pk)
        if not self.has_view_permission(request, contender):
            raise PermissionDenied
        prompt = TRY_PROMPT
        result = None
        if request.method == "POST":
            prompt = (request.POST.get("prompt") or TRY_PROMPT).strip()[:2000]
            result = contender_try(contender=contender, prompt=prompt)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Test {contender.name}",
            "contender": contender,
            "prompt": prompt,
            "result": result,
        }
        return TemplateResponse(request, "admin/inference/contender_try.html", context)
