"""Importing the ML libraries from threads, one at a time.

transformers builds its modules lazily and not thread-safely: when the
embedding model (RAG) and the local engine load in two threads of one process
at once, one of them sees a half-built module ("cannot import name
'AutoModelForCausalLM' from 'transformers'"). Everything that imports them
in a thread goes through `ml_import`.
"""

from __future__ import annotations

import importlib
import threading

_lock = threading.Lock()
_done: set[str] = set()

LOCAL_ENGINE = (
    "torch",
    "transformers",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.generation.streamers",
    "transformers.generation.stopping_criteria",
)
EMBEDDINGS = ("torch", "transformers", "sentence_transformers")


def ml_import(modules: tuple[str, ...]) -> None:
    """Import `modules` fully, in order, holding the one lock."""
    if _done.issuperset(modules):
        return
    with _lock:
        for name in modules:
            if name not in _done:
                importlib.import_module(name)
                _done.add(name)
