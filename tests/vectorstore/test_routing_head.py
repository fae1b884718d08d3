"""The trained routing head: it routes, it is cached by the pack's hash, and the same pack scores the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.pack import Pack, load_pack
from tests.routing_pack import RUNBOOKS, write_pack
from vectorstore.embeddings import MiniLMEmbedder
from vectorstore.index import RunbookIndex, open_client, runbook_score
from vectorstore.scorer import ExampleVectors, HeadScorer, NearestScorer, train_head

QUERIES = ["I can't log in, forgot the password", "vpn drops every few minutes", "what's the weather tomorrow"]


def index_of(pack: Pack, embedder: MiniLMEmbedder, cache: Path) -> RunbookIndex:
    return RunbookIndex(open_client(None), pack, embedder, head_cache=cache)


@pytest.fixture
def pack(tmp_path: Path) -> Pack:
    return load_pack(write_pack(tmp_path / "pack"))


def test_head_routes_the_pack_and_scores_in_0_1(pack: Pack, embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    index = index_of(pack, embedder, tmp_path / "heads")
    assert index.sync().head == "trained"
    assert isinstance(index.scorer, HeadScorer)
    assert index.query(QUERIES[0], 1)[0].runbook_id == "password-reset"
    assert index.query(QUERIES[1], 1)[0].runbook_id == "vpn-connection"
    candidates = index.query(QUERIES[1], 3)
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
    assert all(0.0 <= c.score <= 1.0 for c in candidates)
    assert candidates[0].matched in RUNBOOKS["vpn-connection"][1] + [RUNBOOKS["vpn-connection"][0]]
    # Small talk scores well below a message the pack covers.
    assert index.query(QUERIES[2], 1)[0].score < index.query(QUERIES[1], 1)[0].score


def test_a_second_index_of_the_same_pack_trains_nothing(pack: Pack, embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    cache = tmp_path / "heads"
    first = index_of(pack, embedder, cache)
    assert first.sync().head == "trained"
    head_file = first.head_file()
    assert head_file.exists() and list(cache.iterdir()) == [head_file]
    stamp = head_file.stat().st_mtime_ns

    again = index_of(load_pack(pack.root), embedder, cache)
    assert again.sync().head == "cached"
    assert head_file.stat().st_mtime_ns == stamp  # not written again
    assert again.query(QUERIES[0], 3) == first.query(QUERIES[0], 3)

    # A changed example is a new pack: its head is trained and cached beside the old one.
    changed = dict(RUNBOOKS)
    changed["printer-problem"] = (RUNBOOKS["printer-problem"][0], [*RUNBOOKS["printer-problem"][1], "the plotter jams"])
    other = index_of(load_pack(write_pack(tmp_path / "pack", changed)), embedder, cache)
    assert other.sync().head == "trained"
    assert other.head_file() != head_file and len(list(cache.iterdir())) == 2


def test_a_damaged_cache_file_is_trained_again(pack: Pack, embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    index = index_of(pack, embedder, tmp_path / "heads")
    index.sync()
    index.head_file().write_bytes(b"not a head")
    again = index_of(pack, embedder, tmp_path / "heads")
    assert again.sync().head == "trained"
    assert again.query(QUERIES[0], 1)[0].runbook_id == "password-reset"


def test_same_pack_same_scores(pack: Pack, embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    one = index_of(pack, embedder, tmp_path / "a")
    two = index_of(load_pack(pack.root), embedder, tmp_path / "b")
    assert one.sync().head == two.sync().head == "trained"
    vectors = embedder.embed(QUERIES)
    assert np.array_equal(one.scorer.scores(vectors), two.scorer.scores(vectors))
    assert one.head_file().name == two.head_file().name


def test_examples_are_grouped_the_same_whatever_order_chroma_returns(embedder: MiniLMEmbedder) -> None:
    rows = [
        (rid, text, v)
        for rid, (_, texts) in RUNBOOKS.items()
        for text, v in zip(texts, embedder.embed(texts), strict=True)
    ]
    forward, backward = ExampleVectors.build(rows), ExampleVectors.build(rows[::-1])
    assert forward.classes == backward.classes == sorted(RUNBOOKS)
    assert list(forward.labels) == sorted(forward.labels)
    assert set(forward.texts) == set(backward.texts)


def test_training_reports_progress(embedder: MiniLMEmbedder) -> None:
    rows = [
        (rid, text, v)
        for rid, (_, texts) in RUNBOOKS.items()
        for text, v in zip(texts, embedder.embed(texts), strict=True)
    ]
    seen: list[tuple[int, int]] = []
    head = train_head(ExampleVectors.build(rows), lambda done, total: seen.append((done, total)))
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] and len(seen) == seen[-1][1] + 1
    assert len(head.probes.top) == len(rows)  # every example has other examples of its runbook


def test_the_nearest_scorer_is_kept_as_a_pack_choice(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    root = write_pack(tmp_path / "pack")
    (root / "policy.yaml").write_text("routing:\n  scorer: nearest\n")
    index = index_of(load_pack(root), embedder, tmp_path / "heads")
    assert index.sync().head == "none" and not (tmp_path / "heads").exists()
    assert isinstance(index.scorer, NearestScorer)
    text = "my print jobs never come out"
    query = embedder.embed([text])[0]
    texts = [RUNBOOKS["printer-problem"][0], *RUNBOOKS["printer-problem"][1]]
    sims = [max(0.0, float(v @ query)) for v in embedder.embed(texts)]
    best = index.query(text, 1)[0]
    assert best.runbook_id == "printer-problem"
    assert best.score == pytest.approx(runbook_score(sims), abs=1e-4)
