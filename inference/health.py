"""Health: is each endpoint up, and does it serve each contender's model?

Checked by a Celery beat task every ARENA_HEALTH_SECONDS (a thread of the web
process in the embedded default). Unhealthy contenders drop out of pair
sampling and come back at the first check that finds them well again. An
endpoint that refuses a connection mid-battle is marked down at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from arena.concurrency import daemon
from inference.adapters import AdapterInvalid, adapter_check
from inference.engines import engine_get
from inference.engines.base import EngineError, GenerationRequest, StreamEnd
from inference.engines.local import DEFAULT_MODEL, gguf_package_dir
from inference.engines.openai import (
    EndpointConfig,
    OpenAIEngine,
    ServedModel,
    health_probe,
    lora_load,
    models_list,
)
from inference.models import Contender, Endpoint, Engine, Health
from inference.selectors import endpoint_config

log = logging.getLogger(__name__)


@dataclass
class HealthReport:
    name: str
    healthy: bool
    message: str = ""
    latency_ms: float | None = None
    contenders: dict[str, tuple[bool, str]] = field(default_factory=dict)


def endpoint_unreachable(*, endpoint_id: int, message: str) -> None:
    """A generation could not connect: take the endpoint and its contenders
    out of sampling until the next check finds them well."""
    now = timezone.now()
    Endpoint.objects.filter(pk=endpoint_id).update(
        health=Health.DOWN, health_message=message, health_checked_at=now
    )
    Contender.objects.filter(endpoint_id=endpoint_id).update(
        health=Health.DOWN, health_message=message, health_checked_at=now
    )


def health_check_all() -> list[HealthReport]:
    """Check every enabled endpoint and every local contender; save the results."""
    reports = [endpoint_check(endpoint=e) for e in Endpoint.objects.filter(enabled=True)]
    reports.append(local_check())
    return reports


def tiny_generation(config: EndpointConfig, model: str) -> None:
    """One token: how a server without /health shows it is well."""

    async def run() -> None:
        request = GenerationRequest(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1, temperature=0
        )
        async for event in OpenAIEngine(config).stream(request):
            if isinstance(event, StreamEnd):
                return

    asyncio.run(run())


def endpoint_check(*, endpoint: Endpoint) -> HealthReport:
    config = endpoint_config(endpoint)
    contenders = list(endpoint.contenders.all())
    started = time.perf_counter()
    served: list[ServedModel] | None = None
    try:
        probe = health_probe(config)
        try:
            served = models_list(config)
        except EngineError as exc:
            if exc.code in ("engine_unreachable", "timeout"):
                raise
            served = None  # no usable /models: nothing to compare against
        if probe is None:
            model = next((c.model for c in contenders if c.model), None) or (
                served[0].id if served else None
            )
            if model is None:
                raise EngineError(
                    "engine_failed", "No /health and no model to try a generation on."
                )
            tiny_generation(config, model)
        healthy, message = True, ""
    except EngineError as exc:
        healthy, message = False, exc.message
    latency = (time.perf_counter() - started) * 1000
    now = timezone.now()
    endpoint.health = Health.OK if healthy else Health.DOWN
    endpoint.health_message = message
    endpoint.health_checked_at = now
    endpoint.health_latency_ms = latency
    if served is not None:
        endpoint.served_models = [{"id": m.id, "parent": m.parent} for m in served]
    endpoint.save(
        update_fields=[
            "health",
            "health_message",
            "health_checked_at",
            "health_latency_ms",
            "served_models",
        ]
    )
    report = HealthReport(endpoint.name, healthy, message, latency)
    for contender in contenders:
        if healthy:
            ok, why = contender_served_check(contender, endpoint, config, served)
        else:
            ok, why = False, f"Endpoint {endpoint.name} is unhealthy: {message}"
        _contender_health_save(contender, ok, why, now)
        report.contenders[contender.name] = (ok, why)
    return report


def contender_served_check(
    contender: Contender,
    endpoint: Endpoint,
    config: EndpointConfig,
    served: list[ServedModel] | None,
) -> tuple[bool, str]:
    """Is the contender's model (or adapter) served? A vLLM adapter that is
    missing, as after a server restart, is loaded again."""
    if served is None:
        return True, ""
    by_id = {m.id: m for m in served}
    if contender.kind == Contender.Kind.LORA:
        entry = by_id.get(contender.adapter_name)
        if entry is None and contender.adapter_path and endpoint.kind == Endpoint.Kind.VLLM:
            try:
                lora_load(config, name=contender.adapter_name, path=contender.adapter_path)
            except EngineError as exc:
                return False, f"Adapter {contender.adapter_name} could not be loaded: {exc.message}"
            return True, ""
        if entry is None:
            return False, f"Endpoint {endpoint.name} does not serve {contender.adapter_name}."
        if entry.parent and contender.model and entry.parent != contender.model:
            return False, (
                f"{contender.adapter_name} is served on base {entry.parent}, "
                f"not on {contender.model}."
            )
        return True, ""
    if contender.model not in by_id:
        listed = ", ".join(sorted(by_id)[:10]) or "nothing"
        return (
            False,
            f"Endpoint {endpoint.name} does not serve {contender.model} (it serves {listed}).",
        )
    return True, ""


def local_check() -> HealthReport:
    """Local contenders: the model package is installed, adapters are valid."""
    report = HealthReport("local", True)
    contenders = list(Contender.objects.filter(engine=Engine.LOCAL))
    if not contenders:
        return report
    now = timezone.now()
    base_ok, base_why = True, ""
    try:
        gguf_package_dir()
    except EngineError as exc:
        if not (settings.ARENA_MODEL_CACHE / DEFAULT_MODEL / "config.json").exists():
            base_ok, base_why = False, exc.message
    for contender in contenders:
        ok, why = base_ok, base_why
        if ok and contender.kind == Contender.Kind.LORA:
            ok, why = local_adapter_check(contender.adapter_path)
        _contender_health_save(contender, ok, why, now)
        report.contenders[contender.name] = (ok, why)
    report.healthy = base_ok
    report.message = base_why
    return report


def local_adapter_check(path: str) -> tuple[bool, str]:
    # The base's module list needs the converted model; before the first
    # conversion only the files are checked.
    modules = None
    if (settings.ARENA_MODEL_CACHE / DEFAULT_MODEL / "config.json").exists():
        modules = engine_get("local").base_modules()  # type: ignore[attr-defined]
    try:
        adapter_check(path, max_rank=settings.ARENA_LORA_MAX_RANK, base_modules=modules)
    except AdapterInvalid as exc:
        return False, f"The adapter is invalid: {exc}"
    return True, ""


def _contender_health_save(contender: Contender, ok: bool, why: str, now: object) -> None:
    health = Health.OK if ok else Health.DOWN
    if contender.health != health or contender.health_message != why:
        log.info("contender %s is now %s %s", contender.name, health, why)
    Contender.objects.filter(pk=contender.pk).update(
        health=health, health_message=why, health_checked_at=now
    )


# --- the embedded default's monitor -----------------------------------------------

_monitor_started = threading.Event()
MONITOR_FIRST_CHECK_SECONDS = 5.0


def health_monitor_start() -> None:
    """In the embedded default there is no Celery beat: a daemon thread of
    the web process runs the checks instead (once per process). It first
    checks a few seconds after start, then every ARENA_HEALTH_SECONDS, while
    ARENA_HEALTH_MONITOR is on."""
    if _monitor_started.is_set():
        return
    _monitor_started.set()

    daemon("health-monitor", _monitor_loop)


def _monitor_loop() -> None:
    time.sleep(MONITOR_FIRST_CHECK_SECONDS)
    while True:
        if settings.ARENA_HEALTH_MONITOR:
            close_old_connections()
            try:
                health_check_all()
            except Exception:  # tables not migrated yet, a database hiccup: next time
                log.exception("health check failed")
            finally:
                connection.close()  # nothing held open between checks
        time.sleep(settings.ARENA_HEALTH_SECONDS)
