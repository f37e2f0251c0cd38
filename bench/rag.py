"""RAG benchmark: ingestion throughput, query embedding, retrieval latency.

    .venv/bin/python bench/rag.py [--database-url URL] [--sizes 10000,100000] [--queries 200]

Runs on a scratch SQLite file by default; with --database-url (or DATABASE_URL)
on a scratch database `arena_bench_rag_<pid>` of that PostgreSQL server,
dropped at the end. It measures, in one run:

- ingestion: real English text (this project's README and docs, and the
  standard library's documentation rendered by pydoc) through `paths_ingest`,
  in chunks/s and documents/s, with the embedding's share of the time;
- the query embedding of 200 questions, p50/p99 (target < 20 ms);
- retrieval at 10k and 100k chunks, excluding the query embedding, p50/p99
  for dense-only, BM25-only and fused (target p99 < 50 ms at 100k). These
  knowledge bases are written directly: varied generated text, and random
  unit vectors as embeddings (embedding 100k chunks on CPU would take many
  minutes and measure the model again, not retrieval);
- the cache build time per knowledge base, and the process's RSS as it goes.
"""

from __future__ import annotations

import argparse
import os
import pydoc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STDLIB = (  # noqa: SIM905
    "argparse asyncio collections concurrent.futures contextlib csv dataclasses datetime "
    "decimal email functools hashlib heapq http.client http.server itertools json logging "
    "multiprocessing pathlib pickle queue random re shutil socket sqlite3 statistics string "
    "subprocess tarfile tempfile textwrap threading typing unittest urllib.request uuid "
    "xml.etree.ElementTree zipfile"
).split()
QUESTIONS = [
    "How do I {verb} a {noun} in Python?",
    "What is the difference between a {noun} and a {other}?",
    "Why does my {noun} fail to {verb}?",
    "Which option controls the {noun} timeout?",
    "Can I {verb} the {noun} without a {other}?",
]
VERBS = "open close parse read write sort compress encode decode start stop copy".split()  # noqa: SIM905
NOUNS = "file socket thread queue archive message logger path date process lock table".split()  # noqa: SIM905


def log(msg: str = "", end: str = "\n") -> None:
    print(msg, end=end, flush=True)


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 1e6)


def percentiles(samples: list[float]) -> tuple[float, float]:
    import numpy as np

    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


# --- database -----------------------------------------------------------------------


