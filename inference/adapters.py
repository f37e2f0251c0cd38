"""LoRA adapters: checked when registered or uploaded, the way vLLM would
check them, so a bad adapter is a clear message in the admin and never a
failure in the middle of a battle.

vLLM refuses an adapter whose adapter_config.json lacks `r`, `lora_alpha` or
`target_modules`, whose rank is above the server's --max-lora-rank, that has
`modules_to_save`, uses DoRA or trains biases, or that targets modules the base
model does not have. The local engine (peft) follows the same rules, so an
adapter that battles locally also loads on vLLM.

No Django here: the settings arrive as arguments.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import IO, Any

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
REQUIRED_KEYS = ("r", "lora_alpha", "target_modules")
# Suffixes peft uses for LoRA weights: ...q_proj.lora_A.weight and friends.
_LORA_KEY = re.compile(r"^(?:.*\.)?(?P<module>[^.]+)\.lora_(?:A|B|embedding_A|embedding_B)(?:\.|$)")


class AdapterInvalid(Exception):
    """The adapter would be refused; `reasons` says why, one reason a line."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(" ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model: str  # adapter_config.json's base_model_name_or_path, for display


def adapter_config_problems(
    config: dict[str, Any], *, max_rank: int, base_modules: Collection[str] | None
) -> list[str]:
    """Why vLLM would refuse this adapter_config.json; empty when it would not.

    `base_modules` are the full names of the base model's linear layers
    (None: unknown, e.g. a remote base; the server then has the last word).
    """
    problems: list[str] = []
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        problems.append(f"{ADAPTER_CONFIG} lacks {', '.join(missing)}.")
    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        problems.append(f"It is a {peft_type} adapter; only LoRA adapters are served.")
    problems += _rank_problems(config, max_rank)
    alpha = config.get("lora_alpha")
    if "lora_alpha" in config and (not isinstance(alpha, int | float) or isinstance(alpha, bool)):
        problems.append(f"lora_alpha must be a number, got {alpha!r}.")
    if config.get("modules_to_save"):
        problems.append(
            "It has modules_to_save "
            f"({_names(config['modules_to_save'])}): vLLM only serves adapters without them."
        )
    if config.get("use_dora"):
        problems.append("It uses DoRA (use_dora), which vLLM does not serve.")
    if config.get("bias", "none") not in ("none", None):
        problems.append(f"It trains biases (bias={config['bias']!r}); only bias='none' is served.")
    if "target_modules" in config:
        problems += _target_problems(config["target_modules"], base_modules)
    return problems


def _rank_problems(config: dict[str, Any], max_rank: int) -> list[str]:
    rank = config.get("r")
    if "r" in config and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        return [f"r must be a positive whole number, got {rank!r}."]
    if isinstance(rank, int) and rank > max_rank:
        return [
            f"Its rank r={rank} is above the maximum LoRA rank {max_rank} (vLLM's --max-lora-rank)."
        ]
    return []


def _target_problems(targets: object, base_modules: Collection[str] | None) -> list[str]:
    if not targets or not isinstance(targets, str | list):
        return ["target_modules is empty."]
    if base_modules is None:
        return []
    unsupported = _unsupported_targets(targets, base_modules)
    if not unsupported:
        return []
    leaves = sorted({m.rsplit(".", 1)[-1] for m in base_modules})
    return [
        f"It targets modules the base model does not have: {_names(unsupported)} "
        f"(the base has {_names(leaves)})."
    ]


def _names(items: Iterable[str] | str) -> str:
    return items if isinstance(items, str) else ", ".join(str(i) for i in items)


def _unsupported_targets(targets: str | list[str], base_modules: Collection[str]) -> list[str]:
    if isinstance(targets, str):
        if targets == "all-linear":
            return []
        # peft reads a string as a regular expression over full module names.
        try:
            pattern = re.compile(targets)
        except re.error:
            return [targets]
        return [] if any(pattern.fullmatch(name) for name in base_modules) else [targets]
    return [
        target
        for target in targets
        if not any(name == target or name.endswith("." + target) for name in base_modules)
    ]


