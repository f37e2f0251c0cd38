"""Services for admins adding models: checking contenders and adapters before
they battle, storing uploaded adapters, trying a contender, discovering an
endpoint's models. The admin pages and the management commands both call
these; neither holds logic of its own."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from inference.adapters import AdapterInvalid, adapter_archive_extract, adapter_check
from inference.engines import engine_for, engine_get
from inference.engines.base import (
    EngineError,
    Message,
    StreamEnd,
    TextDelta,
)
from inference.engines.openai import EndpointConfig, ServedModel, lora_load, models_list
from inference.models import Contender, Endpoint, Engine, Health
from inference.rag.answering import messages_augment
from inference.selectors import contender_request, endpoint_config

log = logging.getLogger(__name__)

TRY_PROMPT = "Say hello in one short sentence."
TRY_MAX_TOKENS = 48


@dataclass
class ContenderCheck:
    """Problems that refuse a contender, by form field; warnings that do not."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)


def local_base_modules() -> frozenset[str]:
    return engine_get("local").base_modules()  # type: ignore[attr-defined]


def contender_check(contender: Contender) -> ContenderCheck:
    """Everything that would make this contender fail at battle time, found now.

    Local LoRA: the adapter folder is checked as vLLM would check it, against
    the local base's modules. A LoRA contender on vLLM: the folder is checked
    if this machine can read it, then the server must list the adapter on the
    right base or load it (POST /load_lora_adapter), and its refusal is shown.
    A base model on a server must be listed by /models. A server that cannot be
    reached is a warning: the contender is saved as unhealthy, and the health
    check picks it up when the server comes.
    """
    check = ContenderCheck()
    if contender.engine == Engine.LOCAL and contender.kind == Contender.Kind.LORA:
        try:
            adapter_check(
                contender.adapter_path,
                max_rank=settings.ARENA_LORA_MAX_RANK,
                base_modules=local_base_modules(),
            )
        except AdapterInvalid as exc:
            for reason in exc.reasons:
                check.add("adapter_path", reason)
    elif contender.engine == Engine.OPENAI and contender.endpoint is not None:
        _server_check(contender, contender.endpoint, check)
    return check


def _server_check(contender: Contender, endpoint: Endpoint, check: ContenderCheck) -> None:
    lora = contender.kind == Contender.Kind.LORA
    if lora and not _adapter_files_valid(contender, endpoint, check):
        return
    config = endpoint_config(endpoint)
    served = _served_models(config, endpoint, check)
    if served is None:
        return
    if lora:
        _adapter_served_check(contender, endpoint, config, served, check)
    elif contender.model not in served:
        listed = ", ".join(sorted(served)[:20]) or "nothing"
        check.add(
            "model",
            f"Endpoint {endpoint.name} does not serve {contender.model!r}; it serves: {listed}.",
        )


def _adapter_files_valid(contender: Contender, endpoint: Endpoint, check: ContenderCheck) -> bool:
    """An adapter folder on this machine is checked before the server is asked."""
    if not contender.adapter_path or not Path(contender.adapter_path).is_dir():
        return True
    try:
        adapter_check(contender.adapter_path, max_rank=endpoint.max_lora_rank, base_modules=None)
    except AdapterInvalid as exc:
        for reason in exc.reasons:
            check.add("adapter_path", reason)
        return False
    return True


def _served_models(
    config: EndpointConfig, endpoint: Endpoint, check: ContenderCheck
) -> dict[str, ServedModel] | None:
    """The endpoint's models by id; None (and a warning) when it did not list them."""
    try:
        return {m.id: m for m in models_list(config)}
    except EngineError as exc:
        if exc.code in ("engine_unreachable", "timeout"):
            check.warnings.append(
                f"Endpoint {endpoint.name} could not be reached ({exc.message}); "
                "the contender stays out of battles until a health check finds it served."
            )
        else:
            check.warnings.append(
                f"Endpoint {endpoint.name} did not list its models: {exc.message}"
            )
        return None


def _adapter_served_check(
    contender: Contender,
    endpoint: Endpoint,
    config: EndpointConfig,
    served: dict[str, ServedModel],
    check: ContenderCheck,
) -> None:
    """A LoRA contender: its base is served, and its adapter is (on that base)
    or can be loaded now."""
    if contender.model and contender.model not in served:
        check.add("model", f"Endpoint {endpoint.name} does not serve the base {contender.model!r}.")
        return
    entry = served.get(contender.adapter_name)
    if entry is not None:
        if entry.parent and contender.model and entry.parent != contender.model:
            check.add(
                "adapter_name",
                f"The server serves {contender.adapter_name!r} on base {entry.parent!r}, "
                f"not on {contender.model!r}.",
            )
        return
    if not contender.adapter_path:
        check.add(
            "adapter_path",
            f"Endpoint {endpoint.name} does not list {contender.adapter_name!r}: give the "
            "adapter's path on the server so it can be loaded.",
        )
        return
    if endpoint.kind != Endpoint.Kind.VLLM:
        check.add(
            "adapter_name",
            f"Endpoint {endpoint.name} does not list {contender.adapter_name!r}, and only vLLM "
            "endpoints load adapters at run time.",
        )
        return
    _adapter_load(config, contender, check)


