from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from arena.env import key_variable_refusal
from inference.engines.local import DEFAULT_MODEL


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


def validate_api_key_env(value: str) -> None:
    """Only variables under ARENA_KEY_PREFIX, never the arena's own secrets."""
    refusal = key_variable_refusal(value, prefix=settings.ARENA_KEY_PREFIX)
    if refusal:
        raise ValidationError(refusal, code="api_key_env")


# What a local contender's `model` may say: empty (the default) or its name.
LOCAL_MODELS = ("", DEFAULT_MODEL)


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
        validators=[validate_api_key_env],
        verbose_name="API key variable",
        help_text="Name of the environment variable that holds the API key (the key itself "
        "is never stored), under ARENA_KEY_PREFIX (default ARENA_KEY_), e.g. ARENA_KEY_VLLM. "
        "Empty: no key.",
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

    def api_key_refusal(self) -> str:
        """Why `api_key_env` may not be read ("" if it may): a row saved before
        the prefix rule, or under another ARENA_KEY_PREFIX, is refused at use."""
        if not self.api_key_env:
            return ""
        return key_variable_refusal(self.api_key_env, prefix=settings.ARENA_KEY_PREFIX)


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
    knowledge_base = models.ForeignKey(
        "KnowledgeBase",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="contenders",
        help_text="RAG: answer from this knowledge base (passages are retrieved for every turn "
        "and placed in the prompt by the template below).",
    )
    rag_template = models.TextField(
        blank=True,
        help_text="RAG: the system message that carries the passages; {passages} is replaced "
        "by the numbered passages. Empty: the built-in template.",
    )
    rag_k = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        verbose_name="RAG k",
        help_text="RAG: passages per turn. Empty: the knowledge base's default.",
    )
    rag_judge = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="RAG judge",
        help_text="RAG: a contender that also grades every answer's context relevance, "
        "groundedness and answer relevance (an LLM judge). Empty: embedding scores only.",
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
        if self.engine == Engine.LOCAL and self.model not in LOCAL_MODELS:
            # The local engine answers with its one model whatever is named:
            # a contender named after another model would mislabel its votes.
            errors["model"] = (
                f"The local engine serves {DEFAULT_MODEL} only, not {self.model!r}: "
                f"leave the model empty or name {DEFAULT_MODEL}."
            )
        if self.kind == self.Kind.LORA:
            if self.engine == Engine.NONE:
                errors["kind"] = "A LoRA adapter needs an engine to run on."
            if not self.adapter_path and not (self.engine == Engine.OPENAI and self.adapter_name):
                errors["adapter_path"] = "Give the adapter's folder."
            if self.engine == Engine.OPENAI and not self.adapter_name:
                errors["adapter_name"] = "Give the name the server serves the adapter under."
        elif self.adapter_path or self.adapter_name:
            errors["kind"] = "An adapter path or name is set: choose 'LoRA adapter'."
        rag_set = self.rag_template or self.rag_k or self.rag_judge_id
        if self.knowledge_base_id is None and rag_set:
            errors["knowledge_base"] = "RAG settings are set: choose a knowledge base."
        if self.rag_template and "{passages}" not in self.rag_template:
            errors["rag_template"] = "The template must contain {passages}."
        if self.rag_judge_id is not None and self.rag_judge_id == self.pk:
            errors["rag_judge"] = "A contender cannot judge itself."
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

    @property
    def is_rag(self) -> bool:
        return self.knowledge_base_id is not None


