"""Knowledge gaps: what customers asked that no runbook answers, clustered and ranked by size.

The handoffs of a period whose reasons say that no runbook fitted (``no_runbook_fits``) or that the
bot could not choose (``ambiguous_after_clarifying``) are taken with the customer's words (the
longest customer turn, redacted), embedded with the routing model and clustered by cosine distance
with scikit-learn: BIRCH squeezes many messages into tight subclusters, and average-linkage
agglomerative clustering joins those whose distance stays under ``distance``. Each cluster is a gap:
its size, up to five messages nearest its centre, and the runbook nearest to it.

Vectors are kept per packet (``gap_vectors``), so a second look at a period embeds only the new
handoffs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import yaml
from numpy.typing import NDArray
from sklearn.cluster import AgglomerativeClustering, Birch

from agent.handoff import HandoffQueue
from core.db import AnyDatabase, Migration, Migrations, PersonalTables, open_database
from core.errors import TieroneError
from core.redact import redact
from vectorstore.index import RunbookIndex

GAP_REASONS = ("no_runbook_fits", "ambiguous_after_clarifying")
EXAMPLES = 5

_VECTORS = """CREATE TABLE IF NOT EXISTS gap_vectors (
    packet_id TEXT NOT NULL,
    embedder TEXT NOT NULL,
    text TEXT NOT NULL,
    vector {blob} NOT NULL,
    PRIMARY KEY (packet_id, embedder)
)"""


class GapsError(TieroneError):
    """The period asked for makes no sense (it ends before it starts)."""


@dataclass(frozen=True)
class Gap:
    """A cluster of handoffs no runbook answered: how many, in whose words, and what is nearest."""

    rank: int
    size: int
    examples: list[str]
    nearest_runbook: str | None
    nearest_score: float
    nearest_example: str | None
    reasons: dict[str, int]
    first_seen: datetime
    last_seen: datetime

    def as_dict(self) -> dict[str, Any]:
        """The gap as JSON-ready data (``tierone runbooks gaps --json``, insights' ``gaps``)."""
        return {
            "gap": self.rank,
            "size": self.size,
            "examples": self.examples,
            "nearest_runbook": self.nearest_runbook,
            "nearest_score": round(self.nearest_score, 3),
            "nearest_example": self.nearest_example,
            "reasons": self.reasons,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }


@dataclass(frozen=True)
class _Handoff:
    packet_id: str
    created_at: datetime
    text: str
    reasons: list[str]


class GapVectors:
    """The routing model's vector of each gap handoff's message, so a period is embedded once."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "gap_vectors",
        Migration(1, {"sqlite": _VECTORS.format(blob="BLOB"), "postgresql": _VECTORS.format(blob="BYTEA")}),
    )
    PERSONAL_TABLES: ClassVar[PersonalTables] = {"gap_vectors": {"packet_id": "packet"}}

    def __init__(self, db: AnyDatabase) -> None:
        self._db = db
        db.migrate(self.MIGRATIONS)

    def vectors(self, handoffs: list[_Handoff], embedder: Any) -> NDArray[np.float32]:
        """One unit row per handoff: from the cache, the missing ones embedded (in batches) and stored."""
        name = str(getattr(embedder, "name", type(embedder).__name__))
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT packet_id, text, vector FROM gap_vectors WHERE embedder = ?", (name,))
            cached = {r["packet_id"]: (r["text"], r["vector"]) for r in rows}
        found: dict[str, NDArray[np.float32]] = {}
        for h in handoffs:
            hit = cached.get(h.packet_id)
            if hit is not None and hit[0] == h.text:
                found[h.packet_id] = np.frombuffer(bytes(hit[1]), dtype=np.float32)
        missing = [h for h in handoffs if h.packet_id not in found]
        for start in range(0, len(missing), 512):
            chunk = missing[start : start + 512]
            vectors = np.asarray(embedder.embed([h.text for h in chunk]), dtype=np.float32)
            with self._db.transaction() as conn:
                for h, v in zip(chunk, vectors, strict=True):
                    conn.execute(
                        "INSERT INTO gap_vectors VALUES (?, ?, ?, ?) ON CONFLICT (packet_id, embedder)"
                        " DO UPDATE SET text = excluded.text, vector = excluded.vector",
                        (h.packet_id, name, h.text, v.tobytes()),
                    )
            found.update((h.packet_id, v) for h, v in zip(chunk, vectors, strict=True))
        if not handoffs:
            return np.zeros((0, 0), dtype=np.float32)
        matrix = np.stack([found[h.packet_id] for h in handoffs]).astype(np.float32)
        unit: NDArray[np.float32] = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        return unit


def _problem_text(packet: dict[str, Any]) -> str | None:
    """The customer's longest turn, redacted: the problem as they put it (greetings and codes are short)."""
    turns = [redact(line["text"]).strip() for line in packet.get("transcript", []) if line.get("role") == "customer"]
    turns = [t for t in turns if sum(c.isalpha() for c in t) >= 3]
    return max(turns, key=len) if turns else None


# A packet's reason codes as a one-column table (``value``), in each dialect's JSON functions.
_REASON_CODES = {
    "sqlite": "json_each(packet, '$.reason_codes')",
    "postgresql": "json_array_elements_text(CAST(packet AS json) -> 'reason_codes') AS codes (value)",
}


def gap_handoffs(db: AnyDatabase, since: datetime | None, until: datetime | None) -> list[_Handoff]:
    """The handoffs of the period handed off because no runbook fitted or the bot could not choose."""
    if since and until and until <= since:
        raise GapsError(f"--until {until.isoformat()} is not after --since {since.isoformat()}; swap them")
    marks = ", ".join("?" for _ in GAP_REASONS)
    query = (
        "SELECT packet_id, created_at, packet FROM handoffs WHERE created_at >= ? AND created_at < ?"
        f" AND EXISTS (SELECT 1 FROM {_REASON_CODES[db.dialect]} WHERE value IN ({marks}))"
        " ORDER BY created_at, packet_id"
    )
    low = since.isoformat() if since else ""
    high = until.isoformat() if until else "9999"
    with db.transaction() as conn:
        rows = conn.execute(query, (low, high, *GAP_REASONS)).fetchall()
    found = []
    for row in rows:
        packet = json.loads(row["packet"])
        text = _problem_text(packet)
        if text:
            reasons = [r for r in packet.get("reason_codes", []) if r in GAP_REASONS]
            found.append(_Handoff(row["packet_id"], datetime.fromisoformat(row["created_at"]), text, reasons))
    return found


def cluster(vectors: NDArray[np.float32], distance: float) -> NDArray[np.int64]:
    """A cluster label per unit row: rows whose average cosine distance stays under ``distance`` share one."""
    if len(vectors) < 2:
        return np.zeros(len(vectors), dtype=np.int64)
    joiner = AgglomerativeClustering(n_clusters=None, distance_threshold=distance, metric="cosine", linkage="average")
    if len(vectors) <= 2000:
        return np.asarray(joiner.fit_predict(vectors), dtype=np.int64)
    # Many messages: BIRCH first gathers near-duplicates (within a radius well under ``distance``) so the
    # quadratic agglomerative step runs over subcluster centres rather than every message.
    radius = float(np.sqrt(2 * distance)) / 2
    birch = Birch(threshold=radius, n_clusters=joiner)
    return np.asarray(birch.fit_predict(vectors), dtype=np.int64)


def find_gaps(
    queue: HandoffQueue,
    index: RunbookIndex,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    distance: float = 0.6,
) -> list[Gap]:
    """The knowledge gaps of a period, the largest first (ties: the most recent first).

    Args:
        queue: The handoff queue; its database also keeps the message vectors.
        index: The routing index: its embedder embeds the messages, its examples name the nearest runbook.
        since: Start of the period (inclusive); None: from the first handoff.
        until: End of the period (exclusive); None: up to now.
        distance: Largest average cosine distance within a gap (0..2); smaller makes more, tighter gaps.
    """
    db = open_database(queue.target)
    try:
        handoffs = gap_handoffs(db, since, until)
        vectors = GapVectors(db).vectors(handoffs, index.embedder)
    finally:
        db.close()
    if not handoffs:
        return []
    labels = cluster(vectors, distance)
    examples = index.examples
    gaps = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        centre = vectors[members].mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        closeness = vectors[members] @ centre
        texts: list[str] = []
        for i in members[np.argsort(-closeness, kind="stable")]:
            if handoffs[i].text not in texts:
                texts.append(handoffs[i].text)
            if len(texts) == EXAMPLES:
                break
        sims = examples.vectors @ centre
        best = int(np.argmax(sims)) if len(sims) else -1
        reasons: dict[str, int] = {}
        for i in members:
            for reason in handoffs[i].reasons:
                reasons[reason] = reasons.get(reason, 0) + 1
        seen = [handoffs[i].created_at for i in members]
        gaps.append(
            Gap(
                rank=0,
                size=len(members),
                examples=texts,
                nearest_runbook=examples.classes[examples.labels[best]] if best >= 0 else None,
                nearest_score=float(sims[best]) if best >= 0 else 0.0,
                nearest_example=examples.texts[best] if best >= 0 else None,
                reasons=reasons,
                first_seen=min(seen),
                last_seen=max(seen),
            )
        )
    gaps.sort(key=lambda g: (-g.size, -g.last_seen.timestamp(), g.examples[0]))
    return [Gap(**{**g.__dict__, "rank": n}) for n, g in enumerate(gaps, start=1)]


def draft_runbook(gap: Gap) -> str:
    """A runbook skeleton for a gap: the cluster's messages as examples, TODO wherever an author must write.

    ``tierone runbooks lint`` flags every TODO, so a draft cannot ship unfinished.
    """
    front = {
        "id": f"draft-gap-{gap.rank}",
        "title": f"TODO: name the problem these {gap.size} customers describe",
        "category": "TODO",
        "tier": 1,
        "examples": gap.examples,
    }
    nearest = f"{gap.nearest_runbook} (similarity {gap.nearest_score:.2f})" if gap.nearest_runbook else "none"
    return (
        "---\n"
        + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
        + "---\n"
        + "TODO: say in a sentence or two what these customers need.\n\n"
        + f"Drafted by `tierone runbooks draft` from gap {gap.rank}: {gap.size} handoff(s) between"
        + f" {gap.first_seen:%Y-%m-%d} and {gap.last_seen:%Y-%m-%d}; the nearest runbook was {nearest}.\n\n"
        + "## Steps\n1. TODO: the first thing the customer should try.\n2. TODO: what to try next.\n\n"
        + "## Check\nTODO: the question that tells the bot whether it worked.\n"
    )


def gaps_provider(
    queue: HandoffQueue, index: RunbookIndex | Callable[[], RunbookIndex], *, distance: float = 0.6
) -> Callable[[datetime | None, datetime], list[dict[str, Any]]]:
    """``find_gaps`` as insights call it: ``(since, until) -> [gap.as_dict(), ...]``.

    Pass it to ``open_insights(settings, pack, gaps_provider(queue, index))`` so that ``gaps`` in
    ``tierone insights --json`` and ``GET /insights`` holds the period's knowledge gaps. ``index``
    may be a function that opens the routing index: it is called only for a period with handoffs to
    cluster, so a command run over a quiet period never loads the embedding model.
    """

    def gaps(since: datetime | None, as_of: datetime) -> list[dict[str, Any]]:
        # Insights count what happened up to and at ``as_of``; a gap period's end is exclusive.
        until = as_of + timedelta(microseconds=1)
        if isinstance(index, RunbookIndex):
            routing = index
        else:
            db = open_database(queue.target)
            try:
                if not gap_handoffs(db, since, until):
                    return []
            finally:
                db.close()
            routing = index()
        return [g.as_dict() for g in find_gaps(queue, routing, since=since, until=until, distance=distance)]

    return gaps
