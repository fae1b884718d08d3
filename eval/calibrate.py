"""Choose a pack's routing boundary (``min_score``, ``min_margin``) on realistic evidence.

Probes, with no eval cases needed:

- known: each example of the pack, scored by a scorer that never saw it (out-of-fold for the
  trained head, leave-one-out for the others); it should route to its own runbook;
- out of scope: messages no runbook should take. By default the generic set shipped with Tierone
  (``vectorstore/out_of_scope.txt``: small talk and other domains); an author adds their own
  (a text file, one message a line) or a case file (single-turn cases expecting a runbook become
  known probes, those expecting a handoff with no runbook out-of-scope ones).

Every (``min_score``, ``min_margin``) on the grid is a point on one curve: the share of known probes
routed right, the share of out-of-scope probes handed off, the wrong-resolution rate (of the probes
the bot keeps, the share it routes wrongly or should not have kept) and the share handed off. The
suggestion keeps wrong resolutions at or under a target (5% by default) with the most containment.

Earlier versions used "a neighbouring runbook's examples" as the out-of-scope probes; those are
harder than real out-of-scope messages and pushed the thresholds up (issue 16). ``leave_one_out``
keeps that method, for comparison (bench/routing.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.pack import Pack
from vectorstore.embeddings import Embedder
from vectorstore.index import RunbookIndex, runbook_score
from vectorstore.scorer import ExampleVectors, HeadScorer, make_scorer, read_lines

SCORES = [round(float(x), 2) for x in np.arange(0.0, 1.0, 0.01)]
MARGINS = [0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2]
# Below this share of known examples routed right, the suggestion hands off too much to be useful.
LOW_ROUTING = 0.7


@dataclass(frozen=True)
class Probe:
    """One message scored against the pack: best score, lead over the runner-up, what it should be.

    ``truth`` is the runbook it belongs to, or None when nothing should fit (out of scope).
    """

    text: str
    top: float
    margin: float
    chosen: str
    truth: str | None

    @property
    def known(self) -> bool:
        """Whether the message belongs to a runbook of the pack."""
        return self.truth is not None

    @property
    def right(self) -> bool:
        """Whether the best runbook is the one it belongs to."""
        return self.truth is not None and self.chosen == self.truth


@dataclass(frozen=True)
class Setting:
    """What one (min_score, min_margin) does to the probes."""

    min_score: float
    min_margin: float
    known_accuracy: float  # known probes routed right (routing accuracy)
    unknown_recall: float  # out-of-scope probes handed off (handoff recall); 1.0 when there are none
    wrong_rate: float | None  # of the probes kept: routed wrongly or out of scope; None when none is kept
    handed_off: float  # share of all probes handed off


def known_probes(index: RunbookIndex) -> list[Probe]:
    """Each example of the pack, scored by a scorer that did not see it."""
    scorer, examples = index.scorer, index.examples
    if isinstance(scorer, HeadScorer):
        p = scorer.probes
        return [
            Probe(
                text=examples.texts[int(row)],
                top=float(top),
                margin=float(margin),
                chosen=scorer.classes[int(chosen)],
                truth=scorer.classes[int(truth)],
            )
            for row, top, margin, chosen, truth in zip(p.rows, p.top, p.margin, p.chosen, p.truth, strict=True)
        ]
    found: list[Probe] = []
    for i in range(len(examples.labels)):
        keep = np.ones(len(examples.labels), dtype=bool)
        keep[i] = False
        if not (examples.labels[keep] == examples.labels[i]).any():
            continue  # its runbook has no other example: it cannot be known without itself
        rest = ExampleVectors.build(
            [
                (examples.classes[int(label)], text, vector)
                for label, text, vector, k in zip(examples.labels, examples.texts, examples.vectors, keep, strict=True)
                if k
            ]
        )
        scores = make_scorer(scorer.kind, rest).scores(examples.vectors[i : i + 1])[0]
        order = np.argsort(-scores, kind="stable")
        second = float(scores[order[1]]) if len(order) > 1 else 0.0
        found.append(
            Probe(
                text=examples.texts[i],
                top=round(float(scores[order[0]]), 4),
                margin=round(float(scores[order[0]]) - second, 4),
                chosen=rest.classes[int(order[0])],
                truth=examples.classes[int(examples.labels[i])],
            )
        )
    return found


def text_probes(index: RunbookIndex, texts: Sequence[str], truths: Sequence[str | None] | None = None) -> list[Probe]:
    """Messages scored by the pack's scorer; ``truths`` None means every one is out of scope."""
    if not texts:
        return []
    truths = list(truths) if truths is not None else [None] * len(texts)
    ranked = index.query_vectors(index.embedder.embed(list(texts)), 2)
    found = []
    for text, truth, candidates in zip(texts, truths, ranked, strict=True):
        second = candidates[1].score if len(candidates) > 1 else 0.0
        top = candidates[0]
        found.append(Probe(text, top.score, round(top.score - second, 4), top.runbook_id, truth))
    return found


