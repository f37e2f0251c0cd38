from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from inference.models import Contender


class Side(models.TextChoices):
    A = "a", "A"
    B = "b", "B"


class Battle(models.Model):
    class Mode(models.TextChoices):
        ANONYMOUS = "anonymous", "Anonymous"
        NAMED = "named", "Named side by side"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        VOTED = "voted", "Voted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session_key = models.CharField(max_length=64, db_index=True)
    mode = models.CharField(max_length=12, choices=Mode.choices, default=Mode.ANONYMOUS)
    contender_a = models.ForeignKey(Contender, on_delete=models.PROTECT, related_name="+")
    contender_b = models.ForeignKey(Contender, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(contender_a=models.F("contender_b")), name="battle_distinct_contenders"
            )
        ]

    def __str__(self) -> str:
        return f"battle {self.id}"

    def contender(self, side: str) -> Contender:
        return self.contender_a if side == Side.A else self.contender_b


class Turn(models.Model):
    """One user message in a battle; both sides answer it."""

    battle = models.ForeignKey(Battle, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveSmallIntegerField()
    user_text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["battle", "index"]
        constraints = [
            models.UniqueConstraint(fields=["battle", "index"], name="turn_unique_index")
        ]

    def __str__(self) -> str:
        return f"turn {self.index} of {self.battle_id}"


class Answer(models.Model):
    """One side's answer to a turn. Regenerating supersedes it and adds a new attempt."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        STREAMING = "streaming", "Streaming"
        DONE = "done", "Done"
        STOPPED = "stopped", "Stopped"
        ERROR = "error", "Error"

    FINISHED = (Status.DONE, Status.STOPPED, Status.ERROR)
    VOTABLE = (Status.DONE, Status.STOPPED)

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="answers")
    side = models.CharField(max_length=1, choices=Side.choices)
    attempt = models.PositiveSmallIntegerField(default=0)
    superseded = models.BooleanField(default=False)
    contender = models.ForeignKey(Contender, on_delete=models.PROTECT, related_name="answers")
    # The exact messages sent to the engine (system prompt, trimmed history,
    # this turn's user message): what a preference export rebuilds from.
    messages = models.JSONField()
    params = models.JSONField(default=dict)
    # RAG contenders: the passages placed in the prompt, [{chunk, document,
    # source, section, text, score, similarity}], revealed to the voter with the
    # names. None: not retrieved (yet); the worker retrieves when it claims.
    passages = models.JSONField(null=True, blank=True, default=None)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    finish_reason = models.CharField(max_length=20, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Bumped by the worker every few seconds while it streams; a stale one
    # means the worker is gone (see services.answers_reap).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["turn", "side", "attempt"]
        constraints = [
            models.UniqueConstraint(
                fields=["turn", "side"],
                condition=Q(superseded=False),
                name="answer_one_current_per_side",
            ),
            models.UniqueConstraint(
                fields=["turn", "side", "attempt"], name="answer_unique_attempt"
            ),
        ]
        # The reaper asks every few seconds for the few answers still pending
        # or streaming among all that ever were: partial indexes hold only
        # those, so the question costs the same with 100k finished answers.
        indexes = [
            models.Index(
                fields=["heartbeat_at"],
                condition=Q(status="streaming", superseded=False),
                name="answer_streaming_heartbeat",
            ),
            models.Index(
                fields=["created_at"],
                condition=Q(status="pending", superseded=False),
                name="answer_pending_created",
            ),
        ]

    def __str__(self) -> str:
        return f"answer {self.side}#{self.attempt} to {self.turn}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class Vote(models.Model):
    class Choice(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        TIE = "tie", "Tie"
        BOTH_BAD = "both_bad", "Both are bad"

    # One vote per battle, enforced by the database. Imported votes that came
    # without a conversation have no battle.
    battle = models.OneToOneField(
        Battle, on_delete=models.CASCADE, related_name="vote", null=True, blank=True
    )
    turn = models.ForeignKey(
        Turn, on_delete=models.CASCADE, related_name="+", null=True, blank=True
    )
    # Copied from the battle so the leaderboard aggregates one table.
    contender_a = models.ForeignKey(Contender, on_delete=models.PROTECT, related_name="+")
    contender_b = models.ForeignKey(Contender, on_delete=models.PROTECT, related_name="+")
    choice = models.CharField(max_length=8, choices=Choice.choices)
    session_key = models.CharField(max_length=64, blank=True, db_index=True)
    anonymous = models.BooleanField(help_text="Cast without seeing the names.")
    source = models.CharField(max_length=100, default="arena", db_index=True)
    # Hygiene: such votes are kept but left out of the ratings by default.
    over_cap = models.BooleanField(default=False, help_text="Over the visitor's daily vote cap.")
    identity_leak = models.BooleanField(
        default=False, help_text="An answer named a model or its vendor."
    )
    leak_evidence = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "external_id"],
                condition=~Q(external_id=""),
                name="vote_unique_external_id",
            ),
            models.CheckConstraint(
                condition=~Q(contender_a=models.F("contender_b")), name="vote_distinct_contenders"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.choice} on {self.battle_id}"


class ApiToken(models.Model):
    """A per-user token for the HTTP API (preference export). Only its SHA-256
    is stored; the token itself is shown once, when it is made."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"
