from __future__ import annotations

from django.db import models

from arena.models import Vote


class VoteCategory(models.Model):
    """A category tag of a vote: computed when the vote is cast, or imported."""

    vote = models.ForeignKey(Vote, on_delete=models.CASCADE, related_name="categories")
    name = models.CharField(max_length=80)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["vote", "name"], name="votecategory_unique")]
        indexes = [models.Index(fields=["name", "vote"])]

    def __str__(self) -> str:
        return self.name


class VoteStyle(models.Model):
    """Style counts of the two answers a vote was cast on, for style control."""

    vote = models.OneToOneField(Vote, on_delete=models.CASCADE, related_name="style")
    tokens_a = models.PositiveIntegerField()
    tokens_b = models.PositiveIntegerField()
    headers_a = models.PositiveIntegerField()
    headers_b = models.PositiveIntegerField()
    lists_a = models.PositiveIntegerField()
    lists_b = models.PositiveIntegerField()
    bold_a = models.PositiveIntegerField()
    bold_b = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"style of vote {self.vote_id}"


class Snapshot(models.Model):
    """A computed leaderboard, kept so pages read instead of refitting."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    category = models.CharField(max_length=80, blank=True)
    style_control = models.BooleanField(default=False)
    ci = models.CharField(max_length=10, default="sandwich")
    votes = models.PositiveIntegerField()
    seconds = models.FloatField(help_text="Time to aggregate and fit.")
    rows = models.JSONField()
    extra = models.JSONField(default=dict, help_text="Style coefficients, matrices.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["category", "style_control", "ci", "-created_at"])]

    def __str__(self) -> str:
        return f"leaderboard {self.category or 'overall'} at {self.created_at:%Y-%m-%d %H:%M}"


class FlaggedVoter(models.Model):
    """A visitor whose votes disagree with everyone else's far beyond chance."""

    session_key = models.CharField(max_length=64, unique=True)
    votes = models.PositiveIntegerField()
    p_value = models.FloatField(help_text="Fisher's combined p-value of the visitor's votes.")
    evidence = models.JSONField(default=dict)
    flagged_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"voter {self.session_key[:8]}… p={self.p_value:.2g}"
