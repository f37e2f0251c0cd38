"""The Celery worker command line this project runs (tests, benchmarks):
the threads pool, as in docker/compose.yml, without gossip and mingle (no
worker talks to another). Standard library only, so any script can use it."""

from __future__ import annotations

import os
import sys


def worker_argv(
    *, queues: str, concurrency: int, name: str, loglevel: str = "INFO", extra: tuple[str, ...] = ()
) -> list[str]:
    """`celery worker` on `queues` (comma-separated) with `concurrency` threads,
    named `name-<this pid>@host` so parallel runs never share a node name."""
    return [
        sys.executable, "-m", "celery", "-A", "arena", "worker",
        "--pool", "threads", "--concurrency", str(concurrency), "-Q", queues,
        "--loglevel", loglevel, "--without-gossip", "--without-mingle", *extra,
        "--hostname", f"{name}-{os.getpid()}@%h",
    ]  # fmt: skip
