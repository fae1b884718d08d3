"""Stand-ins at the product's seams for tests that do not need the real thing."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from vectorstore.embeddings import Vector


class HashingEmbedder:
    """The embedder seam without the model: each word hashed into one of ``dim`` dimensions.

    Deterministic and instant. The same text always gets the same vector and texts that share words
    are closer, but it knows no synonyms: use it where a test is about storage, sync or plumbing,
    and the real model (the ``embedder`` fixture) where a test is about routing.
    """

    name = "hashing"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> Vector:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % self.dim
                vectors[row, bucket] += 1
            if not vectors[row].any():
                vectors[row, 0] = 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
