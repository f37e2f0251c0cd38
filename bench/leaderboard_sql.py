"""The leaderboard's SQL side on PostgreSQL, measured.

    .venv/bin/python bench/leaderboard_sql.py [--votes 1000000] [--contenders 100]

Creates a scratch database (arena_bench_sql_<pid>, dropped at the end), then:
1. loads N synthetic votes between M contenders with COPY and times the GROUP BY
   aggregation that feeds the fit (pair_counts_get), and the whole board with
   sandwich intervals (aggregation + fit), with peak memory;
2. imports the 135,634 real LMArena votes with import_votes and times the whole
   board with sandwich intervals, aggregation included (target < 0.5 s).
Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "data" / "arena_hp140k_votes.csv.gz"
sys.path.insert(0, str(ROOT))
T = TypeVar("T")


# session_key, anonymous, source, external_id, over_cap, identity_leak, leak_evidence, created_at
FIXED = "\t\tt\tbench\t\tf\tf\t\t2026-01-01 00:00:00+00\n"


def log(msg: str) -> None:
    print(msg, flush=True)


def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(fn: Callable[[], T], repeat: int = 3) -> tuple[float, T]:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--contenders", type=int, default=100)
    args = parser.parse_args()
    db = f"arena_bench_sql_{os.getpid()}"
    psql(f"CREATE DATABASE {db}")
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{db}"
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
    try:
        run(args.votes, args.contenders)
    finally:
        from django.db import connections

        connections.close_all()
        psql(f"DROP DATABASE IF EXISTS {db}")


def run(n_votes: int, n_contenders: int) -> None:
    import django
    import numpy as np

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from inference.models import Contender, Engine
    from ratings.services import leaderboard_compute

    call_command("migrate", verbosity=0)
    log(f"PostgreSQL, {n_votes:,} synthetic votes between {n_contenders} contenders")
    contenders = Contender.objects.bulk_create(
        [Contender(name=f"model-{i:03d}", engine=Engine.NONE) for i in range(n_contenders)]
    )
    ids = np.array([c.pk for c in contenders])
    rng = np.random.default_rng(0)
    strength = rng.normal(0, 1, n_contenders)
    a = rng.integers(0, n_contenders, n_votes)
    b = (a + rng.integers(1, n_contenders, n_votes)) % n_contenders
    p = 1 / (1 + np.exp(strength[b] - strength[a]))
    r = rng.random(n_votes)
    choice = np.where(
        r < 0.1, "tie", np.where(r < 0.15, "both_bad", np.where(rng.random(n_votes) < p, "a", "b"))
    )
    started = time.perf_counter()
    columns = "contender_a_id, contender_b_id, choice, session_key, anonymous, source, external_id, over_cap, identity_leak, leak_evidence, created_at"  # noqa: E501
    chunk = 200_000
    with connection.cursor() as cursor:
        pg = cursor.connection
        with pg.cursor().copy(f"COPY arena_vote ({columns}) FROM STDIN") as copy:
            for start in range(0, n_votes, chunk):
                buf = io.StringIO()
                for i in range(start, min(n_votes, start + chunk)):
                    buf.write(f"{ids[a[i]]}\t{ids[b[i]]}\t{choice[i]}{FIXED}")
                copy.write(buf.getvalue())
                log(f"  loaded {min(n_votes, start + chunk):,} votes")
        cursor.execute("ANALYZE arena_vote")
    log(f"  load took {time.perf_counter() - started:.1f} s")

    from ratings.selectors import VoteFilter, pair_counts_get

    secs, agg = best_of(lambda: pair_counts_get(VoteFilter()))
    log(
        f"SQL aggregation (GROUP BY over {n_votes:,} votes): {secs:.3f} s, "
        f"{agg.table.a.size:,} rows returned, peak RSS {peak_rss_mb():.0f} MB"
    )
    secs, snap = best_of(lambda: leaderboard_compute(save=False))
    log(
        f"full board, sandwich CI, aggregation included: {secs:.3f} s ({len(snap.rows)} contenders)"
    )
    secs, _ = best_of(lambda: leaderboard_compute(ci="bootstrap", save=False), repeat=1)
    log(f"full board, 100-round bootstrap CI, aggregation included: {secs:.3f} s")

    call_command("flush", verbosity=0, interactive=False)
    log(f"\nreal votes: import_votes {REAL.name}")
    started = time.perf_counter()
    call_command("import_votes", str(REAL), stdout=io.StringIO())
    log(f"  import took {time.perf_counter() - started:.1f} s")
    secs, snap = best_of(lambda: leaderboard_compute(save=False), repeat=5)
    log(
        f"135k real votes, full board, sandwich CI, SQL aggregation included: {secs:.3f} s "
        f"(target < 0.5 s; arena-rank takes about 12 s); {len(snap.rows)} contenders"
    )
    log(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
