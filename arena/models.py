from __future__ import annotations

import uuid

from django.apps import apps
from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Substr
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
    # The visitor's key (arena.visitors.visitor_key), never the visitor id itself.
    session_key = models.CharField(max_length=64, db_index=True)
    # A keyed hash of the visitor's network (arena.visitors.network_key), never the address.
    ip_key = models.CharField(max_length=64, blank=True, db_index=True)
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


class VoteQuerySet(models.QuerySet["Vote"]):
    def counting(
        self,
        *,
        include_named: bool = False,
        include_over_cap: bool = False,
        include_leaks: bool = False,
        include_flagged_voters: bool = False,
        include_failed_turns: bool = False,
    ) -> VoteQuerySet:
        """The votes that count: the one rule the leaderboard, the preference
        exports and active sampling share. Left out unless let back in: votes
        cast with the names shown, votes over a daily cap, votes on answers
        that named a model, votes of a voter the outlier test flagged (by
        visitor key, or by network as `ip:<ip_key>`), and votes on a battle
        where an answer failed."""
        votes = self
        if not include_named:
            votes = votes.filter(anonymous=True)
        if not include_over_cap:
            votes = votes.filter(over_cap=False)
        if not include_leaks:
            votes = votes.filter(identity_leak=False)
        if not include_flagged_voters:
            # The outlier test belongs to ratings, which reads arena, not the
            # other way round: its table is named through the app registry.
            # A network is flagged as "ip:" + Vote.ip_key (ratings.services.IP_FLAG_PREFIX).
            flagged = apps.get_model("ratings", "FlaggedVoter").objects
            networks = flagged.filter(session_key__startswith="ip:").annotate(
                ip=Substr("session_key", 4)
            )
            votes = votes.exclude(session_key__in=flagged.values("session_key")).exclude(
                ip_key__in=networks.values("ip")
            )
        if not include_failed_turns:
            failed = Answer.objects.filter(
                turn__battle=OuterRef("battle"), superseded=False, status=Answer.Status.ERROR
            )
            votes = votes.exclude(Exists(failed))
        return votes


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
    # Hashed like Battle.session_key and Battle.ip_key.
    session_key = models.CharField(max_length=64, blank=True, db_index=True)
    ip_key = models.CharField(max_length=64, blank=True, db_index=True)
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

    objects = VoteQuerySet.as_manager()

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


class Visitor(models.Model):
    """A visitor who started a battle. Page views create none: the visitor id
    lives in a signed cookie, and only its keyed hash is stored, here and in
    the battles and votes."""

    key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"visitor {self.key[:8]}…"


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
