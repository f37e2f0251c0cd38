"""Closing the loop: tune a LoRA adapter with DPO on the arena's own votes.

Needs the optional `train` dependencies (trl, datasets). Runs on the CPU for
the small default model: a few steps on a handful of pairs take seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DpoSettings:
    steps: int = 20
    batch_size: int = 2
    learning_rate: float = 5e-5
    beta: float = 0.1
    rank: int = 8
    alpha: int = 16
    max_length: int = 512
    seed: int = 0


@dataclass(frozen=True)
class DpoResult:
    adapter_dir: Path
    pairs: int
    steps: int
    seconds: float
    losses: list[float]


def dpo_train(
    *,
    base_dir: Path,
    data: Path,
    out: Path,
    settings: DpoSettings,
    progress: Callable[[int, float], None] | None = None,
) -> DpoResult:
    """Train a LoRA adapter on `base_dir` from a `trl`-format export; save it in `out`."""
    try:
        import torch
        from datasets import load_dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import DPOConfig, DPOTrainer
    except ImportError as exc:  # the optional dependency group
        raise RuntimeError(
            f"training needs the `train` extra (pip install -e '.[train]'): {exc}"
        ) from None

    kind = "parquet" if data.suffix == ".parquet" else "json"
    dataset = load_dataset(kind, data_files=str(data), split="train")
    missing = {"prompt", "chosen", "rejected"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"{data.name} is not a `trl` export: missing {', '.join(sorted(missing))}")
    if dataset.num_rows == 0:
        raise ValueError(f"{data.name} has no preference pairs")

    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    # A model loaded from GGUF keeps a quantizer marker that trainers refuse;
    # its weights are plain fp32 already.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)

    losses: list[float] = []

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                if progress:
                    progress(int(state.global_step), float(logs["loss"]))

    work = out.with_name(out.name + ".work")
    config = DPOConfig(
        output_dir=str(work),
        per_device_train_batch_size=settings.batch_size,
        max_steps=settings.steps,
        learning_rate=settings.learning_rate,
        beta=settings.beta,
        max_length=settings.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        # trl 1.x turns this on by default; on a 135M model on the CPU it only costs time.
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        seed=settings.seed,
    )
    lora = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Progress()],
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    tuned: Any = trainer.model  # a PeftModel: saves the adapter only
    tuned.save_pretrained(out)
    tokenizer.save_pretrained(out)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return DpoResult(out, dataset.num_rows, settings.steps, seconds, losses)
