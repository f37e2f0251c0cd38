"""Reading public vote releases into plain records. No Django here.

Formats: LMArena's arena-human-preference-55k / 100k / 140k and
chatbot_arena_conversations, FastChat's clean_battle JSON, and this project's
own `arena` exports; as CSV, JSON (a list), JSONL or Parquet, optionally
gzipped. A bad row becomes a RowError with its line number; the rest go on.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ratings.categories import flatten_tags, imported_categories

WINNERS = {
    "model_a": "a",
    "model_b": "b",
    "tie": "tie",
    "both_bad": "both_bad",
    "tie (bothbad)": "both_bad",
    "bothbad": "both_bad",
    "a": "a",
    "b": "b",
}

csv.field_size_limit(sys.maxsize)


@dataclass
class Record:
    line: int
    external_id: str
    model_a: str
    model_b: str
    choice: str
    anonymous: bool = True
    created_at: datetime | None = None
    categories: set[str] = field(default_factory=set)
    conversation_a: list[dict[str, str]] | None = None
    conversation_b: list[dict[str, str]] | None = None
    style: dict[str, int] | None = None


@dataclass
class RowError:
    line: int
    message: str


def _open(path: Path) -> io.BufferedReader | gzip.GzipFile:
    raw = path.open("rb")
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw)
    return raw


def _kind(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    ext = suffixes[-1].lower() if suffixes else ""
    if ext in (".csv", ".tsv"):
        return "csv"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".json":
        return "json"
    if ext == ".parquet":
        return "parquet"
    raise ValueError(
        f"{path.name}: unknown format (use .csv, .json, .jsonl or .parquet, optionally .gz)"
    )


def raw_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, row as a dict); a row that cannot be parsed is a RowError."""
    kind = _kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                number += 1
                yield number, row
        return
    with _open(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="")
        if kind == "csv":
            reader = csv.DictReader(text, delimiter="\t" if ".tsv" in path.suffixes else ",")
            for row in reader:
                yield reader.line_num, dict(row)
        elif kind == "jsonl":
            for number, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    yield number, {"__error__": f"not JSON: {exc}"}
                    continue
                yield number, row if isinstance(row, dict) else {"__error__": "not an object"}
        else:
            data = json.load(text)
            if isinstance(data, dict):  # {"data": [...]} or column-oriented exports
                data = data.get("data") or data.get("rows") or []
            for number, row in enumerate(data, start=1):
                yield number, row if isinstance(row, dict) else {"__error__": "not an object"}


def _json_field(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _conversation(value: Any) -> list[dict[str, str]] | None:
    value = _json_field(value)
    if value is None or value == "":
        return None
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in value
    ):
        raise ValueError("conversation must be a list of {role, content} messages")
    return [
        {"role": str(m.get("role", "user")), "content": _text(m["content"], "conversation")}
        for m in value
    ]


def _from_lists(prompts: Any, responses: Any) -> list[dict[str, str]] | None:
    """55k format: `prompt` and `response_*` are JSON lists of strings."""
    prompts, responses = _json_field(prompts), _json_field(responses)
    if not isinstance(prompts, list) or not isinstance(responses, list):
        return None
    out: list[dict[str, str]] = []
    for user, answer in zip(prompts, responses, strict=False):
        out.append({"role": "user", "content": _text(str(user or ""), "prompt")})
        out.append({"role": "assistant", "content": _text(str(answer or ""), "response")})
    return out


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "1.0"}


def _winner(row: dict[str, Any]) -> str:
    if "winner" in row and row["winner"] not in (None, ""):
        choice = WINNERS.get(str(row["winner"]).strip().lower())
        if choice is None:
            raise ValueError(f"unknown winner {row['winner']!r}")
        return choice
    flags = [k for k in ("winner_model_a", "winner_model_b", "winner_tie") if _truthy(row.get(k))]
    if len(flags) != 1:
        raise ValueError("no winner: expected `winner` or one of winner_model_a/_b/_tie")
    return {"winner_model_a": "a", "winner_model_b": "b", "winner_tie": "tie"}[flags[0]]


# Counts go into 32-bit integer columns (PostgreSQL's `integer`).
MAX_COUNT = 2**31 - 1


