"""Routing quality on data nobody here wrote: BANKING77 with held-out intents, three scorers side by side.

The dataset becomes a pack and cases exactly as ``tierone eval import`` makes them (same k,
held-out count and seed): 57 known intents with 10 examples each, 20 intents held out as
"nothing fits", every test message a single-turn case. Each scorer is measured on the same
vectors, in one go:

- ``nearest`` (today's): 0.6 x nearest example + 0.4 x the next three, thresholds from the old
  leave-one-out calibration at 80% handoff recall of its "neighbouring runbook" probes;
- ``centroid``: cosine to each runbook's mean vector (baseline), thresholds from the new calibration;
- ``head``: the trained head (vectorstore/scorer.py), thresholds from the new calibration
  (known out-of-fold probes and the bundled out-of-scope messages, wrong resolutions <= 5%).

For each: routing accuracy, handoff recall and wrong-resolution rate at its calibrated point, and
at the best ``min_score`` (margin 0) reaching handoff recall 0.80 and 0.90 on the test cases
(an oracle point: it shows the curve, not what calibration would pick). Decisions are the
policy's triage for a single message with no clarifying question (``max_clarifications: 0``, as
imported packs set): kept when the best score reaches ``min_score`` and its lead ``min_margin``.

    .venv/bin/python bench/routing.py [DATASET_DIR]   # default ../shared/datasets/banking77
    .venv/bin/python bench/routing.py --train-pack DIR   # only: how long DIR's head takes to train
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from core.pack import Pack, load_pack
from eval.calibrate import (
    known_probes,
    leave_one_out,
    leave_one_out_setting,
    recommend,
    sweep,
    text_probes,
)
from eval.importer import import_intents
from vectorstore.embeddings import MiniLMEmbedder
from vectorstore.index import RunbookIndex, open_client
from vectorstore.scorer import bundled_out_of_scope, train_head


@dataclass(frozen=True)
class Point:
    """Figures of one scorer at one (min_score, min_margin)."""

    min_score: float
    min_margin: float
    routing: float
    recall: float
    wrong: float


def measure(
    top: NDArray[np.float64],
    margin: NDArray[np.float64],
    right: NDArray[np.bool_],
    known: NDArray[np.bool_],
    min_score: float,
    min_margin: float,
) -> Point:
    """The eval's routing accuracy, handoff recall and wrong-resolution rate at one setting."""
    keep = (top >= min_score - 1e-9) & (margin >= min_margin - 1e-9)
    kept = max(int(keep.sum()), 1)
    return Point(
        min_score=min_score,
        min_margin=min_margin,
        routing=float((keep & right)[known].mean()),
        recall=float((~keep)[~known].mean()),
        wrong=float((keep & ~right).sum() / kept),
    )


def at_recall(
    top: NDArray[np.float64],
    margin: NDArray[np.float64],
    right: NDArray[np.bool_],
    known: NDArray[np.bool_],
    recall: float,
) -> Point:
    """The best routing among ``min_score`` values (margin 0) that hand off at least ``recall``."""
    best: Point | None = None
    for threshold in np.unique(np.round(top, 4)):
        point = measure(top, margin, right, known, float(threshold), 0.0)
        if point.recall >= recall and (best is None or point.routing > best.routing):
            best = point
    assert best is not None
    return best


def time_training(pack_dir: Path) -> None:
    """Embed a pack and train its head from scratch (an empty head cache), and print how long each took."""
    embedder = MiniLMEmbedder(cache_size=0)
    pack = load_pack(pack_dir)
    with tempfile.TemporaryDirectory(prefix="tierone-bench-") as tmp:
        index = RunbookIndex(open_client(None), pack, embedder, head_cache=Path(tmp))
        texts = [t for rb in pack.runbooks.values() for t in [rb.meta.title, *rb.meta.examples]]
        started = time.perf_counter()
        embedder.embed(texts[:1])
        index.sync()
        total = time.perf_counter() - started
        examples = index.examples
        started = time.perf_counter()
        train_head(examples, strays=embedder.embed(bundled_out_of_scope("train")))
        training = time.perf_counter() - started
        again = RunbookIndex(open_client(None), pack, embedder, head_cache=Path(tmp))
        started = time.perf_counter()
        state = again.sync().head
        second = time.perf_counter() - started
    print(
        f"{pack_dir}: {len(pack.runbooks)} runbooks, {len(examples.labels)} vectors; index built in {total:.1f} s "
        f"(embedding and head); the head alone trains in {training:.1f} s; "
        f"a second index: {second:.1f} s ({state} head)"
    )


