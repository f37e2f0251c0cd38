"""LoRA adapters made in the tests with peft on the real SmolLM2 base.

`init_lora_weights=False` gives both LoRA matrices random values (peft's
default leaves B at zero, an adapter that changes nothing), so each adapter
really answers differently. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.engines.local import converted_model_dir


def lora_adapter_make(
    folder: Path,
    *,
    seed: int,
    r: int = 8,
    target_modules: list[str] | None = None,
    **config: Any,
) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(converted_model_dir(settings.ARENA_MODEL_CACHE))
    lora = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=target_modules or ["q_proj", "v_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        **config,
    )
    get_peft_model(base, lora).save_pretrained(str(folder))
    return folder


def adapter_config_edit(folder: Path, **changes: Any) -> None:
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    for key, value in changes.items():
        if value is None:
            config.pop(key)
    path.write_text(json.dumps(config))
