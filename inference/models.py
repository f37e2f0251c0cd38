from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models


class Engine(models.TextChoices):
    LOCAL = "local", "Local (transformers on this machine)"
    NONE = "none", "None (leaderboard only, e.g. imported votes)"


def _validate_params(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Generation parameters must be a JSON object.")
    allowed = {"temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "seed"}
    unknown = set(value) - allowed
    if unknown:
        raise ValidationError(f"Unknown generation parameters: {', '.join(sorted(unknown))}.")
    for key, val in value.items():
        if not isinstance(val, int | float) or isinstance(val, bool):
            raise ValidationError(f"Generation parameter {key!r} must be a number.")
    if "temperature" in value and not 0 <= value["temperature"] <= 2:
        raise ValidationError("temperature must be between 0 and 2.")
    if "top_p" in value and not 0 < value["top_p"] <= 1:
        raise ValidationError("top_p must be in (0, 1].")
    if "max_tokens" in value and not 1 <= value["max_tokens"] <= 8192:
        raise ValidationError("max_tokens must be between 1 and 8192.")


class Contender(models.Model):
    """A named thing that answers: an engine, a model, a system prompt, parameters."""

    name = models.SlugField(max_length=100, unique=True, help_text="Shown after the vote.")
    engine = models.CharField(max_length=20, choices=Engine.choices, default=Engine.LOCAL)
    model = models.CharField(
        max_length=300,
        blank=True,
        help_text="Model for the engine; empty means the engine's default model.",
    )
    system_prompt = models.TextField(blank=True)
    params = models.JSONField(
        default=dict,
        blank=True,
        validators=[_validate_params],
        help_text='e.g. {"temperature": 0.7, "top_p": 0.9, "max_tokens": 256}',
    )
    context_window = models.PositiveIntegerField(
        default=8192, validators=[MinValueValidator(256)], help_text="In tokens."
    )
    enabled = models.BooleanField(default=True)
    weight = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.0)], help_text="Relative sampling weight."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(weight__gte=0), name="contender_weight_gte_0")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def can_battle(self) -> bool:
        return self.enabled and self.engine != Engine.NONE and self.weight > 0