def _adapter_load(config: EndpointConfig, contender: Contender, check: ContenderCheck) -> None:
    try:
        lora_load(config, name=contender.adapter_name, path=contender.adapter_path)
    except EngineError as exc:
        if exc.code in ("engine_unreachable", "timeout"):
            check.warnings.append(f"The adapter was not loaded yet: {exc.message}")
        else:
            check.add("adapter_path", f"vLLM refused the adapter: {exc.message}")


def adapter_upload_store(*, archive: IO[bytes], label: str, engine: str, max_rank: int) -> Path:
    """Unpack an uploaded adapter .zip under ARENA_ADAPTER_DIR and check it;
    returns its folder. Raises AdapterInvalid (nothing is kept then)."""
    root = settings.ARENA_ADAPTER_DIR
    root.mkdir(parents=True, exist_ok=True)
    stem = slugify(label)[:60] or "adapter"
    dest = root / f"{stem}-{timezone.now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    adapter_archive_extract(archive, dest, max_bytes=settings.ARENA_ADAPTER_MAX_MB * 2**20)
    try:
        base_modules = local_base_modules() if engine == Engine.LOCAL else None
        adapter_check(dest, max_rank=max_rank, base_modules=base_modules)
    except AdapterInvalid:
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


@transaction.atomic
def contender_save(*, contender: Contender, check: ContenderCheck) -> Contender:
    """Save a checked contender; one that could not be checked against its
    server (unreachable) starts unhealthy, out of battles, until a check."""
    if check.warnings and contender.engine == Engine.OPENAI:
        contender.health = Health.DOWN
        contender.health_message = " ".join(check.warnings)
        contender.health_checked_at = timezone.now()
    elif contender.health == Health.DOWN and not check.errors:
        contender.health = Health.UNKNOWN
        contender.health_message = ""
    contender.save()
    return contender


# --- trying a contender ------------------------------------------------------------


@dataclass(frozen=True)
class TryResult:
    text: str
    ttft_ms: float | None
    total_ms: float
    tokens: int | None
    finish_reason: str
    error_code: str = ""
    error_message: str = ""
    passages: tuple[dict[str, Any], ...] = ()  # RAG contenders: what the prompt retrieved

    @property
    def ok(self) -> bool:
        return not self.error_code


def contender_try(*, contender: Contender, prompt: str = TRY_PROMPT) -> TryResult:
    """A short generation exactly as a battle would run it: the reply and its latency."""
    messages: list[Message] = []
    if contender.system_prompt:
        messages.append({"role": "system", "content": contender.system_prompt})
    messages.append({"role": "user", "content": prompt})
    passages: list[dict[str, Any]] = []
    kb = contender.knowledge_base
    if kb is not None:
        passages, messages = messages_augment(
            messages,
            knowledge_base_id=kb.pk,
            knowledge_base=kb.name,
            template=contender.rag_template,
            k=contender.rag_k,
        )
    params = dict(contender.params or {})
    params["max_tokens"] = min(int(params.get("max_tokens", TRY_MAX_TOKENS)), TRY_MAX_TOKENS)
    request = contender_request(contender, messages=messages, params=params)
    endpoint = contender.endpoint if contender.engine == Engine.OPENAI else None
    config = endpoint_config(endpoint) if endpoint is not None else None

    async def run() -> TryResult:
        started = time.perf_counter()
        text, ttft, end = "", None, None
        try:
            engine = engine_for(contender.engine, config)
            async for event in engine.stream(request):
                if isinstance(event, TextDelta):
                    if ttft is None:
                        ttft = (time.perf_counter() - started) * 1000
                    text += event.text
                elif isinstance(event, StreamEnd):
                    end = event
        except EngineError as exc:
            total = (time.perf_counter() - started) * 1000
            return TryResult(
                text, ttft, total, None, "error", exc.code, exc.message, tuple(passages)
            )
        total = (time.perf_counter() - started) * 1000
        return TryResult(
            text,
            ttft,
            total,
            end.completion_tokens if end else None,
            end.finish_reason if end else "stop",
            passages=tuple(passages),
        )

    return asyncio.run(run())


# --- discovering an endpoint's models ------------------------------------------------


def endpoint_models_discover(*, endpoint: Endpoint) -> list[ServedModel]:
    """GET /models and remember the answer on the endpoint."""
    served = models_list(endpoint_config(endpoint))
    endpoint.served_models = [{"id": m.id, "parent": m.parent} for m in served]
    endpoint.save(update_fields=["served_models"])
    return served


def contender_name_for(model_id: str) -> str:
    base = slugify(re.sub(r"[/:]", "-", model_id.rsplit("/", 1)[-1]))[:90] or "model"
    name, n = base, 2
    while Contender.objects.filter(name=name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


@transaction.atomic
def contenders_from_models(
    *, endpoint: Endpoint, models: list[ServedModel], enabled: bool = True
) -> list[Contender]:
    """One contender per discovered model not already registered on this
    endpoint: a base model, or a LoRA adapter when the server gives a parent."""
    have = set(Contender.objects.filter(endpoint=endpoint).values_list("model", "adapter_name"))
    made = []
    for served in models:
        lora = bool(served.parent)
        key = (served.parent, served.id) if lora else (served.id, "")
        if key in have:
            continue
        made.append(
            Contender.objects.create(
                name=contender_name_for(served.id),
                engine=Engine.OPENAI,
                endpoint=endpoint,
                kind=Contender.Kind.LORA if lora else Contender.Kind.BASE,
                model=served.parent or served.id,
                adapter_name=served.id if lora else "",
                enabled=enabled,
            )
        )
    return made
