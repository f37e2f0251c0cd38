from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.models import Contender, Engine


class Command(BaseCommand):
    help = (
        "Train a LoRA adapter with DPO on a `trl` preference export (export_preferences "
        "--format trl) and register it as a new contender on the same base."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base", required=True, help="A local base contender's name.")
        parser.add_argument("--data", required=True, type=Path, help=".jsonl or .parquet")
        parser.add_argument("--out", required=True, type=Path, help="Folder for the adapter.")
        parser.add_argument("--name", help="The new contender's name (default: <base>-dpo).")
        parser.add_argument("--steps", type=int, default=20)
        parser.add_argument("--batch-size", type=int, default=2)
        parser.add_argument("--learning-rate", type=float, default=5e-5)
        parser.add_argument("--beta", type=float, default=0.1)
        parser.add_argument("--rank", type=int, default=8)
        parser.add_argument("--no-register", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        # Training imports torch, peft and TRL: loaded when the command runs,
        # not when Django lists the management commands.
        from inference.engines.local import converted_model_dir
        from inference.services import contender_check, contender_save
        from inference.training import DpoSettings, dpo_train

        base = Contender.objects.filter(name=opts["base"]).first()
        if base is None:
            raise CommandError(f"no contender {opts['base']!r}")
        if base.engine != Engine.LOCAL or base.kind != Contender.Kind.BASE or base.model:
            raise CommandError(
                f"{base.name} is not a base contender on the local default model; "
                "train_dpo tunes the local engine's model"
            )
        if not opts["data"].is_file():
            raise CommandError(f"{opts['data']}: no such file")
        name = opts["name"] or f"{base.name}-dpo"
        if not opts["no_register"] and Contender.objects.filter(name=name).exists():
            raise CommandError(f"a contender named {name!r} exists already: pass --name")
        if opts["steps"] < 1 or opts["rank"] < 1:
            raise CommandError("--steps and --rank must be at least 1")

        def progress(step: int, loss: float) -> None:
            self.stderr.write(f"step {step}/{opts['steps']}: loss {loss:.4f}")

        try:
            result = dpo_train(
                base_dir=converted_model_dir(settings.ARENA_MODEL_CACHE),
                data=opts["data"],
                out=opts["out"].resolve(),
                settings=DpoSettings(
                    steps=opts["steps"], batch_size=opts["batch_size"],
                    learning_rate=opts["learning_rate"], beta=opts["beta"], rank=opts["rank"],
                ),
                progress=progress,
            )  # fmt: skip
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"trained on {result.pairs} pairs, {result.steps} steps in {result.seconds:.1f} s; "
            f"adapter in {result.adapter_dir}"
        )
        if opts["no_register"]:
            return
        contender = Contender(
            name=name,
            engine=Engine.LOCAL,
            kind=Contender.Kind.LORA,
            adapter_name=name,
            adapter_path=str(result.adapter_dir),
            system_prompt=base.system_prompt,
            params=base.params,
            context_window=base.context_window,
        )
        check = contender_check(contender)
        if check.errors:
            problems = "; ".join(m for msgs in check.errors.values() for m in msgs)
            raise CommandError(f"the adapter was saved but refused as a contender: {problems}")
        contender_save(contender=contender, check=check)
        self.stdout.write(f"registered contender {name!r}: LoRA on {base.name}'s model")
