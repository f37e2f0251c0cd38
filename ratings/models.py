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


class VotePrompt(models.Model):
    """The first prompt of a vote's conversation, normalised and hashed, for
    prompt de-duplication: of a prompt asked more than ARENA_DEDUP_THRESHOLD
    times, only a fixed hash-chosen sample of that many votes counts when the
    leaderboard de-duplicates. Votes imported without text have no row."""

    vote = models.OneToOneField(Vote, on_delete=models.CASCADE, related_name="prompt")
    prompt_hash = models.CharField(max_length=64, help_text="SHA-256 of the normalised prompt.")
    # Orders a prompt's votes for the sample: a hash of (prompt, vote), so the
    # same votes are kept on every refresh and on every database.
    sample_key = models.CharField(max_length=16)
    duplicate = models.BooleanField(
        default=False, help_text="Beyond its prompt's sample: left out when de-duplicating."
    )

    class Meta:
        indexes = [
            models.Index(fields=["prompt_hash", "sample_key"]),
            models.Index(
                fields=["duplicate"],
                condition=models.Q(duplicate=True),
                name="voteprompt_duplicate",
            ),
        ]

    def __str__(self) -> str:
        return f"prompt {self.prompt_hash[:10]} of vote {self.vote_id}"


class Snapshot(models.Model):
    """A computed leaderboard, kept so pages read instead of refitting."""

    class Kind(models.TextChoices):
        BOARD = "board", "the public board"
        FILTERED = "filtered", "a filtered run"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Pages read only "board" snapshots: a run over some sources or with the
    # flagged votes is kept (with its filter) but never shown as the board.
    kind = models.CharField(max_length=10, choices=Kind.choices)
    filter = models.JSONField(default=dict, help_text="The vote filter of a filtered run.")
    category = models.CharField(max_length=80, blank=True)
    style_control = models.BooleanField(default=False)
    dedup = models.BooleanField(default=True, help_text="Frequent prompts down-sampled.")
    ci = models.CharField(max_length=10, default="sandwich")
    votes = models.PositiveIntegerField()
    seconds = models.FloatField(help_text="Time to aggregate and fit.")
    rows = models.JSONField()
    extra = models.JSONField(default=dict, help_text="Style coefficients, matrices, Elo trend.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["kind", "category", "style_control", "ci", "dedup", "-created_at"],
                name="snapshot_board_latest",
            )
        ]

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
