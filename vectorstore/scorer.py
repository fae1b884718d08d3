"""Routing scorers: from a message's vector to a score per runbook.

``head`` (the default) is trained at index time on the pack's own examples:

- a multinomial logistic regression on the frozen MiniLM vectors gives each runbook a probability;
- an out-of-scope model turns that probability and the similarity of the runbook's nearest example
  into one score, the estimated chance that routing the message there is right. It is fitted on
  out-of-fold probes of the pack's examples: an example scored by a head that never saw it (it
  should route to its own runbook) and the same example with its runbook struck out (nothing
  should fit).

Training is deterministic (fixed folds, lbfgs, one BLAS thread) and its result is cached by the
pack's content hash, so the same pack always gets the same scores and trains once.

``nearest`` is the scorer Tierone used before (similarity of a runbook's nearest examples) and
``centroid`` the plain nearest-centroid baseline; both are kept for comparison (bench/routing.py)
and as a pack's choice (``routing.scorer`` in policy.yaml).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

ScorerKind = Literal["head", "nearest", "centroid"]
Matrix = NDArray[np.float64]
# Called with (step done, steps in all) while a head trains.
Progress = Callable[[int, int], None]

# Bump when training or the file layout changes: every cached head is then trained again.
HEAD_VERSION = 2
FOLDS = 5
# Inverse regularisation of the runbook classifier. Chosen on BANKING77 (57 intents, 10 examples
# each): C=1 routed 0.635 of known messages at 80% handoff recall, C=10 0.737, C=100 0.754.
HEAD_C = 100.0


def nearest_score(similarities: list[float]) -> float:
    """A runbook's ``nearest`` score from the similarities of its examples to a message.

    The best example counts most; the next three temper it, so one lucky example does not carry
    a runbook whose other examples are far away.
    """
    best = sorted(similarities, reverse=True)
    if len(best) == 1:
        return best[0]
    rest = best[1:4]
    return 0.6 * best[0] + 0.4 * sum(rest) / len(rest)


class Scorer(Protocol):
    """Scores every runbook of a pack for a batch of message vectors."""

    kind: ScorerKind
    classes: list[str]

    def scores(self, queries: NDArray[np.float32]) -> Matrix:
        """One row per query, one column per runbook (``classes``), higher is a better fit."""
        ...


@dataclass(frozen=True)
class ExampleVectors:
    """A pack's routing texts and their vectors, grouped by runbook (classes sorted)."""

    vectors: NDArray[np.float32]
    labels: NDArray[np.int64]
    classes: list[str]
    texts: list[str]

    @classmethod
    def build(cls, rows: Sequence[tuple[str, str, NDArray[np.float32]]]) -> ExampleVectors:
        """From (runbook id, text, vector) rows, in any order: sorted by runbook, then text order kept."""
        classes = sorted({rid for rid, _, _ in rows})
        index = {rid: i for i, rid in enumerate(classes)}
        ordered = sorted(range(len(rows)), key=lambda i: index[rows[i][0]])  # stable: keeps text order
        vectors = np.stack([np.asarray(rows[i][2], dtype=np.float32) for i in ordered])
        labels = np.array([index[rows[i][0]] for i in ordered], dtype=np.int64)
        return cls(vectors=vectors, labels=labels, classes=classes, texts=[rows[i][1] for i in ordered])

    @property
    def starts(self) -> NDArray[np.int64]:
        """Where each runbook's rows start (rows are grouped by runbook)."""
        return np.searchsorted(self.labels, np.arange(len(self.classes))).astype(np.int64)


def products(matrix: NDArray[np.floating], queries: NDArray[np.floating]) -> Matrix:
    """``queries @ matrix.T``, one matrix-vector product per query, in the matrix's precision.

    The same form for one query or many, so that a message scores the same in a batch as alone.
    """
    rows = np.asarray(queries, dtype=matrix.dtype)
    if not len(rows):
        return np.zeros((0, len(matrix)))
    return np.stack([matrix @ row for row in rows]).astype(np.float64)


@functools.cache
def _blas() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_thread() -> Any:
    """A context in which BLAS runs on one thread.

    OpenBLAS spreads even a query's small products over every core; on the busy 2-core machine,
    waiting for its threads made scoring one message against a 154-runbook pack take p95 9-14 ms,
    against 0.3-0.5 ms on one thread (the same loop, the same minute).
    """
    return _blas().limit(limits=1, user_api="blas")


