"""Preference exports: votes -> TRL / KTO / LMArena records, streamed to files.

Votes are read in chunks from a server-side cursor and their battles' answers
fetched per chunk, so memory stays flat whatever the number of votes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from arena.models import Answer, Vote
from ratings.models import VoteCategory
from ratings.preference import BUILDERS, BattleData, Options

CHUNK = 5000
T = TypeVar("T")
ROW_GROUP = 4_000  # rows buffered per Parquet row group: bounds the memory
_MSGS = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_STR = pa.string()
_PASSAGES = pa.list_(
    pa.struct(
        [("turn", pa.int64()), ("document", _STR), ("source", _STR), ("section", _STR),
         ("text", _STR), ("score", pa.float64())]
    )
)  # fmt: skip
SCHEMAS = {
    "trl": pa.schema([("prompt", _MSGS), ("chosen", _MSGS), ("rejected", _MSGS)]),
    "trl-text": pa.schema([("prompt", _STR), ("chosen", _STR), ("rejected", _STR)]),
    "kto": pa.schema([("prompt", _MSGS), ("completion", _MSGS), ("label", pa.bool_())]),
    "arena": pa.schema(
        [
            ("question_id", pa.string()), ("model_a", pa.string()), ("model_b", pa.string()),
            ("winner", pa.string()), ("judge", pa.string()), ("conversation_a", _MSGS),
            ("conversation_b", _MSGS), ("turn", pa.int64()), ("anony", pa.bool_()),
            ("language", _STR), ("tstamp", pa.float64()), ("categories", pa.list_(_STR)),
            ("passages_a", _PASSAGES), ("passages_b", _PASSAGES),
        ]
    ),
}  # fmt: skip


# A spreadsheet reads a cell starting with one of these as a formula
# (=HYPERLINK(...) in a contender name from an imported file): quoted.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value safe to write into a CSV cell that a spreadsheet will open."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: csv_cell(value) for key, value in row.items()}


@dataclass(frozen=True)
class ExportFilter:
    since: datetime | None = None
    until: datetime | None = None
    contenders: tuple[str, ...] = ()
    category: str = ""
    language: str = ""
    include_named: bool = False
    include_flagged: bool = False
    min_turns: int = 1
    max_per_prompt: int | None = None
    vote_ids: tuple[int, ...] | None = None  # e.g. the votes an admin selected

    def queryset(self) -> QuerySet[Vote]:
        # Failed answers never make training data, even when flagged votes do.
        votes = Vote.objects.counting(
            include_named=self.include_named,
            include_over_cap=self.include_flagged,
            include_leaks=self.include_flagged,
            include_flagged_voters=self.include_flagged,
        ).filter(battle__isnull=False, turn__isnull=False)
        if self.vote_ids is not None:
            votes = votes.filter(id__in=self.vote_ids)
        if self.since:
            votes = votes.filter(created_at__gte=self.since)
        if self.until:
            votes = votes.filter(created_at__lt=self.until)
        if self.contenders:
            votes = votes.filter(
                Q(contender_a__name__in=self.contenders) | Q(contender_b__name__in=self.contenders)
            )
        for tag in (self.category, f"language:{self.language}" if self.language else ""):
            if tag:
                votes = votes.filter(id__in=VoteCategory.objects.filter(name=tag).values("vote_id"))
        if self.min_turns > 1:
            votes = votes.filter(turn__index__gte=self.min_turns - 1)
        return votes.order_by("id")


@dataclass
class ExportReport:
    votes: int = 0
    records: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped_duplicate_prompt: int = 0
    contenders: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    files: list[Path] = field(default_factory=list)


class _Writer:
    """One output file: JSONL (optionally gzipped) or Parquet in row groups."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parquet = path.suffix == ".parquet"
        self.buffer: list[dict[str, Any]] = []
        if self.parquet:
            self.pq = pq.ParquetWriter(path, SCHEMAS[fmt], compression="zstd")
        else:
            # Closed in close(): the writer outlives any one block.
            if path.suffix == ".gz":
                self.text: IO[str] = gzip.open(path, "wt", encoding="utf-8")  # noqa: SIM115
            else:
                self.text = path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if not self.parquet:
            self.text.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        self.buffer.append(record)
        if len(self.buffer) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.parquet and self.buffer:
            self.pq.write_table(pa.Table.from_pylist(self.buffer, schema=SCHEMAS[self.fmt]))
            self.buffer = []

    def close(self) -> None:
        if self.parquet:
            self.flush()
            self.pq.close()
        else:
            self.text.close()