def _timestamp(value: Any) -> datetime | None:
    """A row's time: a datetime, an ISO string or Unix seconds. Beyond what a
    datetime holds (year 99999, 1e20 s, NaN) is a bad row, not a failed import."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = None
    try:
        if seconds is not None:
            return datetime.fromtimestamp(seconds, tz=UTC)
        parsed = datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        raise ValueError(
            f"timestamp {str(value)[:40]!r} is not a date this side of year 10000"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _count(value: Any, what: str) -> int:
    """A whole number of things (turns, tokens, headers): finite, not
    negative, within the database's integer."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {str(value)[:40]!r} is not a number") from None
    if not math.isfinite(number) or number < 0 or number > MAX_COUNT:
        raise ValueError(f"{what} {str(value)[:40]!r} is not a count from 0 to {MAX_COUNT}")
    return int(number)


def _text(value: str, what: str) -> str:
    # PostgreSQL stores neither NUL nor a lone surrogate: refused by row here
    # rather than by the database for the whole batch.
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} contains a lone surrogate") from None
    return value


def _style(row: dict[str, Any]) -> dict[str, int] | None:
    meta = _json_field(row.get("conv_metadata"))
    if not isinstance(meta, dict) or "sum_assistant_a_tokens" not in meta:
        return None

    def total(key: str) -> int:
        value = meta.get(key) or {}
        parts = value.values() if isinstance(value, dict) else [value or 0]
        return _count(sum(_count(v, key) for v in parts), key)

    return {
        "tokens_a": _count(meta["sum_assistant_a_tokens"], "sum_assistant_a_tokens"),
        "tokens_b": _count(meta["sum_assistant_b_tokens"], "sum_assistant_b_tokens"),
        "headers_a": total("header_count_a"),
        "headers_b": total("header_count_b"),
        "lists_a": total("list_count_a"),
        "lists_b": total("list_count_b"),
        "bold_a": total("bold_count_a"),
        "bold_b": total("bold_count_b"),
    }


def record_parse(line: int, row: dict[str, Any]) -> Record:
    if "__error__" in row:
        raise ValueError(row["__error__"])
    model_a = _text(str(row.get("model_a") or "").strip(), "model_a")
    model_b = _text(str(row.get("model_b") or "").strip(), "model_b")
    if not model_a or not model_b:
        raise ValueError("model_a and model_b are required")
    if model_a == model_b:
        raise ValueError(f"a model against itself ({model_a}) says nothing about ratings")
    choice = _winner(row)
    conv_a = _conversation(row.get("conversation_a")) or _from_lists(
        row.get("prompt"), row.get("response_a")
    )
    conv_b = _conversation(row.get("conversation_b")) or _from_lists(
        row.get("prompt"), row.get("response_b")
    )
    tags = {k[len("category_tag.") :]: v for k, v in row.items() if k.startswith("category_tag.")}
    nested = _json_field(row.get("category_tag"))
    if isinstance(nested, dict):
        tags.update(flatten_tags(nested))
    categories = imported_categories(tags)
    own = _json_field(row.get("categories"))  # this project's own `arena` exports
    if isinstance(own, list):
        categories.update(_text(str(c)[:80], "category") for c in own if c)
    language = row.get("language")
    if isinstance(language, str) and language.strip():
        categories.add(f"language:{_language_code(_text(language, 'language'))}")
    turns = row.get("turn")
    if turns not in (None, "") and _count(turns, "turn") > 1:
        categories.add("multi_turn")
    anonymous = row.get("anony")
    external = _text(str(row.get("question_id") or row.get("id") or "").strip(), "id")
    if not external:
        digest = json.dumps(row, sort_keys=True, default=str).encode()
        external = "sha1:" + hashlib.sha1(digest).hexdigest()
    return Record(
        line=line,
        external_id=external[:200],
        model_a=model_a[:100],
        model_b=model_b[:100],
        choice=choice,
        anonymous=True if anonymous in (None, "") else _truthy(anonymous),
        created_at=_timestamp(row.get("tstamp") or row.get("timestamp")),
        categories=categories,
        conversation_a=conv_a,
        conversation_b=conv_b,
        style=_style(row),
    )


_LANGUAGES = {
    "english": "en",
    "chinese": "zh",
    "russian": "ru",
    "german": "de",
    "french": "fr",
    "spanish": "es",
    "japanese": "ja",
    "korean": "ko",
    "portuguese": "pt",
    "italian": "it",
    "polish": "pl",
    "vietnamese": "vi",
    "arabic": "ar",
    "turkish": "tr",
    "dutch": "nl",
}


def _language_code(name: str) -> str:
    name = name.strip()
    return _LANGUAGES.get(name.lower(), name.lower() if len(name) <= 3 else name.lower()[:20])


def records_read(path: Path) -> Iterator[Record | RowError]:
    for line, row in raw_rows(path):
        try:
            yield record_parse(line, row)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            yield RowError(line, str(exc))