def class_max(similarity: Matrix, starts: NDArray[np.int64]) -> Matrix:
    """Per runbook, the highest similarity among its examples (columns grouped by runbook)."""
    return np.maximum.reduceat(similarity, starts, axis=1)


class NearestScorer:
    """Today's scorer: 0.6 x the nearest example's similarity + 0.4 x the mean of the next three."""

    kind: ScorerKind = "nearest"

    def __init__(self, examples: ExampleVectors) -> None:
        self.classes = examples.classes
        self._examples = examples
        self._bounds = [*examples.starts.tolist(), len(examples.labels)]

    def scores(self, queries: NDArray[np.float32]) -> Matrix:
        """Cosine similarities (clipped at 0) of each runbook's nearest examples, combined."""
        sims = np.clip(products(self._examples.vectors, queries), 0.0, None)
        out = np.empty((len(queries), len(self.classes)))
        for j in range(len(self.classes)):
            block = sims[:, self._bounds[j] : self._bounds[j + 1]]
            if block.shape[1] == 1:
                out[:, j] = block[:, 0]
                continue
            top = -np.sort(-block, axis=1)[:, :4]
            out[:, j] = 0.6 * top[:, 0] + 0.4 * top[:, 1:].mean(axis=1)
        return out


class CentroidScorer:
    """Baseline: cosine similarity to the mean of each runbook's example vectors."""

    kind: ScorerKind = "centroid"

    def __init__(self, examples: ExampleVectors) -> None:
        self.classes = examples.classes
        sums = np.add.reduceat(examples.vectors.astype(np.float64), examples.starts, axis=0)
        self._centroids = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)

    def scores(self, queries: NDArray[np.float32]) -> Matrix:
        """Cosine similarity to each runbook's centroid."""
        return products(self._centroids, queries)


@dataclass(frozen=True)
class Probes:
    """Out-of-fold scores of the pack's own examples, for calibration.

    Each probe is an example scored by a head trained without it: its best score, that score's
    lead over the runner-up, the runbook chosen and the example's own runbook (indices into the
    scorer's classes), and the example's row in the pack's examples.
    """

    top: Matrix
    margin: Matrix
    chosen: NDArray[np.int64]
    truth: NDArray[np.int64]
    rows: NDArray[np.int64]

    @property
    def right(self) -> NDArray[np.bool_]:
        """Whether each probe's best runbook is its own."""
        return np.asarray(self.chosen == self.truth)


def _softmax(logits: Matrix) -> Matrix:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def _sigmoid(x: Matrix) -> Matrix:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _fit_classifier(vectors: NDArray[np.float32], labels: NDArray[np.int64]) -> tuple[Matrix, Matrix, list[int]]:
    """Multinomial logistic regression; (coef, intercept, the labels it knows), in label order."""
    from sklearn.linear_model import LogisticRegression

    present = sorted(set(labels.tolist()))
    if len(present) == 1:  # one runbook: nothing to tell apart, every message gets probability 1
        return np.zeros((1, vectors.shape[1])), np.zeros(1), present
    model = LogisticRegression(C=HEAD_C, max_iter=5000)
    model.fit(vectors.astype(np.float64), labels)
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if len(present) == 2:  # sklearn's binary form: one row for the second class
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return coef, intercept, present


def _features(probs: Matrix, nearest: Matrix) -> tuple[Matrix, Matrix]:
    return np.log(np.clip(probs, 1e-12, 1.0)), nearest