def split_paths(path: Path, test_share: float) -> dict[str, Path]:
    if test_share <= 0:
        return {"all": path}
    name = path.name
    stem, dot, rest = name.partition(".")
    return {part: path.with_name(f"{stem}-{part}{dot}{rest}") for part in ("train", "test")}


def _in_test(battle_id: str, share: float) -> bool:
    # By battle, deterministic: a battle is on one side of the split, always.
    digest = hashlib.sha256(battle_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def _chunks(it: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(it, size)):
        yield chunk


VOTE_FIELDS = (
    "id", "battle_id", "turn__index", "choice", "anonymous", "created_at",
    "session_key", "external_id", "contender_a__name", "contender_b__name",
)  # fmt: skip


_ANSWERS_PG = """
    SELECT t.battle_id, t.index, t.user_text, a.side, a.text, a.passages,
           CASE WHEN t.index = 0 THEN a.messages -> 0 END
    FROM arena_answer a JOIN arena_turn t ON t.id = a.turn_id
    WHERE t.battle_id = ANY(%s) AND NOT a.superseded
"""


def _answer_rows(battle_ids: list[Any]) -> Iterator[tuple[Any, ...]]:
    """(battle, turn index, user text, side, answer text, passages, first message if turn 0)."""
    if connection.vendor == "postgresql":
        # One array parameter instead of thousands of bound values: a third
        # less time per chunk at a million votes (bench/export.py).
        with connection.cursor() as cursor:
            cursor.execute(_ANSWERS_PG, [battle_ids])
            for *row, passages, first in cursor.fetchall():
                # Django leaves jsonb undecoded for its JSONField; raw SQL decodes here.
                yield (*row, _json(passages), _json(first))
        return
    yield from Answer.objects.filter(turn__battle_id__in=battle_ids, superseded=False).values_list(
        "turn__battle_id",
        "turn__index",
        "turn__user_text",
        "side",
        "text",
        "passages",
        "messages__0",
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _category_rows(vote_ids: list[int]) -> Iterator[tuple[int, str]]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT vote_id, name FROM ratings_votecategory WHERE vote_id = ANY(%s)", [vote_ids]
            )
            yield from cursor.fetchall()
        return
    yield from VoteCategory.objects.filter(vote_id__in=vote_ids).values_list("vote_id", "name")


def battles_load(votes: list[dict[str, Any]], salt: str) -> Iterator[tuple[str, BattleData]]:
    """(battle id, BattleData) for a chunk of vote rows, in two queries."""
    battle_ids = [v["battle_id"] for v in votes]
    answers: dict[Any, dict[int, dict[str, Any]]] = defaultdict(dict)
    systems: dict[tuple[Any, str], str] = {}
    passages: dict[tuple[Any, str], list[dict[str, Any]]] = defaultdict(list)
    for battle_id, index, user, side, text, given, first in _answer_rows(battle_ids):
        turn = answers[battle_id].setdefault(index, {"user": user})
        turn[side] = text
        for p in given or ():
            passages[(battle_id, side)].append(_passage(index, p))
        if index == 0 and isinstance(first, dict) and first.get("role") == "system":
            systems[(battle_id, side)] = first.get("content", "")
    categories: dict[int, list[str]] = defaultdict(list)
    for vote_id, name in _category_rows([v["id"] for v in votes]):
        categories[vote_id].append(name)
    judges: dict[str, str] = {}
    for v in votes:
        turns = answers.get(v["battle_id"], {})
        upto = range(v["turn__index"] + 1)
        if any(i not in turns or "a" not in turns[i] or "b" not in turns[i] for i in upto):
            continue
        cats = sorted(categories.get(v["id"], []))
        language = next((c.split(":", 1)[1] for c in cats if c.startswith("language:")), "")
        key = v["session_key"]
        if key not in judges:
            judges[key] = hashlib.sha256((salt + key).encode()).hexdigest()[:16] if key else ""
        judge = judges[key]
        yield (
            str(v["battle_id"]),
            BattleData(
                question_id=v["external_id"] or str(v["battle_id"]),
                model_a=v["contender_a__name"],
                model_b=v["contender_b__name"],
                choice=v["choice"],
                system_a=systems.get((v["battle_id"], "a"), ""),
                system_b=systems.get((v["battle_id"], "b"), ""),
                users=[turns[i]["user"] for i in upto],
                answers_a=[turns[i]["a"] for i in upto],
                answers_b=[turns[i]["b"] for i in upto],
                anonymous=v["anonymous"],
                tstamp=v["created_at"].timestamp(),
                language=language,
                categories=[c for c in cats if not c.startswith("language:")],
                judge=judge,
                passages_a=_upto(passages.get((v["battle_id"], "a"), []), v["turn__index"]),
                passages_b=_upto(passages.get((v["battle_id"], "b"), []), v["turn__index"]),
            ),
        )


def _passage(turn: int, p: dict[str, Any]) -> dict[str, Any]:
    return {
        "turn": turn,
        "document": str(p.get("document", "")),
        "source": str(p.get("source", "")),
        "section": str(p.get("section", "")),
        "text": str(p.get("text", "")),
        "score": float(p.get("score", 0.0)),
    }


def _upto(passages: list[dict[str, Any]], last_turn: int) -> list[dict[str, Any]]:
    return sorted((p for p in passages if p["turn"] <= last_turn), key=lambda p: p["turn"])


def preferences_export(
    *,
    fmt: str,
    path: Path,
    export_filter: ExportFilter,
    options: Options,
    test_share: float = 0.0,
    licence: str = "",
    progress: Callable[[ExportReport], None] | None = None,
) -> ExportReport:
    if fmt not in BUILDERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(BUILDERS)}")
    if not path.name.endswith((".jsonl", ".jsonl.gz", ".parquet")):
        raise ValueError(f"{path.name}: the file must end in .jsonl, .jsonl.gz or .parquet")
    paths = split_paths(path, test_share)
    writers = {part: _Writer(p, fmt) for part, p in paths.items()}
    report = ExportReport(files=list(paths.values()))
    try:
        for battle_id, records in records_iter(fmt, export_filter, options, report, progress):
            part = "all"
            if test_share > 0:
                part = "test" if _in_test(battle_id, test_share) else "train"
            for record in records:
                writers[part].write(record)
                report.records[part] += 1
    finally:
        for writer in writers.values():
            writer.close()
    card_write(path, fmt, export_filter, options, report, licence, test_share)
    return report


