"""Admins adding models through the real admin pages (the Django test client
with CSRF checks on, logged in as Bob, who is staff): endpoints, base and
adapter contenders, refusals with their reasons, the test page, discovery."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from inference.engines.local import DEFAULT_MODEL
from inference.models import Contender, Endpoint, Engine, Health
from tests.inference.loras import adapter_config_edit
from tests.inference.servers import LLAMA_ALIAS, LlamaServer, VLLMStandIn

pytestmark = pytest.mark.django_db


class AdminPages:
    """Bob in the admin, going through pages as a browser does (CSRF included)."""

    def __init__(self) -> None:
        self.client = Client(enforce_csrf_checks=True)

    def _token(self, url: str) -> str:
        assert self.client.get(url).status_code == 200
        return str(self.client.cookies["csrftoken"].value)

    def login(self, username: str, password: str) -> None:
        token = self._token("/admin/login/")
        response = self.client.post(
            "/admin/login/?next=/admin/",
            {"username": username, "password": password, "csrfmiddlewaretoken": token},
        )
        assert response.status_code == 302, response.content.decode()[:2000]

    def get(self, url: str) -> str:
        response = self.client.get(url)
        assert response.status_code == 200
        return html.unescape(response.content.decode())

    def post(self, url: str, data: dict[str, Any], page: str | None = None) -> Any:
        token = self._token(page or url)
        return self.client.post(url, {**data, "csrfmiddlewaretoken": token})


@pytest.fixture
def bob(db: None) -> AdminPages:
    user = User.objects.create_user("bob", password="bob-pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="inference"))
    pages = AdminPages()
    pages.login("bob", "bob-pw")
    return pages


ENDPOINT_FORM = {
    "kind": "vllm",
    "api_key_env": "",
    "enabled": "on",
    "max_lora_rank": "16",
    "connect_timeout": "5",
    "first_token_timeout": "60",
    "idle_timeout": "30",
    "total_timeout": "300",
    "_save": "Save",
}


def contender_form(**fields: Any) -> dict[str, Any]:
    form = {
        "engine": "local",
        "endpoint": "",
        "kind": "base",
        "model": "",
        "adapter_name": "",
        "adapter_path": "",
        "system_prompt": "",
        "params": json.dumps({"max_tokens": 8, "temperature": 0}),
        "context_window": "8192",
        "enabled": "on",
        "weight": "1.0",
        "_save": "Save",
    }
    form.update(fields)
    return form


def errors(response: Any) -> str:
    """The error list texts of a refused admin form."""
    assert response.status_code == 200, "the form was accepted"
    body = html.unescape(response.content.decode())
    return " | ".join(re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', body, re.S))


def add_contender(bob: AdminPages, **fields: Any) -> Any:
    url = "/admin/inference/contender/add/"
    return bob.post(url, contender_form(**fields))


# --- endpoints and base contenders ---------------------------------------------------


@pytest.mark.model
def test_bob_adds_an_endpoint_and_a_base_contender_on_it(
    bob: AdminPages, llama_server: LlamaServer
) -> None:
    response = bob.post(
        "/admin/inference/endpoint/add/",
        {**ENDPOINT_FORM, "name": "llama", "kind": "openai", "base_url": llama_server.url},
    )
    assert response.status_code == 302
    endpoint = Endpoint.objects.get(name="llama")
    response = add_contender(
        bob, name="llama-smol", engine="openai", endpoint=str(endpoint.pk), model=LLAMA_ALIAS
    )
    assert response.status_code == 302, errors(response)
    contender = Contender.objects.get(name="llama-smol")
    assert (contender.engine, contender.model, contender.health) == (
        Engine.OPENAI,
        LLAMA_ALIAS,
        Health.UNKNOWN,
    )
    listing = bob.get("/admin/inference/contender/")
    assert "llama-smol" in listing and "Test" in listing


@pytest.mark.model
def test_a_model_the_endpoint_does_not_serve_is_refused_with_what_it_serves(
    bob: AdminPages, llama_endpoint: Endpoint
) -> None:
    response = add_contender(
        bob, name="typo", engine="openai", endpoint=str(llama_endpoint.pk), model="smollm-2"
    )
    assert f"does not serve 'smollm-2'; it serves: {LLAMA_ALIAS}" in errors(response)
    assert not Contender.objects.filter(name="typo").exists()


def test_field_combinations_are_explained(bob: AdminPages) -> None:
    response = add_contender(bob, name="lost", engine="openai")
    text = errors(response)
    assert "needs an endpoint" in text and "Name the model" in text
    text = errors(add_contender(bob, name="half", kind="lora"))
    assert "Give the adapter's folder" in text


def test_the_api_key_is_named_never_stored(
    bob: AdminPages, vllm: VLLMStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = bob.post(
        "/admin/inference/endpoint/add/",
        {**ENDPOINT_FORM, "name": "hosted", "base_url": vllm.url, "api_key_env": "bad name!"},
    )
    assert "is not an environment variable name" in errors(response)
    monkeypatch.setenv("ARENA_KEY_TEST_HOSTED", "s3cret")
    bob.post(
        "/admin/inference/endpoint/add/",
        {
            **ENDPOINT_FORM,
            "name": "hosted",
            "base_url": vllm.url,
            "api_key_env": "ARENA_KEY_TEST_HOSTED",
        },
    )
    endpoint = Endpoint.objects.get(name="hosted")
    assert "s3cret" not in json.dumps(list(Endpoint.objects.values()), default=str)
    assert "$ARENA_KEY_TEST_HOSTED (set)" in bob.get("/admin/inference/endpoint/")
    assert endpoint.api_key_env == "ARENA_KEY_TEST_HOSTED"


@pytest.mark.parametrize("variable", ["DJANGO_SECRET_KEY", "DATABASE_URL", "VLLM_API_KEY"])
def test_bob_cannot_point_an_endpoint_key_at_a_variable_outside_the_prefix(
    bob: AdminPages, vllm: VLLMStandIn, variable: str
) -> None:
    # An endpoint's key is sent to its server: naming DJANGO_SECRET_KEY and
    # a server of his own would hand Bob the arena's secret.
    response = bob.post(
        "/admin/inference/endpoint/add/",
        {**ENDPOINT_FORM, "name": "leaky", "base_url": vllm.url, "api_key_env": variable},
    )
    text = errors(response)
    assert variable in text
    assert "ARENA_KEY_" in text
    assert not Endpoint.objects.filter(name="leaky").exists()


def test_a_local_contender_named_after_another_model_is_refused_naming_what_it_serves(
    bob: AdminPages,
) -> None:
    text = errors(add_contender(bob, name="gpt", engine="local", model="gpt-4o"))
    assert f"The local engine serves {DEFAULT_MODEL} only, not 'gpt-4o'" in text
    assert not Contender.objects.filter(name="gpt").exists()
    response = add_contender(bob, name="smol", engine="local", model=DEFAULT_MODEL)
    assert response.status_code == 302, errors(response)


# --- LoRA contenders --------------------------------------------------------------------


@pytest.mark.model
def test_bob_adds_a_local_adapter_by_path(bob: AdminPages, loras: dict[str, Path]) -> None:
    response = add_contender(bob, name="pirate", kind="lora", adapter_path=str(loras["pirate"]))
    assert response.status_code == 302, errors(response)
    assert Contender.objects.get(name="pirate").adapter_path == str(loras["pirate"])
    assert "pirate on default" in bob.get("/admin/inference/contender/")


def _zipped(folder: Path, top: str = "") -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in folder.iterdir():
            zf.write(path, f"{top}{path.name}")
    buffer.seek(0)
    buffer.name = "adapter.zip"
    return buffer


@pytest.mark.model
def test_bob_uploads_an_adapter(
    bob: AdminPages, loras: dict[str, Path], settings: Any, tmp_path: Path
) -> None:
    settings.ARENA_ADAPTER_DIR = tmp_path / "adapters"
    response = add_contender(bob, name="poet", adapter_upload=_zipped(loras["poet"], "poet/"))
    assert response.status_code == 302, errors(response)
    poet = Contender.objects.get(name="poet")
    assert poet.kind == Contender.Kind.LORA
    stored = Path(poet.adapter_path)
    assert stored.parent == tmp_path / "adapters"
    assert (stored / "adapter_config.json").read_bytes() == (
        loras["poet"] / "adapter_config.json"
    ).read_bytes()


def _bad_adapter(loras: dict[str, Path], tmp_path: Path, name: str, **changes: Any) -> Path:
    folder = Path(shutil.copytree(loras["pirate"], tmp_path / name))
    adapter_config_edit(folder, **changes)
    return folder


@pytest.mark.model
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"use_dora": True}, "It uses DoRA (use_dora), which vLLM does not serve."),
        ({"r": 128}, "Its rank r=128 is above the maximum LoRA rank 64"),
        ({"modules_to_save": ["lm_head"]}, "It has modules_to_save (lm_head)"),
        ({"target_modules": ["c_attn"]}, "It targets modules the base model does not have: c_attn"),
        ({"lora_alpha": None}, "adapter_config.json lacks lora_alpha."),
    ],
    ids=["dora", "rank", "modules_to_save", "targets", "no-alpha"],
)
def test_invalid_adapters_are_refused_with_the_reason(
    bob: AdminPages,
    loras: dict[str, Path],
    tmp_path: Path,
    settings: Any,
    changes: dict[str, Any],
    reason: str,
) -> None:
    settings.ARENA_ADAPTER_DIR = tmp_path / "adapters"
    bad = _bad_adapter(loras, tmp_path, "bad", **changes)
    by_path = add_contender(bob, name="bad", kind="lora", adapter_path=str(bad))
    assert reason in errors(by_path)
    by_upload = add_contender(bob, name="bad", adapter_upload=_zipped(bad))
    assert reason in errors(by_upload)
    assert not Contender.objects.filter(name="bad").exists()
    assert not list((tmp_path / "adapters").iterdir())  # a refused upload is not kept


def test_an_upload_that_is_not_a_zip_is_refused(bob: AdminPages) -> None:
    junk = io.BytesIO(b"hello")
    junk.name = "adapter.zip"
    assert "The upload is not a .zip file." in errors(
        add_contender(bob, name="x", adapter_upload=junk)
    )


def test_an_adapter_on_vllm_is_loaded_there_when_registered(
    bob: AdminPages, vllm: VLLMStandIn, tmp_path: Path
) -> None:
    endpoint = Endpoint.objects.create(name="vllm", base_url=vllm.url)
    folder = tmp_path / "pirate"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]})
    )
    (folder / "adapter_model.bin").write_bytes(b"weights")
    fields = {
        "engine": "openai",
        "endpoint": str(endpoint.pk),
        "kind": "lora",
        "model": vllm.behaviour.base,
        "adapter_name": "pirate",
        "adapter_path": str(folder),
    }
    response = add_contender(bob, name="vllm-pirate", **fields)
    assert response.status_code == 302, errors(response)
    assert vllm.behaviour.adapters == {"pirate": str(folder)}


def test_vllms_refusal_of_an_adapter_is_shown(
    bob: AdminPages, vllm: VLLMStandIn, tmp_path: Path
) -> None:
    # The endpoint claims a higher --max-lora-rank than the server has: the
    # local check passes, and vLLM's own refusal is what Bob sees.
    endpoint = Endpoint.objects.create(name="vllm", base_url=vllm.url, max_lora_rank=64)
    folder = tmp_path / "wide"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"r": 32, "lora_alpha": 16, "target_modules": ["q_proj"]})
    )
    (folder / "adapter_model.bin").write_bytes(b"weights")
    response = add_contender(
        bob,
        name="wide",
        engine="openai",
        endpoint=str(endpoint.pk),
        kind="lora",
        model=vllm.behaviour.base,
        adapter_name="wide",
        adapter_path=str(folder),
    )
    refusal = "Loading lora wide failed: LoRA rank 32 is greater than max_lora_rank 16."
    assert f"vLLM refused the adapter: {refusal}" in errors(response)


def test_an_unreachable_server_saves_the_contender_as_unhealthy(bob: AdminPages) -> None:
    from tests.conftest import free_port

    endpoint = Endpoint.objects.create(
        name="later", base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout=1
    )
    response = add_contender(
        bob, name="later-model", engine="openai", endpoint=str(endpoint.pk), model="m"
    )
    assert response.status_code == 302
    contender = Contender.objects.get(name="later-model")
    assert contender.health == Health.DOWN and "could not be reached" in contender.health_message
    assert "could not be reached" in bob.get("/admin/inference/contender/")


# --- trying and discovering -----------------------------------------------------------------


@pytest.mark.model
def test_the_test_page_shows_the_reply_and_its_latency(
    bob: AdminPages, alpha: Contender, gamma: Contender
) -> None:
    for contender in (alpha, gamma):
        url = f"/admin/inference/contender/{contender.pk}/try/"
        assert "Say hello in one short sentence." in bob.get(url)
        response = bob.post(url, {"prompt": "Name a colour."})
        body = html.unescape(response.content.decode())
        reply = re.search(r'<pre id="try-reply"[^>]*>(.*?)</pre>', body, re.S)
        assert reply and reply.group(1).strip(), body[-3000:]
        assert re.search(r"First token after \d+ ms; \d+ tokens in \d+ ms", body)


@pytest.mark.model
def test_the_test_action_reports_each_contender(
    bob: AdminPages, alpha: Contender, gamma: Contender
) -> None:
    response = bob.post(
        "/admin/inference/contender/",
        {"action": "try_generation", "_selected_action": [str(alpha.pk), str(gamma.pk)]},
    )
    assert response.status_code == 302
    listing = bob.get("/admin/inference/contender/")
    assert re.search(
        r"Test of alpha: replied in \d+ ms \(first token \d+ ms, \d+ tokens\)", listing
    )
    assert re.search(r"Test of gamma: replied in \d+ ms", listing)


def test_a_failing_test_shows_the_code_and_reason(bob: AdminPages, vllm: VLLMStandIn) -> None:
    endpoint = Endpoint.objects.create(name="vllm", base_url=vllm.url)
    broken = Contender.objects.create(
        name="broken", engine=Engine.OPENAI, endpoint=endpoint, model=vllm.behaviour.base
    )
    vllm.behaviour.error_after = 1
    response = bob.post(f"/admin/inference/contender/{broken.pk}/try/", {"prompt": "Hi"})
    assert "engine_failed: The model server failed mid-answer: CUDA error" in html.unescape(
        response.content.decode()
    )


def test_bob_discovers_an_endpoints_models_and_adds_them(
    bob: AdminPages, vllm: VLLMStandIn
) -> None:
    vllm.behaviour.adapters["pirate"] = "/adapters/pirate"
    endpoint = Endpoint.objects.create(name="vllm", base_url=vllm.url)
    response = bob.post(
        "/admin/inference/endpoint/",
        {"action": "discover_models", "_selected_action": [str(endpoint.pk)]},
    )
    url = f"/admin/inference/endpoint/{endpoint.pk}/models/"
    assert response.status_code == 302 and response["Location"] == url
    page = bob.get(url)
    assert vllm.behaviour.base in page and "pirate" in page
    response = bob.post(url, {"model": [vllm.behaviour.base, "pirate"]})
    assert response.status_code == 302
    base = Contender.objects.get(model=vllm.behaviour.base, kind=Contender.Kind.BASE)
    lora = Contender.objects.get(kind=Contender.Kind.LORA)
    assert base.name == "llama-32-1b-instruct" and base.endpoint == endpoint
    assert (lora.adapter_name, lora.model) == ("pirate", vllm.behaviour.base)
    # Registered models are not offered again.
    assert 'value="pirate"' not in bob.get(url)


def test_bob_checks_health_from_the_endpoint_list(bob: AdminPages, vllm: VLLMStandIn) -> None:
    endpoint = Endpoint.objects.create(name="vllm", base_url=vllm.url)
    vllm.behaviour.healthy = False
    bob.post(
        "/admin/inference/endpoint/",
        {"action": "check_health", "_selected_action": [str(endpoint.pk)]},
    )
    page = bob.get("/admin/inference/endpoint/")
    assert "Endpoint vllm is unhealthy: The model server is busy" in page
    assert "Unhealthy" in page
