import os

# With OpenMP's default busy-wait, torch generation collapses 4-5x as soon as
# another process holds a core. Set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Rating fits are small dense solves: with OpenBLAS's default threads they run
# 3-4x slower whenever another process holds a core (measured in bench/ratings.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from arena.celery import app as celery_app

__all__ = ["celery_app"]
