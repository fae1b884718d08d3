"""The Chroma routing index: persistent, re-embedding only what changed, in a folder or on a Chroma server."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.pack import Pack, load_pack
from core.settings import BUNDLED_RUNBOOKS
from tests.fakes import HashingEmbedder
from tests.vectorstore.conftest import OpenClient
from vectorstore.embeddings import Embedder, Vector
from vectorstore.index import RunbookIndex, collection_name, on_server, open_client, runbook_score
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


def rows(pack: Pack) -> int:
    """How many vectors a pack's index holds: each runbook's title and examples."""
    return sum(1 + len(runbook.meta.examples) for runbook in pack.runbooks.values())


def test_a_new_process_finds_the_index_in_place(open_backend: OpenClient, tmp_path: Path) -> None:
    pack = load_pack(BUNDLED_RUNBOOKS)
    counting = CountingEmbedder(HashingEmbedder())
    first = RunbookIndex(open_backend(), pack, counting, head_cache=tmp_path / "heads")
    report = first.sync()
    assert len(report.added) == 25 and report.unchanged == 0 and report.head == "trained"
    assert first.count() == rows(pack)
    embedded = counting.texts

    again = RunbookIndex(open_backend(), pack, counting, head_cache=tmp_path / "heads")
    report = again.sync()
    assert report.added == report.updated == report.removed == [] and report.unchanged == 25
    assert report.head == "cached" and counting.texts == embedded and again.count() == rows(pack)
    assert again.query("the printer jams", 3) == first.query("the printer jams", 3)


def test_a_runbook_stored_only_in_part_is_written_again(open_backend: OpenClient, tmp_path: Path) -> None:
    # What a process stopped in the middle of a sync leaves behind.
    pack = load_pack(BUNDLED_RUNBOOKS)
    embedder = HashingEmbedder()
    RunbookIndex(open_backend(), pack, embedder, head_cache=tmp_path / "heads").sync()
    client = open_backend()
    collection = client.get_collection(collection_name(pack, embedder, shared=on_server(client)))
    collection.delete(ids=["printer-problem::2", "printer-problem::3"])

    index = RunbookIndex(open_backend(), pack, embedder, head_cache=tmp_path / "heads")
    report = index.sync()
    assert report.updated == ["printer-problem"] and report.added == [] and report.unchanged == 24
    assert index.count() == rows(pack)
    assert sorted(index.examples.texts) == sorted(
        text for rb in pack.runbooks.values() for text in [rb.meta.title, *rb.meta.examples]
    )


def test_the_folder_and_the_server_route_alike_with_memory(open_backend: OpenClient, tmp_path: Path) -> None:
    pack = load_pack(BUNDLED_RUNBOOKS)
    messages = ["I forgot my password", "the printer jams", "my VPN drops", "what is the meaning of life"]
    here = RunbookIndex(open_client(None), pack, HashingEmbedder(), head_cache=tmp_path / "memory-heads")
    there = RunbookIndex(open_backend(), pack, HashingEmbedder(), head_cache=tmp_path / "heads")
    here.sync(), there.sync()
    assert [there.query(m, 5) for m in messages] == [here.query(m, 5) for m in messages]


def test_sync_reembeds_only_changed_runbooks(open_backend: OpenClient, tmp_path: Path) -> None:
    pack_dir = tmp_path / "pack"
    shutil.copytree(BUNDLED_RUNBOOKS, pack_dir)
    counting = CountingEmbedder(HashingEmbedder())
    heads = tmp_path / "heads"

    first = RunbookIndex(open_backend(), load_pack(pack_dir), counting, head_cache=heads).sync()
    assert len(first.added) == 25 and first.unchanged == 0 and first.head == "trained"
    total = counting.texts

    # A new process finds everything in place, its routing head included.
    again = RunbookIndex(open_backend(), load_pack(pack_dir), counting, head_cache=heads).sync()
    assert again.added == [] and again.updated == [] and again.unchanged == 25 and again.head == "cached"
    assert counting.texts == total

    printer = pack_dir / "devices" / "printer-problem.md"
    printer.write_text(printer.read_text().replace("examples:\n", "examples:\n  - the plotter jams\n", 1))
    (pack_dir / "devices" / "disk-full.md").unlink()
    client = open_backend()
    index = RunbookIndex(client, load_pack(pack_dir), counting, head_cache=heads)
    changed = index.sync()
    if on_server(client):
        # A collection of the new content's own, filled from the older one but for the changed runbook.
        assert len(changed.added) == 24 and changed.updated == changed.removed == []
    else:
        assert changed.updated == ["printer-problem"] and changed.removed == ["disk-full"]
    assert changed.head == "trained" and index.count() == rows(index.pack)
    runbook = index.pack.runbooks["printer-problem"]
    # The changed runbook's texts, and the out-of-scope messages the new head trains against.
    strays = len(bundled_out_of_scope("train"))
    assert counting.texts == total + 1 + len(runbook.meta.examples) + strays
    assert index.query("the plotter jams", 1)[0].runbook_id == "printer-problem"
    assert all(c.runbook_id != "disk-full" for c in index.query("my C drive is full", 5))
    # Copied vectors are the ones the model gives: the index routes as one built from scratch does.
    scratch = RunbookIndex(open_client(None), load_pack(pack_dir), HashingEmbedder(), head_cache=tmp_path / "h2")
    scratch.sync()
    assert np.allclose(index.examples.vectors, scratch.examples.vectors, atol=1e-6)


def test_query_ranks_the_fitting_runbook_first(bundled_index: RunbookIndex) -> None:
    candidates = bundled_index.query("I can't remember my password", 3)
    assert candidates[0].runbook_id == "password-reset"
    assert candidates[0].score > candidates[1].score
    assert candidates[0].score > 0.6


def test_runbook_score_tempers_a_single_lucky_example() -> None:
    assert runbook_score([0.9]) == 0.9
    assert np.isclose(runbook_score([0.9, 0.5, 0.5, 0.5, 0.1]), 0.6 * 0.9 + 0.4 * 0.5)
    assert runbook_score([0.8, 0.8]) > runbook_score([0.8, 0.2])
