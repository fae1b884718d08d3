"""The Chroma routing index: persistent, re-embedding only what changed."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS
from tests.fakes import HashingEmbedder
from vectorstore.embeddings import Embedder, Vector
from vectorstore.index import RunbookIndex, open_client, runbook_score
from vectorstore.scorer import bundled_out_of_scope


class CountingEmbedder:
    """An embedder that counts the texts it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> Vector:
        self.texts += len(texts)
        return self.inner.embed(texts)


def test_sync_reembeds_only_changed_runbooks(tmp_path: Path) -> None:
    pack_dir = tmp_path / "pack"
    shutil.copytree(BUNDLED_RUNBOOKS, pack_dir)
    counting = CountingEmbedder(HashingEmbedder())
    chroma = tmp_path / "chroma"
    heads = tmp_path / "heads"

    first = RunbookIndex(open_client(chroma), load_pack(pack_dir), counting, head_cache=heads).sync()
    assert len(first.added) == 25 and first.unchanged == 0 and first.head == "trained"
    total = counting.texts

    # A new process on the same folder finds everything in place, its routing head included.
    again = RunbookIndex(open_client(chroma), load_pack(pack_dir), counting, head_cache=heads).sync()
    assert again.added == [] and again.updated == [] and again.unchanged == 25 and again.head == "cached"
    assert counting.texts == total

    printer = pack_dir / "devices" / "printer-problem.md"
    printer.write_text(printer.read_text().replace("examples:\n", "examples:\n  - the plotter jams\n", 1))
    (pack_dir / "devices" / "disk-full.md").unlink()
    index = RunbookIndex(open_client(chroma), load_pack(pack_dir), counting, head_cache=heads)
    changed = index.sync()
    assert changed.updated == ["printer-problem"] and changed.removed == ["disk-full"] and changed.head == "trained"
    runbook = index.pack.runbooks["printer-problem"]
    # The changed runbook's texts, and the out-of-scope messages the new head trains against.
    strays = len(bundled_out_of_scope("train"))
    assert counting.texts == total + 1 + len(runbook.meta.examples) + strays
    assert index.query("the plotter jams", 1)[0].runbook_id == "printer-problem"
    assert all(c.runbook_id != "disk-full" for c in index.query("my C drive is full", 5))


def test_query_ranks_the_fitting_runbook_first(bundled_index: RunbookIndex) -> None:
    candidates = bundled_index.query("I can't remember my password", 3)
    assert candidates[0].runbook_id == "password-reset"
    assert candidates[0].score > candidates[1].score
    assert candidates[0].score > 0.6


def test_runbook_score_tempers_a_single_lucky_example() -> None:
    assert runbook_score([0.9]) == 0.9
    assert np.isclose(runbook_score([0.9, 0.5, 0.5, 0.5, 0.1]), 0.6 * 0.9 + 0.4 * 0.5)
    assert runbook_score([0.8, 0.8]) > runbook_score([0.8, 0.2])
