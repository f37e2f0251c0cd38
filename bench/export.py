"""Preference export at scale: 1M synthetic voted battles with conversations in PostgreSQL.

    .venv/bin/python bench/export.py [--votes 1000000]

Loads the battles (one turn each, two answers, a vote) into a scratch
database (arena_bench_export_<pid>, dropped at the end) with COPY, then runs
`manage.py export_preferences --format trl` to JSONL and to Parquet as child
processes, printing each one's wall time and peak RSS (targets: < 60 s and
< 300 MB each), and the records per second.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "question",
    "good",
    "bad",
    "long",
    "short",
    "why",
    "how",
    "what",
    "when",
    "arena",
    "vote",
]


BATTLE_COLUMNS = "id, session_key, mode, contender_a_id, contender_b_id, status, created_at"
ANSWER_COLUMNS = (
    "id, turn_id, side, attempt, superseded, contender_id, messages, params, text, status, "
    "finish_reason, prompt_tokens, tokens, ttft_ms, duration_ms, error_code, error_message, "
    "created_at, started_at, finished_at"
)
VOTE_COLUMNS = (
    "id, battle_id, turn_id, contender_a_id, contender_b_id, choice, session_key, anonymous, "
    "source, external_id, over_cap, identity_leak, leak_evidence, created_at"
)


def log(msg: str) -> None:
    print(msg, flush=True)


def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def load(n: int) -> None:
    import django

    django.setup()
    import numpy as np
    from django.core.management import call_command
    from django.db import connection

    from inference.models import Contender, Engine

    call_command("migrate", verbosity=0)
    contenders = Contender.objects.bulk_create(
        [Contender(name=f"model-{i:02d}", engine=Engine.NONE) for i in range(20)]
    )
    ids = [c.pk for c in contenders]
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, n)
    b = (a + rng.integers(1, 20, n)) % 20
    choice = rng.choice(["a", "b", "tie", "both_bad"], n, p=[0.4, 0.4, 0.1, 0.1])
    lengths = rng.integers(5, 60, (n, 3))
    when = "2026-01-01 00:00:00+00"
    started = time.perf_counter()
    chunk = 100_000
    with connection.cursor() as cursor:
        pg = cursor.connection
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            battles, turns, answers, votes = (io.StringIO() for _ in range(4))
            for i in range(start, stop):
                bid = uuid.UUID(int=i + 1)
                ca, cb = ids[a[i]], ids[b[i]]
                user = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(lengths[i, 0]))
                text_a = " ".join(WORDS[(i * 3 + k) % len(WORDS)] for k in range(lengths[i, 1]))
                text_b = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(lengths[i, 2]))
                battles.write(f"{bid}\tvisitor{i % 5000}\tanonymous\t{ca}\t{cb}\tvoted\t{when}\n")
                turns.write(f"{i + 1}\t{bid}\t0\t{user}\t{when}\n")
                msgs = json.dumps([{"role": "user", "content": user}])
                for k, (side, cid, text) in enumerate((("a", ca, text_a), ("b", cb, text_b))):
                    answers.write(
                        f"{2 * i + k + 1}\t{i + 1}\t{side}\t0\tf\t{cid}\t{msgs}\t{{}}\t{text}\t"
                        f"done\tstop\t\\N\t{lengths[i, 1 + k]}\t\\N\t\\N\t\t\t{when}\t\\N\t\\N\n"
                    )
                votes.write(
                    f"{i + 1}\t{bid}\t{i + 1}\t{ca}\t{cb}\t{choice[i]}\tvisitor{i % 5000}\tt\t"
                    f"arena\t\tf\tf\t\t{when}\n"
                )
            for table, columns, buf in (
                ("arena_battle", BATTLE_COLUMNS, battles),
                ("arena_turn", "id, battle_id, index, user_text, created_at", turns),
                ("arena_answer", ANSWER_COLUMNS, answers),
                ("arena_vote", VOTE_COLUMNS, votes),
            ):
                with pg.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    copy.write(buf.getvalue())
            log(f"  loaded {stop:,} battles ({time.perf_counter() - started:.0f} s)")
        for table in ("arena_turn", "arena_answer", "arena_vote"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: E501
            )
        cursor.execute("ANALYZE")
    connection.close()


def export(out: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Run the export command; its wall time, peak RSS (sampled every 20 ms), output.

    (ru_maxrss of a child would count the pages of this big process it was
    forked from, before exec: polling the child itself is the honest figure.)"""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "export_preferences", "--format", "trl", "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    assert proc.stdout is not None
    said = proc.stdout.read().strip()
    if proc.returncode:
        raise RuntimeError(f"export failed ({proc.returncode}): {said}")
    return seconds, peak / 2**20, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    args = parser.parse_args()
    db = f"arena_bench_export_{os.getpid()}"
    psql(f"CREATE DATABASE {db}")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}")
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
    try:
        log(f"loading {args.votes:,} voted battles with conversations into PostgreSQL")
        load(args.votes)
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("prefs.jsonl", "prefs.parquet"):
                out = Path(tmp) / name
                log(f"exporting trl -> {name}")
                seconds, peak_mb, said = export(out, env)
                log(f"  {said}")
                records = int(said.split()[0])
                log(
                    f"  {name}: {seconds:.1f} s (target < 60 s), peak RSS {peak_mb:.0f} MB "
                    f"(target < 300 MB), {records / seconds:,.0f} records/s, "
                    f"{out.stat().st_size / 1e6:.0f} MB on disk"
                )
    finally:
        psql(f"DROP DATABASE IF EXISTS {db}")


if __name__ == "__main__":
    main()