def sweep(points: list[Probe], scores: list[float] | None = None, margins: list[float] | None = None) -> list[Setting]:
    """Every (min_score, min_margin) on the grid, with what it does to the probes."""
    top = np.array([p.top for p in points])
    margin = np.array([p.margin for p in points])
    right = np.array([p.right for p in points])
    known = np.array([p.known for p in points])
    settings = []
    for min_score in scores or SCORES:
        for min_margin in margins or MARGINS:
            keep = (top >= min_score - 1e-9) & (margin >= min_margin - 1e-9)
            kept = int(keep.sum())
            settings.append(
                Setting(
                    min_score=min_score,
                    min_margin=min_margin,
                    known_accuracy=float((keep & right)[known].mean()) if known.any() else 0.0,
                    unknown_recall=float((~keep)[~known].mean()) if (~known).any() else 1.0,
                    wrong_rate=float((keep & ~right).sum() / kept) if kept else None,
                    handed_off=float((~keep).mean()) if len(points) else 0.0,
                )
            )
    return settings


def recommend(settings: list[Setting], target_wrong: float = 0.05) -> Setting:
    """The setting that keeps the most at a wrong-resolution rate at or under the target.

    Ties go to better routing, then to the lower thresholds. When no setting reaches the target,
    the one with the fewest wrong resolutions.
    """
    reaching = [s for s in settings if s.wrong_rate is not None and s.wrong_rate <= target_wrong]
    if not reaching:
        rated = [s for s in settings if s.wrong_rate is not None] or settings
        return min(rated, key=lambda s: (s.wrong_rate or 0.0, -s.known_accuracy))
    return max(reaching, key=lambda s: (-s.handed_off, s.known_accuracy, -s.min_score, -s.min_margin))


def confusions(points: list[Probe]) -> list[Probe]:
    """Known probes routed to another runbook, by their own runbook, highest score first."""
    wrong = [p for p in points if p.known and not p.right]
    return sorted(wrong, key=lambda p: (p.truth or "", -p.top))


def warnings_for(best: Setting, points: list[Probe]) -> list[str]:
    """What an author should know about a suggestion before taking it."""
    notes = []
    if best.known_accuracy < LOW_ROUTING:
        notes.append(
            f"the suggestion routes only {best.known_accuracy:.0%} of the pack's own examples (under "
            f"{LOW_ROUTING:.0%}): runbooks overlap or have too few examples; read the confusions above"
        )
    if best.wrong_rate is None:
        notes.append("the suggestion keeps no probe at all: the pack cannot be calibrated on these probes")
    if not any(not p.known for p in points):
        notes.append("no out-of-scope probe: the suggestion cannot tell how often a stray message is kept")
    return notes


# The method before issue 16: kept for comparison (bench/routing.py), not used by the commands.
def leave_one_out(pack: Pack, embedder: Embedder) -> list[tuple[float, float, bool, bool]]:
    """Leave-one-out probes of the ``nearest`` scorer: (top, margin, right, known) per probe.

    Known: each example against the pack without it. Unknown: each example against the pack
    without its whole runbook.
    """
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
    found = []
    for i in range(len(texts)):
        keep = np.ones(len(texts), dtype=bool)
        keep[i] = False
        for known in (True, False):
            sims, labs = similarity[i][keep], labels[keep]
            scores = {
                rid: runbook_score(sims[labs == rid].tolist())
                for rid in runbooks
                if (known or rid != owners[i]) and (labs == rid).any()
            }
            ranked = sorted(scores.values(), reverse=True)
            if len(ranked) < 2:
                continue
            best = max(scores, key=lambda r: scores[r])
            found.append((ranked[0], ranked[0] - ranked[1], known and best == owners[i], known))
    return found


def leave_one_out_setting(points: list[tuple[float, float, bool, bool]], target_recall: float) -> tuple[float, float]:
    """The old suggestion: best known accuracy among settings handing off ``target_recall`` of unknowns."""
    old_scores = [round(float(x), 2) for x in np.arange(0.30, 0.91, 0.01)]
    old_margins = [0.0, 0.01, 0.02, 0.03, 0.05, 0.08]
    top = np.array([p[0] for p in points])
    margin = np.array([p[1] for p in points])
    right = np.array([p[2] for p in points])
    known = np.array([p[3] for p in points])
    rows = []
    for s in old_scores:
        for m in old_margins:
            accept = (top >= s) & (margin >= m)
            rows.append((s, m, float((accept & right)[known].mean()), float((~accept)[~known].mean())))
    reaching = [r for r in rows if r[3] >= target_recall]
    if not reaching:
        best = max(rows, key=lambda r: r[3])
    else:
        best = max(reaching, key=lambda r: (r[2], -r[0]))
    return best[0], best[1]


def load_probe_file(path: Path) -> list[str]:
    """Out-of-scope messages from a text file (one a line; # starts a note)."""
    return read_lines(path.read_text(encoding="utf-8"))
