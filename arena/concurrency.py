"""The two ways the apps keep something running beside a request: a daemon
thread (`daemon`) and a value per event loop (`per_loop`).

Below the apps' services: it imports only Django's database connection, so
inference and ratings may use it (the contracts in pyproject.toml allow
exactly this module of arena); the engines, which import no Django, and
realtime, which imports no app, do not.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import connection

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def daemon(name: str, body: Callable[[], object]) -> threading.Thread:
    """Start `body` in a daemon thread called `name`. An exception is logged
    (a thread that dies silently is found only by what stops happening), and
    the thread's database connection is closed when `body` ends: Django opens
    one per thread and never closes it for a thread it did not start."""

    def run() -> None:
        try:
            body()
        except Exception:
            log.exception("%s failed", name)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def per_loop(factory: Callable[P, T]) -> Callable[P, T]:
    """`factory`, made once per event loop: the first call on a running loop
    makes the value (later calls on that loop return it, whatever their
    arguments), and the value is dropped with its loop. For what binds to a
    loop (futures, timers, connections) in a process that runs several (the
    server's, a worker's, each test's). A value that refers to its loop keeps
    the loop, and so itself, alive: the dictionary holds values strongly."""
    values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    @functools.wraps(factory)
    def for_running_loop(*args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        if loop not in values:
            values[loop] = factory(*args, **kwargs)
        return values[loop]

    return for_running_loop