def records_iter(
    fmt: str,
    export_filter: ExportFilter,
    options: Options,
    report: ExportReport,
    progress: Callable[[ExportReport], None] | None = None,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(battle id, its records) for every exported vote, streamed chunk by chunk."""
    build = BUILDERS[fmt]
    salt = secrets.token_hex(16)  # visitor ids are hashed per export: not linkable across
    per_prompt: dict[int, int] = defaultdict(int)
    rows = export_filter.queryset().values(*VOTE_FIELDS).iterator(chunk_size=CHUNK)
    for chunk in _chunks(rows, CHUNK):
        for battle_id, battle in battles_load(chunk, salt):
            report.votes += 1
            if export_filter.max_per_prompt is not None:
                key = hash(battle.users[0])
                if per_prompt[key] >= export_filter.max_per_prompt:
                    report.skipped_duplicate_prompt += 1
                    continue
                per_prompt[key] += 1
            report.contenders.update((battle.model_a, battle.model_b))
            when = datetime.fromtimestamp(battle.tstamp, tz=UTC)
            report.first = min(report.first or when, when)
            report.last = max(report.last or when, when)
            yield battle_id, build(battle, options)
        if progress:
            progress(report)


def card_path(path: Path) -> Path:
    return path.with_name(path.name.split(".")[0] + ".card.md")


def card_write(
    path: Path,
    fmt: str,
    export_filter: ExportFilter,
    options: Options,
    report: ExportReport,
    licence: str,
    test_share: float,
) -> Path:
    """A dataset card beside the export: what is in it and how it was chosen."""
    filters = {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in asdict(export_filter).items()
    }
    opts = {k: v for k, v in asdict(options).items() if k != "render"}
    lines = [
        "---",
        f"license: {licence or 'unspecified'}",
        f"format: {fmt}",
        f"created: {timezone.now().isoformat()}",
        "---",
        f"# Arena preference data ({fmt})",
        "",
        f"- files: {', '.join(p.name for p in report.files)}",
        f"- records: {json.dumps(dict(report.records))} from {report.votes} votes",
        f"- skipped as duplicate prompts: {report.skipped_duplicate_prompt}",
        f"- date range: {report.first.isoformat() if report.first else '-'} to "
        f"{report.last.isoformat() if report.last else '-'}",
        f"- contenders ({len(report.contenders)}): {', '.join(sorted(report.contenders))}",
        f"- filters: {json.dumps(filters)}",
        f"- options: {json.dumps(opts)}",
        f"- train/test split by battle: {test_share if test_share > 0 else 'none'}",
        "- privacy: no IP addresses or session keys; visitor ids (`judge`) are salted hashes "
        "that differ from one export to the next.",
        f"- licence: {licence or 'unspecified (set --licence or ARENA_EXPORT_LICENCE)'}",
        "",
    ]
    card = card_path(path)
    card.write_text("\n".join(lines), encoding="utf-8")
    return card