def scratch_postgres(url: str) -> tuple[str, Callable[[], None]]:
    import psycopg

    name = f"arena_bench_rag_{os.getpid()}"
    parsed = urlparse(url)
    admin_url = urlunparse(parsed._replace(scheme="postgresql"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return urlunparse(parsed._replace(path=f"/{name}")), drop


# --- ingestion ----------------------------------------------------------------------


def real_text(folder: Path) -> int:
    """Writes the project's docs and pydoc's text of some stdlib modules; their bytes."""
    total = 0
    for source in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if source.is_file():
            (folder / source.name).write_bytes(source.read_bytes())
            total += source.stat().st_size
    for name in STDLIB:
        try:
            text = pydoc.render_doc(name, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
        except Exception:  # a module missing here: fewer documents, same measure
            continue
        path = folder / f"{name}.txt"
        path.write_text(text)
        total += len(text.encode())
    return total


def bench_ingest() -> None:
    from inference.rag import embeddings
    from inference.rag.ingest import IngestProgress, knowledge_base_get_or_create, paths_ingest

    spent = {"embed": 0.0, "chunks": 0}
    original = embeddings.embed_texts

    def timed_embed(texts: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = original(texts, *args, **kwargs)
        spent["embed"] += time.perf_counter() - started
        spent["chunks"] += len(texts)
        return out

    class Shown(IngestProgress):
        def file_started(self, index: int, total: int, source: str) -> None:
            log(f"\r  ingesting {index}/{total} {source[:40]:<40}", end="")

    embeddings.embed_texts = timed_embed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            size = real_text(Path(tmp))
            kb, _ = knowledge_base_get_or_create(name="bench-real")
            started = time.perf_counter()
            outcomes = paths_ingest(knowledge_base=kb, paths=[tmp], progress=Shown())
            elapsed = time.perf_counter() - started
            log("\r" + " " * 70 + "\r", end="")
            again = time.perf_counter()
            paths_ingest(knowledge_base=kb, paths=[tmp])
            unchanged = time.perf_counter() - again
    finally:
        embeddings.embed_texts = original
    chunks = spent["chunks"]
    log(
        f"ingestion: {len(outcomes)} documents, {size / 1e6:.1f} MB of real text -> "
        f"{chunks:,} chunks of <= {kb.chunk_size} chars in {elapsed:.1f} s"
    )
    log(
        f"  end to end        {chunks / elapsed:8.1f} chunks/s   "
        f"{len(outcomes) / elapsed:6.2f} docs/s"
    )
    log(
        f"  embedding alone   {chunks / spent['embed']:8.1f} chunks/s   "
        f"({spent['embed'] / elapsed:.0%} of the time; the rest: parse, chunk, write)"
    )
    log(f"  re-ingest, all unchanged: {unchanged * 1000:.0f} ms (content hashes only)")


def bench_query_embedding(n: int) -> list[str]:
    from inference.rag.embeddings import embed_query

    questions = [
        QUESTIONS[i % len(QUESTIONS)].format(
            verb=VERBS[i % len(VERBS)],
            noun=NOUNS[(i * 7) % len(NOUNS)],
            other=NOUNS[(i * 3 + 1) % len(NOUNS)],
        )
        for i in range(n)
    ]
    embed_query("warm up")
    samples = []
    for q in questions:
        started = time.perf_counter()
        embed_query(q)
        samples.append(time.perf_counter() - started)
    p50, p99 = percentiles(samples)
    log(f"query embedding ({n} questions): p50 {p50:.1f} ms, p99 {p99:.1f} ms (target < 20 ms)")
    return questions


# --- retrieval at scale ---------------------------------------------------------------


def synthetic_kb(n: int, dims: int) -> Any:
    """A knowledge base of `n` chunks of varied generated text with random unit vectors."""
    import numpy as np

    from inference.models import Chunk, Document
    from inference.rag.ingest import knowledge_base_get_or_create

    rng = np.random.default_rng(n)
    vocabulary = np.array([_word(rng) for _ in range(30_000)])
    zipf = 1.0 / np.arange(1, len(vocabulary) + 1)
    zipf /= zipf.sum()
    kb, _ = knowledge_base_get_or_create(name=f"bench-{n}")
    per_document = 100
    for first in range(0, n, 5_000):
        rows = min(5_000, n - first)
        documents = Document.objects.bulk_create(
            Document(
                knowledge_base=kb,
                source=f"doc-{i:06d}.txt",
                title=f"Document {i}",
                kind="text",
                content_hash="-",
                chunk_count=per_document,
            )
            for i in range(first // per_document, (first + rows) // per_document)
        )
        words = rng.choice(vocabulary, size=(rows, 60), p=zipf)
        vectors = rng.standard_normal((rows, dims)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        Chunk.objects.bulk_create(
            (
                Chunk(
                    knowledge_base=kb,
                    document=documents[i // per_document],
                    index=i % per_document,
                    section=f"Part {i % 7}",
                    text=" ".join(words[i]) + ".",
                    embedding=vectors[i].astype("<f4").tobytes(),
                )
                for i in range(rows)
            ),
            batch_size=1000,
        )
        log(f"\r  writing {n:,} chunks: {(first + rows) / n:4.0%}", end="")
    log("\r" + " " * 50 + "\r", end="")
    kb.revision = 1
    kb.save(update_fields=["revision"])
    return kb, vocabulary


def _word(rng: Any) -> str:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    total = sum(weights)
    size = int(rng.integers(2, 11))
    return "".join(rng.choice(list(letters), size=size, p=[w / total for w in weights]))


def bench_retrieval(n: int, queries: int, dims: int) -> dict[str, float]:
    import numpy as np

    from inference.rag.retrieval import cache, passages_retrieve_by_vector, ranked

    started = time.perf_counter()
    kb, vocabulary = synthetic_kb(n, dims)
    log(f"retrieval at {n:,} chunks (written in {time.perf_counter() - started:.1f} s)")
    before = rss_mb()
    cache.clear()
    build = timed(lambda: cache.get(kb.pk), 1)[0]
    index = cache.get(kb.pk)
    assert index is not None
    log(
        f"  cache build {build:.2f} s; index memory ~{rss_mb() - before:.0f} MB RSS "
        f"(matrix {index.matrix.nbytes / 1e6:.0f} MB half precision, "
        f"BM25 {index.bm25.matrix.data.nbytes * 2 / 1e6:.0f} MB "
        f"+ {len(index.bm25.vocabulary):,} terms)"
    )
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((queries, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [" ".join(rng.choice(vocabulary[:5000], size=6)) for _ in range(queries)]
    log("  mode      p50 ms   p99 ms   ranking only p50   vs dense (p50)")
    out: dict[str, float] = {}
    for mode in ("dense", "lexical", "hybrid"):
        full: list[float] = []
        rank_only: list[float] = []
        for q, v in zip(texts, vectors, strict=True):
            started = time.perf_counter()
            passages_retrieve_by_vector(knowledge_base=kb.pk, query=q, vector=v, k=5, mode=mode)
            full.append(time.perf_counter() - started)
            started = time.perf_counter()
            ranked(index, q, v, k=5, mode=mode)
            rank_only.append(time.perf_counter() - started)
        p50, p99 = percentiles(full)
        out[mode] = p99
        ratio = "" if mode == "dense" else f"x{p50 / out['dense_p50']:.2f}"
        out[f"{mode}_p50"] = p50
        log(f"  {mode:<8} {p50:7.2f}  {p99:7.2f}   {percentiles(rank_only)[0]:12.2f}       {ratio}")
    verdict = "meets" if out["hybrid"] < 50 else "MISSES"
    log(
        f"  fused p99 {out['hybrid']:.1f} ms {verdict} the < 50 ms target; "
        f"RSS now {rss_mb():.0f} MB"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--sizes", default="10000,100000", help="chunks per synthetic KB")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    os.environ.pop("REDIS_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "arena.settings"
    drop: Callable[[], None] = lambda: None  # noqa: E731
    tmp = tempfile.TemporaryDirectory()
    os.environ["ARENA_DATA_DIR"] = tmp.name
    if args.database_url:
        url, drop = scratch_postgres(args.database_url)
        os.environ["DATABASE_URL"] = url
        where = f"PostgreSQL ({urlparse(url).path.lstrip('/')}, dropped at the end)"
    else:
        os.environ.pop("DATABASE_URL", None)
        where = f"SQLite ({tmp.name}/arena.sqlite3)"
    try:
        run(args, where)
    finally:
        drop()
        tmp.cleanup()


def run(args: argparse.Namespace, where: str) -> None:
    import django

    django.setup()
    import torch
    from django.core.management import call_command

    from inference.rag import embeddings

    call_command("migrate", verbosity=0)
    log(f"database: {where}; torch threads {torch.get_num_threads()}; RSS {rss_mb():.0f} MB")
    started = time.perf_counter()
    embeddings.model()
    dims = embeddings.dimensions()
    log(
        f"embedding model {embeddings.model_name()} ({dims} dims) loaded in "
        f"{time.perf_counter() - started:.1f} s; RSS {rss_mb():.0f} MB"
    )
    if not args.skip_ingest:
        bench_ingest()
    bench_query_embedding(args.queries)
    results = {}
    for n in (int(s) for s in args.sizes.split(",")):
        results[n] = bench_retrieval(n, args.queries, dims)
    if len(results) > 1:
        small, large = min(results), max(results)
        log(
            f"scaling {small:,} -> {large:,} chunks (x{large / small:.0f}): p50 "
            + ", ".join(
                f"{m} x{results[large][f'{m}_p50'] / results[small][f'{m}_p50']:.1f}"
                for m in ("dense", "lexical", "hybrid")
            )
        )


if __name__ == "__main__":
    main()