class KnowledgeBase(models.Model):
    """Documents split into embedded chunks that RAG contenders answer from."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    chunk_size = models.PositiveIntegerField(
        default=800,
        validators=[MinValueValidator(100), MaxValueValidator(8000)],
        help_text="Largest chunk, in characters. Structure (headings, paragraphs) comes first.",
    )
    chunk_overlap = models.PositiveIntegerField(
        default=120,
        validators=[MaxValueValidator(2000)],
        help_text="Characters repeated between consecutive chunks of one long section.",
    )
    top_k = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="Passages retrieved per question.",
    )
    score_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(-1.0), MaxValueValidator(1.0)],
        help_text="Leave out passages whose cosine similarity to the question is below this. "
        "Empty: no threshold.",
    )
    embedding_model = models.CharField(
        max_length=200,
        default="all-MiniLM-L6-v2",
        help_text="The sentence-transformers model the chunks are embedded with.",
    )
    dimensions = models.PositiveIntegerField(default=384, editable=False)
    # Bumped whenever its chunks change: retrieval caches are keyed on it.
    revision = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(chunk_overlap__lt=models.F("chunk_size")),
                name="kb_overlap_below_size",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        size, overlap = self.chunk_size, self.chunk_overlap
        if size is not None and overlap is not None and overlap >= size:
            raise ValidationError({"chunk_overlap": "The overlap must be below the chunk size."})


class Document(models.Model):
    """One ingested file. Re-ingesting a changed file replaces its chunks;
    an unchanged one (same content hash) is skipped."""

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="documents"
    )
    # Where it came from: a path relative to the ingested folder, or the upload's name.
    source = models.CharField(max_length=500)
    title = models.CharField(max_length=500, blank=True)
    kind = models.CharField(max_length=20)  # text, markdown, html, pdf
    content_hash = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    ingested_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["knowledge_base", "source"]
        constraints = [
            models.UniqueConstraint(
                fields=["knowledge_base", "source"], name="document_unique_source"
            )
        ]

    def __str__(self) -> str:
        return self.source


class Chunk(models.Model):
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="chunks"
    )
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    section = models.CharField(max_length=500, blank=True)
    text = models.TextField()
    # float32, little-endian, L2-normalised; KnowledgeBase.dimensions values.
    embedding = models.BinaryField()

    class Meta:
        ordering = ["document", "index"]
        constraints = [
            models.UniqueConstraint(fields=["document", "index"], name="chunk_unique_index")
        ]

    def __str__(self) -> str:
        return f"{self.document} #{self.index}"


class RagScore(models.Model):
    """The RAG triad for one answer of a RAG contender: embedding scores in
    [0, 1], and, when the contender names a judge, the judge's grades in [0, 1]."""

    answer = models.OneToOneField("arena.Answer", on_delete=models.CASCADE, related_name="rag")
    contender = models.ForeignKey(Contender, on_delete=models.CASCADE, related_name="rag_scores")
    context_relevance = models.FloatField()
    groundedness = models.FloatField()
    answer_relevance = models.FloatField()
    judge = models.ForeignKey(
        Contender, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    judge_context_relevance = models.FloatField(null=True, blank=True)
    judge_groundedness = models.FloatField(null=True, blank=True)
    judge_answer_relevance = models.FloatField(null=True, blank=True)
    judge_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"RAG scores of {self.answer_id}"


class IngestJob(models.Model):
    """Documents uploaded in the admin, ingested in the background (a Celery
    task on the local queue, or a thread of the web process). Until each file
    is ingested its bytes wait in an IngestJobFile row."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="ingest_jobs"
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    # Every file sent, refused ones included (they are done, with an error, at once).
    files_total = models.PositiveIntegerField(default=0)
    files_done = models.PositiveIntegerField(default=0)
    chunks = models.PositiveIntegerField(default=0)
    # One per file done: {"source", "status", "chunks", "message"}.
    outcomes = models.JSONField(default=list, blank=True)
    current = models.CharField(max_length=600, blank=True)  # what the worker is doing now
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Moved on every file and every batch of chunks embedded: a running job
    # whose progress stopped long ago lost its worker.
    progressed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "progressed_at"], name="ingestjob_status")]

    def __str__(self) -> str:
        return f"ingest job {self.pk} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in {self.Status.QUEUED, self.Status.RUNNING}


class IngestJobFile(models.Model):
    """An accepted upload's bytes, kept only until its file is ingested."""

    job = models.ForeignKey(IngestJob, on_delete=models.CASCADE, related_name="files")
    source = models.CharField(max_length=500)
    data = models.BinaryField()

    class Meta:
        ordering = ["job", "id"]

    def __str__(self) -> str:
        return self.source