class HeadScorer:
    """A trained head: runbook probabilities and nearest-example similarity, merged into one score."""

    kind: ScorerKind = "head"

    def __init__(
        self,
        examples: ExampleVectors,
        coef: Matrix,
        intercept: Matrix,
        meta: Matrix,
        probes: Probes,
    ) -> None:
        self.classes = examples.classes
        self._examples = examples
        self._starts = examples.starts
        self._coef = coef
        self._intercept = intercept
        self.meta = meta  # weights of log-probability and nearest similarity, then the bias
        self.probes = probes

    def scores(self, queries: NDArray[np.float32]) -> Matrix:
        """Estimated chance, per runbook, that routing the message there is right (0..1)."""
        probs = _softmax(products(self._coef, queries) + self._intercept)
        nearest = class_max(products(self._examples.vectors, queries), self._starts)
        return self._combine(probs, nearest)

    def _combine(self, probs: Matrix, nearest: Matrix) -> Matrix:
        logp, sim = _features(probs, nearest)
        return _sigmoid(self.meta[0] * logp + self.meta[1] * sim + self.meta[2])

    # The cache file holds everything but the example vectors (those live in the index).
    def save(self, path: Path) -> None:
        """Write the trained head to ``path`` atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(
                tmp,
                version=np.array(HEAD_VERSION),
                classes=np.array(self.classes),
                coef=self._coef,
                intercept=self._intercept,
                meta=self.meta,
                probe_top=self.probes.top,
                probe_margin=self.probes.margin,
                probe_chosen=self.probes.chosen,
                probe_truth=self.probes.truth,
                probe_rows=self.probes.rows,
            )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path, examples: ExampleVectors) -> HeadScorer | None:
        """A head saved by ``save`` for these examples; None when the file is missing, stale or damaged."""
        try:
            with np.load(path) as data:
                if int(data["version"]) != HEAD_VERSION or data["classes"].tolist() != examples.classes:
                    return None
                probes = Probes(
                    top=data["probe_top"],
                    margin=data["probe_margin"],
                    chosen=data["probe_chosen"].astype(np.int64),
                    truth=data["probe_truth"].astype(np.int64),
                    rows=data["probe_rows"].astype(np.int64),
                )
                return cls(examples, data["coef"], data["intercept"], data["meta"], probes)
        except (OSError, KeyError, ValueError):
            return None


def _folds(labels: NDArray[np.int64], folds: int) -> NDArray[np.int64]:
    """Each example's fold: a runbook's examples are dealt round the folds in a fixed shuffle."""
    rng = np.random.default_rng(0)
    fold = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        fold[rng.permutation(rows)] = np.arange(len(rows)) % folds
    return fold


def _expand(probs: Matrix, present: list[int], n_classes: int) -> Matrix:
    full = np.zeros((len(probs), n_classes))
    full[:, present] = probs
    return full


def _top_two(scores: Matrix) -> tuple[NDArray[np.int64], Matrix, Matrix]:
    order = np.argsort(-scores, axis=1, kind="stable")
    rows = np.arange(len(scores))
    second = scores[rows, order[:, 1]] if scores.shape[1] > 1 else np.zeros(len(scores))
    return order[:, 0].astype(np.int64), scores[rows, order[:, 0]], second


def _out_of_fold(
    examples: ExampleVectors, strays: NDArray[np.float32] | None, tick: Callable[[], None]
) -> tuple[Matrix, Matrix, NDArray[np.bool_], list[Matrix]]:
    """Score each example by a classifier fitted on the other folds.

    Args:
        examples: The pack's titles and examples with their vectors.
        strays: Vectors of messages no runbook should take, scored by each fold's classifier.
        tick: Called once per fold.

    Returns:
        The out-of-fold probabilities, nearest-example similarities per runbook, which examples
        had their runbook seen in training, and the stray probes' features per fold.
    """
    vectors, labels = examples.vectors, examples.labels
    n_classes = len(examples.classes)
    fold = _folds(labels, FOLDS)
    probs = np.zeros((len(labels), n_classes))
    nearest = np.full((len(labels), n_classes), -1.0)
    seen = np.zeros(len(labels), dtype=bool)  # its runbook had other examples in training
    stray_x: list[Matrix] = []
    for f in range(FOLDS):
        test, train = fold == f, fold != f
        if test.any() and train.any():
            coef, intercept, present = _fit_classifier(vectors[train], labels[train])
            logits = vectors[test].astype(np.float64) @ coef.T + intercept
            probs[test] = _expand(_softmax(logits), present, n_classes)
            sims = vectors[test].astype(np.float64) @ vectors[train].T.astype(np.float64)
            for j in range(n_classes):
                own = labels[train] == j
                if own.any():
                    nearest[test, j] = sims[:, own].max(axis=1)
            seen[test] = np.isin(labels[test], present)
            if strays is not None and len(strays):
                stray_probs = _expand(_softmax(strays.astype(np.float64) @ coef.T + intercept), present, n_classes)
                stray_sims = strays.astype(np.float64) @ vectors[train].T.astype(np.float64)
                stray_near = np.full((len(strays), n_classes), -1.0)
                for j in present:
                    stray_near[:, j] = stray_sims[:, labels[train] == j].max(axis=1)
                pick, _, _ = _top_two(stray_probs)
                picked = np.arange(len(strays)), pick
                stray_x.append(np.stack(_features(stray_probs[picked], stray_near[picked]), 1))
        tick()
    return probs, nearest, seen, stray_x


def _fit_combiner(
    probs: Matrix, nearest: Matrix, labels: NDArray[np.int64], seen: NDArray[np.bool_], stray_x: list[Matrix]
) -> NDArray[np.float64]:
    """Fit the out-of-scope model on known, struck-out and stray probes.

    Returns:
        Its weights for log-probability and similarity, then its intercept.
    """
    from sklearn.linear_model import LogisticRegression

    rows = np.arange(len(labels))
    # Known probes: the out-of-fold pick; unknown probes: the same with the example's runbook struck out.
    known_pick, _, _ = _top_two(probs)
    struck = probs.copy()
    struck[rows, labels] = 0.0
    struck /= np.clip(struck.sum(axis=1, keepdims=True), 1e-12, None)
    struck_near = nearest.copy()
    struck_near[rows, labels] = -1.0
    unknown_pick, _, _ = _top_two(struck)
    logp_k, sim_k = _features(probs[rows, known_pick], nearest[rows, known_pick])
    logp_u, sim_u = _features(struck[rows, unknown_pick], struck_near[rows, unknown_pick])
    x = np.concatenate([np.stack([logp_k[seen], sim_k[seen]], 1), np.stack([logp_u, sim_u], 1), *stray_x])
    y = np.concatenate([(known_pick == labels)[seen], np.zeros(len(x) - int(seen.sum()), dtype=bool)])
    if y.all() or not y.any():
        return np.array([1.0, 1.0, 0.0])
    model = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    return np.array([model.coef_[0][0], model.coef_[0][1], model.intercept_[0]], dtype=np.float64)


def train_head(
    examples: ExampleVectors,
    progress: Progress | None = None,
    *,
    strays: NDArray[np.float32] | None = None,
) -> HeadScorer:
    """Train the head on a pack's example vectors (deterministic; one BLAS thread).

    Args:
        examples: The pack's titles and examples with their vectors.
        progress: Called with (steps done, steps in all) as training goes.
        strays: Vectors of messages no runbook should take (small talk, other domains): more
            "nothing fits" probes for the out-of-scope model.

    Returns:
        The trained head, with its out-of-fold probes for calibration.
    """
    from threadpoolctl import threadpool_limits

    vectors, labels = examples.vectors, examples.labels
    steps = FOLDS + 2
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps)

    if progress is not None:
        progress(0, steps)

    # One thread: a BLAS that splits sums over threads may add them in another order, and the same
    # pack must give the same scores on any machine and load.
    with threadpool_limits(limits=1):
        probs, nearest, seen, stray_x = _out_of_fold(examples, strays, tick)
        meta = _fit_combiner(probs, nearest, labels, seen, stray_x)
        tick()

        coef, intercept, present = _fit_classifier(vectors, labels)
        if len(present) == 1:
            coef, intercept = np.zeros((1, vectors.shape[1])), np.zeros(1)
        tick()

    none = np.zeros(0, dtype=np.int64)
    head = HeadScorer(examples, coef, intercept, meta, Probes(np.zeros(0), np.zeros(0), none, none, none))
    known_scores = np.round(head._combine(probs[seen], nearest[seen]), 4)
    chosen, top, second = _top_two(known_scores)
    probes = Probes(top=top, margin=top - second, chosen=chosen, truth=labels[seen], rows=np.flatnonzero(seen))
    return HeadScorer(examples, coef, intercept, meta, probes)


def bundled_out_of_scope(part: Literal["train", "check", "all"] = "all") -> list[str]:
    """Messages no support runbook should take (vectorstore/out_of_scope.txt, written for Tierone).

    Every other line trains heads (``"train"``); the rest (``"check"``) are left for calibration,
    so that the boundary is not chosen on messages the head learned from.
    """
    text = resources.files("vectorstore").joinpath("out_of_scope.txt").read_text(encoding="utf-8")
    lines = read_lines(text)
    if part == "all":
        return lines
    return lines[0::2] if part == "train" else lines[1::2]


def read_lines(text: str) -> list[str]:
    """Messages from a text file: one a line, blank lines and lines starting with # left out."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def head_key(fingerprint: str, embedder: str, strays: Sequence[str] = ()) -> str:
    """Name of a pack's cached head: its content hash, the embedding model, the strays and the head's version."""
    text = f"{fingerprint}:{embedder}:{HEAD_VERSION}:{HEAD_C}:{FOLDS}:" + "\n".join(strays)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def make_scorer(kind: ScorerKind, examples: ExampleVectors) -> Scorer:
    """An untrained scorer (``nearest`` or ``centroid``); heads come from ``train_head``."""
    if kind == "nearest":
        return NearestScorer(examples)
    if kind == "centroid":
        return CentroidScorer(examples)
    raise ValueError(f"the {kind!r} scorer is trained: use train_head")
