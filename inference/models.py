from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models


class Engine(models.TextChoices):
    LOCAL = "local", "Local (transformers on this machine)"
    OPENAI = "openai", "OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama, ...)"
    NONE = "none", "None (leaderboard only, e.g. imported votes)"


class Health(models.TextChoices):
    UNKNOWN = "unknown", "Not checked yet"
    OK = "ok", "Healthy"
    DOWN = "down", "Unhealthy"


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


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Endpoint(models.Model):
    """An OpenAI-compatible server that contenders point at.

    The API key is never stored: `api_key_env` names the environment variable
    of the web and worker processes that holds it.
    """

    class Kind(models.TextChoices):
        VLLM = "vllm", "vLLM (LoRA adapters loaded at run time, /health)"
        OPENAI = "openai", "Other OpenAI-compatible server or hosted API"

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.VLLM)
    base_url = models.URLField(
        max_length=300,
        help_text="The API root that /chat/completions and /models hang off, "
        "e.g. http://vllm:8000/v1",
    )
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        validators=[RegexValidator(ENV_NAME, "An environment variable name, e.g. VLLM_API_KEY.")],
        verbose_name="API key variable",
        help_text="Name of the environment variable that holds the API key (the key itself "
        "is never stored). Empty: no key.",
    )
    max_lora_rank = models.PositiveIntegerField(
        default=16,
        validators=[MinValueValidator(1), MaxValueValidator(512)],
        help_text="The server's --max-lora-rank: adapters of a higher rank are refused.",
    )
    connect_timeout = models.FloatField(
        default=5.0, validators=[MinValueValidator(0.1)], help_text="Seconds."
    )
    first_token_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds from the request to the first token (queueing + prefill).",
    )
    idle_timeout = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(0.1)],
        help_text="Longest silence between two tokens, in seconds.",
    )
    total_timeout = models.FloatField(
        default=300.0, validators=[MinValueValidator(1.0)], help_text="Seconds for a whole answer."
    )
    enabled = models.BooleanField(default=True)
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    health_message = models.TextField(blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_latency_ms = models.FloatField(null=True, blank=True)
    # What the last check found at /models: [{"id": ..., "parent": ...}, ...].
    served_models = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Contender(models.Model):
    """A named thing that answers: an engine, a model (or a LoRA adapter on
    it), a system prompt, parameters."""

    class Kind(models.TextChoices):
        BASE = "base", "Base model"
        LORA = "lora", "LoRA adapter on a base model"

    name = models.SlugField(max_length=100, unique=True, help_text="Shown after the vote.")
    engine = models.CharField(max_length=20, choices=Engine.choices, default=Engine.LOCAL)
    endpoint = models.ForeignKey(
        Endpoint,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="contenders",
        help_text="For the OpenAI-compatible engine: the server that serves the model.",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.BASE)
    model = models.CharField(
        max_length=300,
        blank=True,
        help_text="The base model's name on the endpoint (as /v1/models lists it); "
        "for the local engine, empty means the default model.",
    )
    adapter_name = models.CharField(
        max_length=200,
        blank=True,
        validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$", "Letters, digits, . _ - /")],
        help_text="LoRA: the name the server serves the adapter under (its model name).",
    )
    adapter_path = models.CharField(
        max_length=500,
        blank=True,
        help_text="LoRA: the adapter folder (adapter_config.json + weights). For the local "
        "engine a path on the workers; for vLLM a path the vLLM server can read.",
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
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    health_message = models.TextField(blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(weight__gte=0), name="contender_weight_gte_0")
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Field combinations; the adapter itself is checked by
        inference.services.contender_check (it reads files and servers)."""
        errors: dict[str, str] = {}
        if self.engine == Engine.OPENAI:
            if self.endpoint_id is None:
                errors["endpoint"] = "The OpenAI-compatible engine needs an endpoint."
            if not self.model:
                errors["model"] = "Name the model as the endpoint serves it."
        elif self.endpoint_id is not None:
            errors["endpoint"] = "Only the OpenAI-compatible engine uses an endpoint."
        if self.kind == self.Kind.LORA:
            if self.engine == Engine.NONE:
                errors["kind"] = "A LoRA adapter needs an engine to run on."
            if not self.adapter_path and not (self.engine == Engine.OPENAI and self.adapter_name):
                errors["adapter_path"] = "Give the adapter's folder."
            if self.engine == Engine.OPENAI and not self.adapter_name:
                errors["adapter_name"] = "Give the name the server serves the adapter under."
        elif self.adapter_path or self.adapter_name:
            errors["kind"] = "An adapter path or name is set: choose 'LoRA adapter'."
        if errors:
            raise ValidationError(errors)

    @property
    def can_battle(self) -> bool:
        return (
            self.enabled
            and self.engine != Engine.NONE
            and self.weight > 0
            and self.health != Health.DOWN
        )

    @property
    def served_name(self) -> str:
        """The model name a request to the endpoint carries."""
        return self.adapter_name if self.kind == self.Kind.LORA else self.model
