"""Health checks: endpoints and contenders found unhealthy drop out of pair
sampling and come back when healthy; a vLLM that lost its adapters (a
restart) gets them loaded again."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from django.conf import settings

from arena import services
from arena.events import ArenaError
from inference.health import endpoint_unreachable, health_check_all
from inference.models import Contender, Endpoint, Engine, Health
from inference.tasks import serving_health_check
from tests.conftest import TINY, free_port
from tests.inference.loras import adapter_config_edit
from tests.inference.servers import LLAMA_ALIAS, VLLMStandIn

pytestmark = pytest.mark.django_db


@pytest.fixture
def on_vllm(vllm: VLLMStandIn, tmp_path: Path) -> dict[str, Contender]:
    endpoint = Endpoint.objects.create(name="vllm", base_url=vllm.url)
    adapter = tmp_path / "pirate"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]})
    )
    vllm.behaviour.adapters["pirate"] = str(adapter)
    base = vllm.behaviour.base
    return {
        "base": Contender.objects.create(
            name="vllm-base", engine=Engine.OPENAI, endpoint=endpoint, model=base
        ),
        "lora": Contender.objects.create(
            name="vllm-pirate",
            engine=Engine.OPENAI,
            endpoint=endpoint,
            kind=Contender.Kind.LORA,
            model=base,
            adapter_name="pirate",
            adapter_path=str(adapter),
        ),
    }


def _health(name: str) -> tuple[str, str]:
    contender = Contender.objects.get(name=name)
    return contender.health, contender.health_message


def _sampled(alice: str, rounds: int = 40) -> set[str]:
    names = set()
    for seed in range(rounds):
        battle = services.battle_create(session_key=alice, rng=random.Random(seed))
        names |= {battle.contender_a.name, battle.contender_b.name}
    return names


def test_a_healthy_vllm_and_its_contenders_are_marked_healthy(
    on_vllm: dict[str, Contender],
) -> None:
    (report, _local) = health_check_all()
    assert report.healthy and report.latency_ms is not None
    endpoint = Endpoint.objects.get()
    assert endpoint.health == Health.OK and endpoint.health_checked_at is not None
    assert {"id": "pirate", "parent": endpoint.served_models[0]["id"]} in endpoint.served_models
    assert _health("vllm-base") == (Health.OK, "")
    assert _health("vllm-pirate") == (Health.OK, "")


def test_unhealthy_contenders_leave_sampling_and_come_back(
    vllm: VLLMStandIn, on_vllm: dict[str, Contender], alpha: Contender, alice: str
) -> None:
    health_check_all()
    assert _sampled(alice) == {"alpha", "vllm-base", "vllm-pirate"}
    vllm.behaviour.healthy = False
    serving_health_check()  # what Celery beat runs
    assert Endpoint.objects.get().health == Health.DOWN
    health, why = _health("vllm-pirate")
    assert health == Health.DOWN and "Endpoint vllm is unhealthy" in why
    with pytest.raises(ArenaError) as caught:
        services.battle_create(session_key=alice)  # only alpha is left
    assert caught.value.code == "no_contenders"
    with pytest.raises(ArenaError):
        services.battle_create(
            session_key=alice, mode="named", contender_a="alpha", contender_b="vllm-base"
        )
    vllm.behaviour.healthy = True
    serving_health_check()
    assert _sampled(alice) == {"alpha", "vllm-base", "vllm-pirate"}


def test_a_restarted_vllm_gets_its_adapter_loaded_again(
    vllm: VLLMStandIn, on_vllm: dict[str, Contender]
) -> None:
    vllm.behaviour.adapters.clear()  # a restart forgets adapters loaded at run time
    health_check_all()
    assert vllm.behaviour.adapters == {"pirate": on_vllm["lora"].adapter_path}
    assert _health("vllm-pirate") == (Health.OK, "")


def test_an_adapter_vllm_cannot_load_is_unhealthy_with_the_reason(
    vllm: VLLMStandIn, on_vllm: dict[str, Contender]
) -> None:
    vllm.behaviour.adapters.clear()
    vllm.behaviour.runtime_lora = False
    health_check_all()
    health, why = _health("vllm-pirate")
    assert health == Health.DOWN and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in why
    assert _health("vllm-base") == (Health.OK, "")


def test_a_model_the_server_stopped_serving_is_unhealthy(
    vllm: VLLMStandIn, on_vllm: dict[str, Contender]
) -> None:
    Contender.objects.filter(name="vllm-base").update(model="another/model")
    health_check_all()
    health, why = _health("vllm-base")
    assert health == Health.DOWN and "does not serve another/model" in why


@pytest.mark.model
def test_a_server_without_health_is_checked_with_a_tiny_generation(gamma: Contender) -> None:
    # llama.cpp's Python server has no /health: one token must come back.
    report = next(r for r in health_check_all() if r.name == "llama-cpp")
    assert report.healthy, report.message
    assert _health("gamma") == (Health.OK, "")
    Contender.objects.filter(name="gamma").update(model="not-" + LLAMA_ALIAS)
    health_check_all()
    assert _health("gamma")[0] == Health.DOWN


def test_an_unreachable_endpoint_is_down(db: None) -> None:
    endpoint = Endpoint.objects.create(
        name="gone", base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout=1
    )
    Contender.objects.create(name="ghost", engine=Engine.OPENAI, endpoint=endpoint, model="m")
    health_check_all()
    endpoint.refresh_from_db()
    assert endpoint.health == Health.DOWN and "could not be reached" in endpoint.health_message
    assert _health("ghost")[0] == Health.DOWN


def test_a_refused_connection_mid_battle_takes_the_endpoint_out_at_once(
    on_vllm: dict[str, Contender],
) -> None:
    endpoint = Endpoint.objects.get()
    endpoint_unreachable(endpoint_id=endpoint.pk, message="connection refused")
    assert Endpoint.objects.get().health == Health.DOWN
    assert {c.health for c in Contender.objects.all()} == {Health.DOWN}


@pytest.mark.model
def test_local_contenders_with_bad_adapters_are_unhealthy(
    alpha: Contender, loras: dict[str, Path], tmp_path: Path
) -> None:
    bad = Path(shutil.copytree(loras["pirate"], tmp_path / "dora"))
    adapter_config_edit(bad, use_dora=True)
    for name, path in (("good-lora", loras["pirate"]), ("bad-lora", bad)):
        Contender.objects.create(
            name=name, kind=Contender.Kind.LORA, adapter_path=str(path), params=TINY
        )
    health_check_all()
    assert _health("alpha") == (Health.OK, "")
    assert _health("good-lora") == (Health.OK, "")
    health, why = _health("bad-lora")
    assert health == Health.DOWN and "DoRA" in why


def test_beat_runs_the_check_on_the_configured_schedule() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["serving-health"]
    assert entry["task"] == "inference.tasks.serving_health_check"
    assert entry["schedule"] == settings.ARENA_HEALTH_SECONDS