def adapter_check(
    path: Path | str, *, max_rank: int, base_modules: Collection[str] | None
) -> AdapterInfo:
    """Read and check an adapter folder; raises AdapterInvalid with every reason."""
    folder = Path(path)
    if not folder.is_dir():
        raise AdapterInvalid([f"There is no adapter folder at {folder}."])
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise AdapterInvalid([f"{ADAPTER_CONFIG} is missing from {folder}."])
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdapterInvalid([f"{ADAPTER_CONFIG} is not valid JSON: {exc}."]) from None
    if not isinstance(config, dict):
        raise AdapterInvalid([f"{ADAPTER_CONFIG} is not a JSON object."])
    problems = adapter_config_problems(config, max_rank=max_rank, base_modules=base_modules)
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        problems.append(f"The weights ({' or '.join(WEIGHT_FILES)}) are missing.")
    elif weights[0].suffix == ".safetensors" and not problems:
        problems += _weights_problems(weights[0], config, base_modules)
    if problems:
        raise AdapterInvalid(problems)
    targets = config["target_modules"]
    return AdapterInfo(
        path=folder,
        rank=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        target_modules=(targets,) if isinstance(targets, str) else tuple(targets),
        base_model=str(config.get("base_model_name_or_path") or ""),
    )


def _weights_problems(
    path: Path, config: dict[str, Any], base_modules: Collection[str] | None
) -> list[str]:
    """The tensors must be LoRA tensors of modules the base has, of rank r
    (reads the safetensors header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        return [f"The weights file {path.name} cannot be read: {exc}."]
    if not shapes:
        return [f"The weights file {path.name} holds no tensors."]
    problems: list[str] = []
    modules: set[str] = set()
    foreign: list[str] = []
    for key, shape in shapes.items():
        match = _LORA_KEY.match(key)
        if match is None:
            foreign.append(key)
            continue
        modules.add(match["module"])
        rank = config.get("r")
        if ".lora_A." in key and len(shape) == 2 and shape[0] != rank:
            problems.append(f"{key} has rank {shape[0]} but {ADAPTER_CONFIG} says r={rank}.")
            break
    if foreign:
        problems.append(
            f"The weights hold tensors that are not LoRA weights ({', '.join(foreign[:3])}); "
            "vLLM refuses adapters with extra trained modules."
        )
    if base_modules is not None:
        leaves = {m.rsplit(".", 1)[-1] for m in base_modules}
        unknown = sorted(modules - leaves)
        if unknown:
            problems.append(
                f"The weights are for modules the base model does not have: {_names(unknown)}."
            )
    return problems


# --- the local base model's modules -----------------------------------------------


@cache
def base_linear_modules(model_dir: str) -> frozenset[str]:
    """Full names of the linear layers LoRA can target in a transformers model
    folder (lm_head excluded, as vLLM does), from an empty skeleton on the meta
    device: no weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return frozenset(
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    )


# --- uploads ----------------------------------------------------------------------


def adapter_archive_extract(archive: IO[bytes], dest: Path, *, max_bytes: int) -> Path:
    """Unpack an uploaded .zip of an adapter folder into `dest` (which must not
    exist), refusing anything unsafe: an upload or unpacked size over
    `max_bytes`, another archive type, absolute or `..` paths, links. Files
    may sit at the top of the archive or in one folder. Returns `dest`;
    raises AdapterInvalid."""
    archive.seek(0, 2)
    uploaded = archive.tell()
    archive.seek(0)
    if uploaded > max_bytes:
        raise AdapterInvalid(
            [f"The upload is {_megabytes(uploaded)}; the limit is {_megabytes(max_bytes)}."]
        )
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile):
        raise AdapterInvalid(
            ["The upload is not a .zip file. Tar and other archives are not accepted."]
        ) from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if not members:
            raise AdapterInvalid(["The archive is empty."])
        total = 0
        for member in members:
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in member.filename:
                raise AdapterInvalid([f"The archive holds an unsafe path: {member.filename}."])
            if stat.S_ISLNK(member.external_attr >> 16):
                raise AdapterInvalid([f"The archive holds a symbolic link: {member.filename}."])
            total += member.file_size
        if total > max_bytes:
            size, limit = total // 2**20, max_bytes // 2**20
            raise AdapterInvalid([f"The adapter unpacks to {size} MB; the limit is {limit} MB."])
        prefix = _common_folder([PurePosixPath(m.filename) for m in members])
        tmp = dest.with_name(dest.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        root = tmp.resolve()
        try:
            for member in members:
                relative = PurePosixPath(member.filename).relative_to(prefix)
                if relative.parts and relative.parts[0] == "__MACOSX":
                    continue
                target = tmp.joinpath(*relative.parts)
                if not target.resolve().is_relative_to(root):  # belt and braces
                    raise AdapterInvalid([f"The archive holds an unsafe path: {member.filename}."])
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _megabytes(n: int) -> str:
    return f"{round(n / 2**20, 1):g} MB"


def _common_folder(names: list[PurePosixPath]) -> PurePosixPath:
    """The one top folder every file sits in, or the archive root."""
    tops = {name.parts[0] for name in names if len(name.parts) > 1}
    if len(tops) == 1 and all(len(name.parts) > 1 for name in names):
        return PurePosixPath(next(iter(tops)))
    return PurePosixPath("")
