"""Chroma index of a runbook pack: built from titles and examples, re-indexed by content hash.

Chroma keeps the example vectors, in a folder or on a Chroma server (``TIERONE_CHROMA_URL``);
queries are scored in memory by the pack's scorer (vectorstore/scorer.py), by default a head
trained on those vectors and cached by the pack's hash. Once a replica has loaded them, routing
needs no Chroma server: one that goes away makes /readyz fail, not the turns.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import chromadb
import httpx
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.types import Where
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError

from core.errors import TieroneError
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


# Every request to a Chroma server is bounded: chromadb's own HTTP session never times out, and a
# server that stops answering must fail a call (a start, a sync, a readiness check), never hang it.
SERVER_TIMEOUT_S = 10.0
_SETTING = "TIERONE_CHROMA_URL"


def open_client(
    chroma_dir: Path | None = None, *, url: str | None = None, timeout_s: float = SERVER_TIMEOUT_S
) -> ClientAPI:
    """A Chroma client: the Chroma server at ``url`` when given, else a persistent folder (memory without one).

    Raises:
        TieroneError: The server did not answer its heartbeat within ``timeout_s``.
    """
    settings = ChromaSettings(anonymized_telemetry=False)
    if url:
        return _server_client(url, settings, timeout_s)
    if chroma_dir is None:
        return chromadb.EphemeralClient(settings=settings)
    chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(chroma_dir), settings=settings)


def server_heartbeat(url: str, timeout_s: float = SERVER_TIMEOUT_S) -> None:
    """Return once the Chroma server at ``url`` answers its heartbeat; raise TieroneError after ``timeout_s``."""
    try:
        response = _probe().get(f"{url.rstrip('/')}/api/v2/heartbeat", timeout=timeout_s)
        response.raise_for_status()
        int(response.json()["nanosecond heartbeat"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise TieroneError(
            f"the Chroma server at {url} ({_SETTING}) did not answer its heartbeat within {timeout_s:g} s "
            f"({reason}); start it, or unset {_SETTING} to keep the routing index in a folder"
        ) from exc


@functools.cache
def _probe() -> httpx.Client:
    # One client for every heartbeat of the process: /readyz is polled, and a new client costs tens of ms.
    return httpx.Client()


def _server_client(url: str, settings: ChromaSettings, timeout_s: float) -> ClientAPI:
    server_heartbeat(url, timeout_s)
    parts = urlsplit(url)
    https = parts.scheme == "https"
    try:
        client = chromadb.HttpClient(
            host=parts.hostname or "", port=parts.port or (443 if https else 8000), ssl=https, settings=settings
        )
    except (ValueError, httpx.HTTPError, ChromaError) as exc:
        raise TieroneError(f"the Chroma server at {url} ({_SETTING}) refused the client: {exc}") from exc
    # No setting reaches the client's HTTP session, so its timeout is set here (chromadb 1.5).
    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(timeout_s)
    return client


def on_server(client: ClientAPI) -> bool:
    """Whether the client talks to a Chroma server (shared by replicas) rather than a folder or memory."""
    return client.get_settings().chroma_api_impl == "chromadb.api.fastapi.FastAPI"


def collection_name(pack: Pack, embedder: Embedder, *, shared: bool = False) -> str:
    """The pack's collection for one embedding model (3-512 chars of [a-zA-Z0-9._-]).

    In a folder, one per pack folder, updated in place. On a shared server, one per pack content:
    replicas indexing the same pack write the same rows into the same collection, and a replica
    still on an older pack (a deploy under way) keeps its own instead of fighting over one.
    """
    if shared:
        return f"runbooks-{embedder.name}-{pack.fingerprint}"
    digest = hashlib.sha256(str(pack.root.resolve()).encode()).hexdigest()[:12]
    return f"runbooks-{embedder.name}-{digest}"


def _row_ids(rid: str, texts: int) -> list[str]:
    # A row's id is its runbook and its place (0 the title, then the examples): writing it twice,
    # from two replicas at once, leaves it once.
    return [f"{rid}::{i}" for i in range(texts)]


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
            self._shared = on_server(client)
            # Chroma stores the vectors; queries are scored exactly, in memory, never by its approximate search.
            self._collection = client.get_or_create_collection(
                collection_name(pack, embedder, shared=self._shared),
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )
        self.pack = pack
        self._client = client
        self._head_cache = head_cache if head_cache is not None else model_cache_dir() / "heads"
        self._progress = progress
        self._scorer: Scorer | None = None
        self._examples: ExampleVectors | None = None
        self.head_state: HeadState = "none"

    def sync(self) -> SyncReport:
        """Bring the index in line with the pack, re-embedding only runbooks whose content changed.

        Safe to run from several processes at once on one server: rows are upserted under fixed ids
        and only rows no runbook of the pack has are deleted, so a concurrent reader never finds a
        runbook of the pack missing.
        """
        stored = self._collection.get(include=["metadatas"])
        rows: dict[str, dict[str, str]] = {}  # runbook -> {row id: content hash}
        for item, meta in zip(stored["ids"], stored["metadatas"] or [], strict=True):
            rows.setdefault(str(meta["runbook"]), {})[item] = str(meta["hash"])
        added: list[str] = []
        updated: list[str] = []
        stale: list[str] = []
        for rid, runbook in self.pack.runbooks.items():
            have = rows.get(rid, {})
            want = _row_ids(rid, 1 + len(runbook.meta.examples))
            if set(have) == set(want) and set(have.values()) == {runbook.content_hash}:
                continue
            # A runbook written only in part (a process stopped mid-sync) is written again.
            (updated if have else added).append(rid)
            stale += sorted(set(have) - set(want))
        removed = [rid for rid in rows if rid not in self.pack.runbooks]
        stale += [item for rid in removed for item in sorted(rows[rid])]
        # On a server, a runbook whose content an older pack's collection already holds is copied from
        # there: a deploy that changes one runbook embeds that one, as a folder's update in place does.
        found = self._stored_elsewhere(added + updated) if self._shared else {}
        texts: list[str] = []
        ids: list[str] = []
        metadatas: list[Any] = []
        vectors: list[Any] = []
        for rid in added + updated:
            runbook = self.pack.runbooks[rid]
            row_texts = [runbook.meta.title, *runbook.meta.examples]
            texts += row_texts
            ids += _row_ids(rid, len(row_texts))
            metadatas += [{"runbook": rid, "hash": runbook.content_hash} for _ in row_texts]
            vectors += found.get(rid) or [None] * len(row_texts)
        missing = [i for i, vector in enumerate(vectors) if vector is None]
        if missing:
            for i, vector in zip(missing, self.embedder.embed([texts[i] for i in missing]), strict=True):
                vectors[i] = vector
        for start in range(0, len(texts), 1000):
            end = start + 1000
            self._collection.upsert(
                ids=ids[start:end],
                embeddings=np.asarray(vectors[start:end], dtype=np.float32),
                documents=texts[start:end],
                metadatas=metadatas[start:end],
            )
        if stale:
            self._collection.delete(ids=stale)
        unchanged = len(self.pack.runbooks) - len(added) - len(updated)
        self._scorer = None
        self._load_scorer()
        return SyncReport(added=added, updated=updated, removed=removed, unchanged=unchanged, head=self.head_state)

    def _stored_elsewhere(self, rids: list[str]) -> dict[str, list[Any]]:
        """Vectors of these runbooks, at their current content, in the server's other collections of this model."""
        want = {rid: self.pack.runbooks[rid].content_hash for rid in rids}
        if not want:
            return {}
        # Another pack's collection of the same model: the same name but for the fingerprint.
        same_model = re.compile(re.escape(f"runbooks-{self.embedder.name}-") + "[0-9a-f]{16}")
        found: dict[str, list[Any]] = {}
        for other in self._client.list_collections():
            if not same_model.fullmatch(other.name) or other.name == self._collection.name:
                continue
            if not (todo := {rid: h for rid, h in want.items() if rid not in found}):
                break
            where = cast(Where, {"hash": {"$in": sorted(set(todo.values()))}})
            got = other.get(where=where, include=["embeddings", "metadatas"])
            rows: dict[str, dict[str, Any]] = {}
            vectors = [] if got["embeddings"] is None else list(got["embeddings"])
            for item, meta, vector in zip(got["ids"], got["metadatas"] or [], vectors, strict=True):
                if todo.get(str(meta["runbook"])) == meta["hash"]:
                    rows.setdefault(str(meta["runbook"]), {})[item] = vector
            for rid, by_id in rows.items():
                ids = _row_ids(rid, 1 + len(self.pack.runbooks[rid].meta.examples))
                if set(by_id) == set(ids):  # only a runbook stored whole
                    found[rid] = [by_id[i] for i in ids]
        return found

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
            # Only rows of this pack's content: never another process's older or newer version.
            if rid in self.pack.runbooks and meta["hash"] == self.pack.runbooks[rid].content_hash:
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
