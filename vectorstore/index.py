"""Chroma index of a runbook pack: built from titles and examples, re-indexed by content hash.

Chroma keeps the example vectors; queries are scored in memory by the pack's scorer
(vectorstore/scorer.py), by default a head trained on those vectors and cached by the pack's hash.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings

from core.pack import Pack
from vectorstore.embeddings import Embedder, model_cache_dir
from vectorstore.scorer import (
    ExampleVectors,
    HeadScorer,
    Progress,
    Scorer,
    bundled_out_of_scope,
    head_key,
    make_scorer,
    nearest_score,
    one_thread,
    products,
    train_head,
)

# The scorer before trained heads; kept under its old name for callers that score similarities.
runbook_score = nearest_score
HeadState = Literal["trained", "cached", "none"]


@dataclass(frozen=True)
class Candidate:
    """A runbook that may fit a message, with its similarity score (cosine, 0..1)."""

    runbook_id: str
    score: float
    matched: str


@dataclass(frozen=True)
class SyncReport:
    """What a sync changed in the index."""

    added: list[str]
    updated: list[str]
    removed: list[str]
    unchanged: int
    # What happened to the routing head: trained now, loaded from the cache, or not used.
    head: HeadState = "none"


def open_client(chroma_dir: Path | None = None, *, host: str | None = None, port: int = 8000) -> ClientAPI:
    """A Chroma client: a persistent folder by default, a Chroma server when host is given."""
    settings = ChromaSettings(anonymized_telemetry=False)
    if host:
        return chromadb.HttpClient(host=host, port=port, settings=settings)
    if chroma_dir is None:
        return chromadb.EphemeralClient(settings=settings)
    chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(chroma_dir), settings=settings)


def collection_name(pack: Pack, embedder: Embedder) -> str:
    """One collection per pack folder and embedding model (3-512 chars of [a-zA-Z0-9._-])."""
    digest = hashlib.sha256(str(pack.root.resolve()).encode()).hexdigest()[:12]
    return f"runbooks-{embedder.name}-{digest}"


class RunbookIndex:
    """Routing index of one pack: query a message, get runbook candidates with scores."""

    def __init__(
        self,
        client: ClientAPI,
        pack: Pack,
        embedder: Embedder,
        *,
        head_cache: Path | None = None,
        progress: Callable[[int], Progress | None] | None = None,
    ) -> None:
        """Open (or create) the pack's collection.

        Args:
            client: The Chroma client.
            pack: The runbook pack.
            embedder: The embedding model.
            head_cache: Folder of trained heads (default: ``heads/`` in the model cache).
            progress: Given the number of example vectors, returns a progress callback for
                training (or None for none); a command line shows a bar with it.
        """
        self.embedder = embedder
        with warnings.catch_warnings():
            # Chroma notes that a collection without an embedding function (vectors come from here)
            # has a "legacy" configuration whenever it reads one back to compare or change it.
            warnings.filterwarnings("ignore", "legacy embedding function config", DeprecationWarning)
            # Chroma stores the vectors; queries are scored exactly, in memory, never by its approximate search.
            self._collection = client.get_or_create_collection(
                collection_name(pack, embedder),
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )
        self.pack = pack
        self._head_cache = head_cache if head_cache is not None else model_cache_dir() / "heads"
        self._progress = progress
        self._scorer: Scorer | None = None
        self._examples: ExampleVectors | None = None
        self.head_state: HeadState = "none"

    def sync(self) -> SyncReport:
        """Bring the index in line with the pack, re-embedding only runbooks whose content changed."""
        stored = self._collection.get(include=["metadatas"])
        stored_hash: dict[str, str] = {}
        for meta in stored["metadatas"] or []:
            stored_hash[str(meta["runbook"])] = str(meta["hash"])
        added: list[str] = []
        updated: list[str] = []
        for rid, runbook in self.pack.runbooks.items():
            if stored_hash.get(rid) == runbook.content_hash:
                continue
            (updated if rid in stored_hash else added).append(rid)
        removed = [rid for rid in stored_hash if rid not in self.pack.runbooks]
        for rid in updated + removed:
            self._collection.delete(where={"runbook": rid})
        texts: list[str] = []
        ids: list[str] = []
        metadatas: list[Any] = []
        for rid in added + updated:
            runbook = self.pack.runbooks[rid]
            for i, text in enumerate([runbook.meta.title, *runbook.meta.examples]):
                texts.append(text)
                ids.append(f"{rid}::{i}")
                metadatas.append({"runbook": rid, "hash": runbook.content_hash})
        if texts:
            vectors = self.embedder.embed(texts)
            for start in range(0, len(texts), 1000):
                end = start + 1000
                self._collection.add(
                    ids=ids[start:end],
                    embeddings=vectors[start:end],
                    documents=texts[start:end],
                    metadatas=metadatas[start:end],
                )
        unchanged = len(self.pack.runbooks) - len(added) - len(updated)
        self._scorer = None
        self._load_scorer()
        return SyncReport(added=added, updated=updated, removed=removed, unchanged=unchanged, head=self.head_state)

    @property
    def examples(self) -> ExampleVectors:
        """The pack's routing texts and vectors as stored in the index, grouped by runbook."""
        if self._examples is None:
            self._load_scorer()
        assert self._examples is not None
        return self._examples

    @property
    def scorer(self) -> Scorer:
        """The pack's routing scorer (``routing.scorer`` in policy.yaml; a trained head by default)."""
        if self._scorer is None:
            self._load_scorer()
        assert self._scorer is not None
        return self._scorer

    def head_file(self) -> Path:
        """Where this pack's trained head is cached: named by the pack's content hash."""
        key = head_key(self.pack.fingerprint, self.embedder.name, bundled_out_of_scope("train"))
        return self._head_cache / f"head-{key}.npz"

    def _load_scorer(self) -> None:
        stored = self._collection.get(include=["embeddings", "metadatas", "documents"])
        embeddings = stored["embeddings"]
        vectors = [] if embeddings is None else list(embeddings)
        rows = []
        for item, meta, doc, vector in zip(
            stored["ids"], stored["metadatas"] or [], stored["documents"] or [], vectors, strict=True
        ):
            rid = str(meta["runbook"])
            if rid in self.pack.runbooks:
                rows.append((rid, int(item.rsplit("::", 1)[1]), doc or "", np.asarray(vector, dtype=np.float32)))
        rows.sort(key=lambda r: (r[0], r[1]))  # Chroma returns rows in no fixed order
        self._examples = ExampleVectors.build([(rid, doc, vector) for rid, _, doc, vector in rows])
        kind = self.pack.policy.routing.scorer
        if kind != "head":
            self._scorer = make_scorer(kind, self._examples)
            self.head_state = "none"
            return
        path = self.head_file()
        head = HeadScorer.load(path, self._examples) if path.exists() else None
        if head is not None:
            self.head_state = "cached"
        else:
            progress = self._progress(len(rows)) if self._progress else None
            strays = self.embedder.embed(bundled_out_of_scope("train"))
            head = train_head(self._examples, progress, strays=strays)
            try:
                head.save(path)
            except OSError:  # a read-only cache: the head still serves this process
                pass
            self.head_state = "trained"
        self._scorer = head

    def count(self) -> int:
        """Number of vectors in the index."""
        return self._collection.count()

    def query(self, text: str, k: int = 5) -> list[Candidate]:
        """The k best runbooks for a message, best first, with each one's nearest example."""
        return self.query_vectors(self.embedder.embed([text]), k)[0]

    def query_vectors(self, vectors: np.ndarray, k: int = 5) -> list[list[Candidate]]:
        """The k best runbooks for each of several message vectors (rows), best first."""
        scorer, examples = self.scorer, self.examples
        with one_thread():
            scores = np.round(scorer.scores(vectors), 4)
            sims = products(examples.vectors, vectors)
        bounds = [*examples.starts.tolist(), len(examples.labels)]
        ids = np.arange(len(scorer.classes))
        out: list[list[Candidate]] = []
        for row in range(len(vectors)):
            # Ties break by runbook id, so that the order never depends on how the index was built.
            order = np.lexsort((ids, -scores[row]))[:k]
            found = []
            for j in order.tolist():
                nearest = bounds[j] + int(np.argmax(sims[row, bounds[j] : bounds[j + 1]]))
                found.append(Candidate(scorer.classes[j], float(scores[row, j]), examples.texts[nearest]))
            out.append(found)
        return out
