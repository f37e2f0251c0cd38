"""Adapter checks: each way vLLM would refuse an adapter is refused when it is
registered, with its reason; uploads are unpacked safely."""

from __future__ import annotations

import io
import json
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from inference.adapters import (
    AdapterInvalid,
    adapter_archive_extract,
    adapter_check,
    adapter_config_problems,
)
from inference.engines import engine_get
from tests.inference.loras import adapter_config_edit

pytestmark = pytest.mark.model

GOOD = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def base_modules() -> frozenset[str]:
    return engine_get("local").base_modules()  # type: ignore[attr-defined]


def _problems(base_modules: frozenset[str], **changes: object) -> list[str]:
    config = {**GOOD, **changes}
    config = {k: v for k, v in config.items() if v is not None}
    return adapter_config_problems(config, max_rank=16, base_modules=base_modules)


def test_the_base_modules_are_smollm2s_linear_layers(base_modules: frozenset[str]) -> None:
    leaves = {name.rsplit(".", 1)[-1] for name in base_modules}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(base_modules) == 30 * 7


def test_a_good_config_has_no_problems(base_modules: frozenset[str]) -> None:
    assert _problems(base_modules) == []
    assert _problems(base_modules, target_modules=r".*\.self_attn\.(q|v)_proj") == []
    assert _problems(base_modules, target_modules="all-linear") == []
    assert _problems(base_modules, target_modules=["self_attn.q_proj"]) == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"r": None}, "adapter_config.json lacks r."),
        ({"lora_alpha": None, "target_modules": None}, "lacks lora_alpha, target_modules"),
        ({"r": 32}, "rank r=32 is above the maximum LoRA rank 16"),
        ({"r": 0}, "r must be a positive whole number"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save (lm_head)"),
        ({"use_dora": True}, "DoRA"),
        ({"bias": "all"}, "trains biases"),
        ({"peft_type": "IA3"}, "IA3 adapter"),
        ({"target_modules": ["c_attn", "q_proj"]}, "does not have: c_attn"),
        ({"target_modules": "transformer\\.h\\..*attn"}, "does not have"),
        ({"target_modules": []}, "target_modules is empty"),
    ],
)
def test_each_way_vllm_refuses_an_adapter_is_named(
    base_modules: frozenset[str], changes: dict[str, object], reason: str
) -> None:
    problems = _problems(base_modules, **changes)
    assert any(reason in p for p in problems), problems


def test_a_real_adapter_folder_passes(loras: dict[str, Path], base_modules: frozenset[str]) -> None:
    info = adapter_check(loras["poet"], max_rank=16, base_modules=base_modules)
    assert (info.rank, info.alpha) == (4, 8.0)
    assert set(info.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_missing_files_are_named(
    loras: dict[str, Path], base_modules: frozenset[str], tmp_path: Path
) -> None:
    with pytest.raises(AdapterInvalid, match="no adapter folder"):
        adapter_check(tmp_path / "nothing", max_rank=16, base_modules=base_modules)
    folder = Path(shutil.copytree(loras["pirate"], tmp_path / "no-weights"))
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterInvalid, match="weights"):
        adapter_check(folder, max_rank=16, base_modules=base_modules)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(AdapterInvalid, match=r"adapter_config\.json is missing"):
        adapter_check(folder, max_rank=16, base_modules=base_modules)


def test_weights_that_contradict_the_config_are_refused(
    loras: dict[str, Path], base_modules: frozenset[str], tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(loras["pirate"], tmp_path / "liar"))
    adapter_config_edit(folder, r=4)
    with pytest.raises(AdapterInvalid, match=r"has rank 8 but adapter_config\.json says r=4"):
        adapter_check(folder, max_rank=16, base_modules=base_modules)


# --- uploads ----------------------------------------------------------------------------


def _zip(files: dict[str, bytes], symlink: str | None = None, comment: bytes = b"") -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.comment = comment
        for name, data in files.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    buffer.seek(0)
    return buffer


def _tar(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def test_an_uploaded_zip_unpacks_from_its_one_folder(tmp_path: Path) -> None:
    archive = _zip({"pirate/adapter_config.json": json.dumps(GOOD).encode(), "pirate/x.bin": b"1"})
    dest = adapter_archive_extract(archive, tmp_path / "out", max_bytes=2**20)
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "x.bin"]


@pytest.mark.parametrize(
    ("archive", "reason"),
    [
        (_zip({"../evil/adapter_config.json": b"{}"}), "unsafe path"),
        (_zip({"/abs/adapter_config.json": b"{}"}), "unsafe path"),
        (_zip({"adapter_config.json": b"{}"}, symlink="adapter_model.safetensors"), "symbolic"),
        (_zip({"adapter_model.safetensors": b"0" * 3_000_000}), "limit is 2 MB"),
        (io.BytesIO(b"not a zip"), "not a .zip"),
        (_zip({}), "empty"),
        # Zip slip through a folder, a Windows separator, a link to a folder.
        (_zip({"pirate/../../evil/adapter_config.json": b"{}"}), "unsafe path"),
        (_zip({"..\\evil\\adapter_config.json": b"{}"}), "unsafe path"),
        (_zip({"pirate/adapter_config.json": b"{}"}, symlink="pirate/weights"), "symbolic"),
        # The upload itself is over the limit, however small it unpacks.
        (_zip({"adapter_config.json": b"{}"}, comment=b"x" * 60_000), "upload is 0.1 MB"),
        (_tar({"adapter_config.json": b"{}"}), "not a .zip file. Tar and other archives"),
    ],
)
def test_unsafe_uploads_are_refused(tmp_path: Path, archive: io.BytesIO, reason: str) -> None:
    limit = 50_000 if "upload is" in reason else 2 * 2**20
    with pytest.raises(AdapterInvalid, match=reason):
        adapter_archive_extract(archive, tmp_path / "out", max_bytes=limit)
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing written, not even a part
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil").exists()