def _parse_args() -> argparse.Namespace:
    """The command line: dataset, import settings, calibration target, latency sample, or --train-pack."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=Path("../shared/datasets/banking77"))
    parser.add_argument("--k", type=int, default=10, help="examples per intent (as `tierone eval import`)")
    parser.add_argument("--holdout", type=int, default=20, help="intents held out (as `tierone eval import`)")
    parser.add_argument("--seed", type=int, default=0, help="seed (as `tierone eval import`)")
    parser.add_argument("--target", type=float, default=0.05, help="wrong-resolution target of the calibration")
    parser.add_argument("--latency-queries", type=int, default=300, help="messages timed one at a time")
    parser.add_argument("--train-pack", type=Path, default=None, help="time building DIR's index and head instead")
    return parser.parse_args()


Row = tuple[Point, Point, Point, str]


def _bench_scorer(
    kind: str,
    pack: Pack,
    embedder: MiniLMEmbedder,
    work: Path,
    texts: list[str],
    truth: list[str | None],
    vectors: NDArray[np.float32] | None,
    *,
    target: float,
    latency_queries: int,
) -> tuple[Row, tuple[float, float], NDArray[np.float32]]:
    """Build the index with one scorer, calibrate it, measure it on the test messages and time queries.

    Args:
        kind: The scorer: nearest, centroid or head.
        pack: The imported pack.
        embedder: The embedder, shared by every scorer.
        work: The scratch folder (the head's cache goes under it).
        texts: The test messages.
        truth: Each message's runbook, None for a held-out intent.
        vectors: The messages' vectors; None to embed them once this index is built.
        target: The wrong-resolution target of the calibration.
        latency_queries: How many messages to time one at a time.

    Returns:
        The scorer's row (calibrated, at recall 0.8, at recall 0.9, how it was calibrated), its
        query p50 and p95 in ms, and the messages' vectors.
    """
    policy = pack.policy.model_copy(update={"routing": pack.policy.routing.model_copy(update={"scorer": kind})})
    scored_pack = type(pack)(root=pack.root, runbooks=pack.runbooks, policy=policy)
    index = RunbookIndex(open_client(None), scored_pack, embedder, head_cache=work / "heads")
    started = time.perf_counter()
    index.sync()
    built = time.perf_counter() - started
    if vectors is None:
        vectors = np.asarray(embedder.embed(texts))
    ranked = index.query_vectors(vectors, 2)
    top = np.array([r[0].score for r in ranked])
    margin = np.array([r[0].score - r[1].score for r in ranked])
    right = np.array([r[0].runbook_id == t for r, t in zip(ranked, truth, strict=True)])
    known = np.array([t is not None for t in truth])
    if kind == "nearest":
        score, min_margin = leave_one_out_setting(leave_one_out(pack, embedder), 0.8)
        how = "old leave-one-out, 80%"
    else:
        probes = known_probes(index) + text_probes(index, bundled_out_of_scope("check"))
        best = recommend(sweep(probes), target)
        score, min_margin = best.min_score, best.min_margin
        how = f"new, wrong <= {target:g}"
    calibrated = measure(top, margin, right, known, score, min_margin)
    row = (
        calibrated,
        at_recall(top, margin, right, known, 0.8),
        at_recall(top, margin, right, known, 0.9),
        how,
    )
    timings = []
    for text in texts[:latency_queries]:
        started = time.perf_counter()
        index.query(text, 5)
        timings.append((time.perf_counter() - started) * 1000)
    latency = (statistics.median(timings), float(np.percentile(timings, 95)))
    print(
        f"{kind}: index built in {built:.1f} s ({index.head_state} head)"
        if kind == "head"
        else f"{kind}: index built in {built:.1f} s"
    )
    return row, latency, vectors


def _print_table(rows: dict[str, Row], latency: dict[str, tuple[float, float]]) -> None:
    """Print one line of figures per scorer."""
    print(
        f"{'scorer':9} {'setting':>22} {'calibrated: routing':>20} {'recall':>7} {'wrong':>6} | "
        f"{'@recall 0.80: routing':>22} {'wrong':>6} | {'@recall 0.90: routing':>22} {'wrong':>6} | "
        f"query p50/p95 ms"
    )
    for kind, (cal, r80, r90, how) in rows.items():
        p50, p95 = latency[kind]
        print(
            f"{kind:9} {cal.min_score:>10.2f}/{cal.min_margin:<4.2f}     {cal.routing:>20.3f} {cal.recall:>7.3f} "
            f"{cal.wrong:>6.3f} | {r80.routing:>22.3f} {r80.wrong:>6.3f} | {r90.routing:>22.3f} {r90.wrong:>6.3f} | "
            f"{p50:.1f}/{p95:.1f}   ({how})"
        )


def main() -> None:
    """Run the benchmark and print the figures."""
    args = _parse_args()
    if args.train_pack is not None:
        time_training(args.train_pack)
        return

    with tempfile.TemporaryDirectory(prefix="tierone-bench-") as tmp:
        work = Path(tmp)
        report = import_intents(
            args.dataset / "train.json",
            work,
            k=args.k,
            holdout=args.holdout,
            seed=args.seed,
            test=args.dataset / "test.json",
        )
        cases = [json.loads(line) for line in report.cases_file.read_text().splitlines()]
        texts = [c["turns"][0] for c in cases]
        truth = [c["expect"]["runbook"] for c in cases]
        print(f"{report.runbooks} runbooks, {len(report.held_out)} intents held out, {len(cases)} test messages")
        load = time.perf_counter()
        embedder = MiniLMEmbedder(cache_size=0)
        print(f"model load: {time.perf_counter() - load:.1f} s")
        pack = load_pack(report.pack_dir)
        rows: dict[str, Row] = {}
        latency: dict[str, tuple[float, float]] = {}
        vectors = None
        for kind in ("nearest", "centroid", "head"):
            rows[kind], latency[kind], vectors = _bench_scorer(
                kind,
                pack,
                embedder,
                work,
                texts,
                truth,
                vectors,
                target=args.target,
                latency_queries=args.latency_queries,
            )

    print()
    _print_table(rows, latency)


if __name__ == "__main__":
    main()
