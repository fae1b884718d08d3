"""Calibrate the routing boundary of a pack from its own examples, leaving one out at a time.

Two kinds of probes, with no eval cases needed:
- known: each example, scored against the pack without that example; it should route to its
  own runbook;
- unknown: each example, scored against the pack without its whole runbook; nothing should fit.
Sweeping ``min_score`` and ``min_margin`` over the probes shows what each setting would accept and
reject. Unknown probes are harder than most real out-of-scope messages (they come from a
neighbouring runbook's domain), so the recall they show is a floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.pack import Pack
from vectorstore.embeddings import Embedder
from vectorstore.index import runbook_score

SCORES = [round(float(x), 2) for x in np.arange(0.30, 0.91, 0.01)]
MARGINS = [0.0, 0.01, 0.02, 0.03, 0.05, 0.08]


@dataclass(frozen=True)
class Probe:
    """One leave-one-out query: best score, lead over the second, and whether it should route."""

    top: float
    margin: float
    right: bool
    known: bool


@dataclass(frozen=True)
class Setting:
    """What one (min_score, min_margin) does to the probes."""

    min_score: float
    min_margin: float
    known_accuracy: float
    unknown_recall: float


def _scores(sims: np.ndarray, labels: np.ndarray, runbooks: list[str], skip: str | None) -> dict[str, float]:
    return {
        rid: runbook_score(sims[labels == rid].tolist()) for rid in runbooks if rid != skip and (labels == rid).any()
    }


def probes(pack: Pack, embedder: Embedder) -> list[Probe]:
    """Leave-one-out probes for every example of the pack."""
    texts: list[str] = []
    owners: list[str] = []
    for rid, runbook in pack.runbooks.items():
        for text in [runbook.meta.title, *runbook.meta.examples]:
            texts.append(text)
            owners.append(rid)
    vectors = embedder.embed(texts)
    labels = np.array(owners)
    runbooks = sorted(pack.runbooks)
    similarity = vectors @ vectors.T
    found: list[Probe] = []
    for i in range(len(texts)):
        keep = np.ones(len(texts), dtype=bool)
        keep[i] = False
        for known in (True, False):
            scores = _scores(similarity[i][keep], labels[keep], runbooks, None if known else owners[i])
            ranked = sorted(scores.values(), reverse=True)
            if len(ranked) < 2:
                continue
            best = max(scores, key=lambda r: scores[r])
            found.append(Probe(ranked[0], ranked[0] - ranked[1], known and best == owners[i], known))
    return found


def sweep(points: list[Probe]) -> list[Setting]:
    """Every (min_score, min_margin) on the grid, with its accuracy and recall on the probes."""
    top = np.array([p.top for p in points])
    margin = np.array([p.margin for p in points])
    right = np.array([p.right for p in points])
    known = np.array([p.known for p in points])
    settings = []
    for min_score in SCORES:
        for min_margin in MARGINS:
            accept = (top >= min_score) & (margin >= min_margin)
            settings.append(
                Setting(
                    min_score=min_score,
                    min_margin=min_margin,
                    known_accuracy=float((accept & right)[known].mean()),
                    unknown_recall=float((~accept)[~known].mean()),
                )
            )
    return settings


def recommend(settings: list[Setting], target_recall: float) -> Setting:
    """The setting with the best known accuracy among those reaching the target recall."""
    reaching = [s for s in settings if s.unknown_recall >= target_recall]
    if not reaching:
        return max(settings, key=lambda s: s.unknown_recall)
    return max(reaching, key=lambda s: (s.known_accuracy, -s.min_score))
