"""Saving the records of a vote file (`ratings.vote_files`) as battles and votes:
idempotent, batched, bad rows reported by line."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import DatabaseError, transaction
from django.utils import timezone

from arena.models import Answer, Battle, Side, Turn, Vote
from inference.models import Contender, Engine
from ratings.dedup import vote_prompt_keys
from ratings.models import VoteCategory, VotePrompt, VoteStyle
from ratings.vote_files import Record, RowError, records_read

BATCH = 5000


@dataclass
class ImportReport:
    added: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)


def _contenders(names: Iterable[str], cache: dict[str, int]) -> None:
    missing = sorted(set(names) - cache.keys())
    if not missing:
        return
    for c in Contender.objects.filter(name__in=missing):
        cache[c.name] = c.pk
    for name in set(missing) - cache.keys():
        # Known only from imported votes: on the leaderboard, never in battles.
        contender, _ = Contender.objects.get_or_create(
            name=name, defaults={"engine": Engine.NONE, "enabled": False}
        )
        cache[name] = contender.pk


def _battle(record: Record, source: str, a: int, b: int) -> tuple[Battle, Turn]:
    """Imported conversations become a battle, so they export like arena battles."""
    conv_a = record.conversation_a or []
    conv_b = record.conversation_b or []
    battle = Battle.objects.create(
        session_key=f"import:{source}"[:64],
        mode=Battle.Mode.ANONYMOUS if record.anonymous else Battle.Mode.NAMED,
        contender_a_id=a,
        contender_b_id=b,
        status=Battle.Status.VOTED,
    )
    users = [m for m in conv_a if m["role"] == "user"] or [{"role": "user", "content": ""}]
    turn = None
    for index, user in enumerate(users):
        turn = Turn.objects.create(battle=battle, index=index, user_text=user["content"])
        for side, conv, cid in ((Side.A, conv_a, a), (Side.B, conv_b, b)):
            replies = [m for m in conv if m["role"] == "assistant"]
            upto = _prefix_through_user(conv, index)
            Answer.objects.create(
                turn=turn,
                side=side,
                contender_id=cid,
                messages=upto,
                params={},
                text=replies[index]["content"] if index < len(replies) else "",
                status=Answer.Status.DONE,
                finish_reason="stop",
            )
    assert turn is not None
    return battle, turn


def _first_prompt(record: Record) -> str:
    if not (record.conversation_a and record.conversation_b):
        return ""
    users = [m["content"] for m in record.conversation_a if m["role"] == "user"]
    return users[0] if users and users[0].strip() else ""


def _prefix_through_user(conv: list[dict[str, str]], index: int) -> list[dict[str, str]]:
    seen = -1
    for i, message in enumerate(conv):
        if message["role"] == "user":
            seen += 1
            if seen == index:
                return conv[: i + 1]
    return list(conv)


def votes_import(
    *, path: Path, source: str, progress: Callable[[int, ImportReport], None] | None = None
) -> ImportReport:
    report = ImportReport()
    cache: dict[str, int] = {}
    batch: list[Record] = []
    rows = 0
    for item in records_read(path):
        rows += 1
        if isinstance(item, RowError):
            report.errors.append(item)
        else:
            batch.append(item)
        if len(batch) >= BATCH:
            _batch_save(batch, source, cache, report)
            batch = []
            if progress:
                progress(rows, report)
    if batch:
        _batch_save(batch, source, cache, report)
    if progress:
        progress(rows, report)
    return report


def _batch_save(
    batch: list[Record], source: str, cache: dict[str, int], report: ImportReport
) -> None:
    """One transaction per batch; should the database refuse it (a value the
    parser let through), each row is tried on its own, so one bad row costs
    itself and every other row, and every earlier batch, stays."""
    known = dict(cache)
    try:
        added, skipped = _write(batch, source, cache)
    except (DatabaseError, ValueError):
        cache.clear()
        cache.update(known)  # contenders made in the rolled-back batch are gone
    else:
        report.added += added
        report.skipped += skipped
        return
    for record in batch:
        known = dict(cache)
        try:
            added, skipped = _write([record], source, cache)
        except (DatabaseError, ValueError) as exc:
            cache.clear()
            cache.update(known)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report.errors.append(RowError(record.line, f"not saved: {reason}"))
        else:
            report.added += added
            report.skipped += skipped
    report.errors.sort(key=lambda e: e.line)


@transaction.atomic
def _write(batch: list[Record], source: str, cache: dict[str, int]) -> tuple[int, int]:
    """Save a batch's new votes: (added, skipped as already imported)."""
    skipped = 0
    ids = [r.external_id for r in batch]
    existing = set(
        Vote.objects.filter(source=source, external_id__in=ids).values_list(
            "external_id", flat=True
        )
    )
    fresh: dict[str, Record] = {}
    for record in batch:
        if record.external_id in existing or record.external_id in fresh:
            skipped += 1
        else:
            fresh[record.external_id] = record
    _contenders([n for r in fresh.values() for n in (r.model_a, r.model_b)], cache)
    now = timezone.now()
    votes = []
    for record in fresh.values():
        a, b = cache[record.model_a], cache[record.model_b]
        battle, turn = (
            _battle(record, source, a, b)
            if record.conversation_a and record.conversation_b
            else (None, None)
        )
        votes.append(
            Vote(
                battle=battle,
                turn=turn,
                contender_a_id=a,
                contender_b_id=b,
                choice=record.choice,
                anonymous=record.anonymous,
                source=source,
                external_id=record.external_id,
                created_at=record.created_at or now,
            )
        )
    created = Vote.objects.bulk_create(votes, batch_size=1000)
    categories = [
        VoteCategory(vote_id=vote.pk, name=name)
        for vote, record in zip(created, fresh.values(), strict=True)
        for name in sorted(record.categories)
    ]
    VoteCategory.objects.bulk_create(categories, batch_size=5000)
    styles = [
        VoteStyle(vote_id=vote.pk, **record.style)
        for vote, record in zip(created, fresh.values(), strict=True)
        if record.style
    ]
    VoteStyle.objects.bulk_create(styles, batch_size=5000)
    # Only votes that came with their conversation have a prompt to de-duplicate.
    prompts = [
        VotePrompt(vote_id=vote.pk, **vote_prompt_keys(vote.pk, first))
        for vote, record in zip(created, fresh.values(), strict=True)
        if (first := _first_prompt(record))
    ]
    VotePrompt.objects.bulk_create(prompts, batch_size=5000)
    return len(created), skipped
