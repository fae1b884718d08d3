"""The Chroma routing index: persistent, re-embedding only what changed."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS
from eval.cases import OTP, load_case_file
from tests.fakes import HashingEmbedder
from vectorstore.embeddings import Embedder, Vector
from vectorstore.index import RunbookIndex, collection_name, open_client, runbook_score


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

    first = RunbookIndex(open_client(chroma), load_pack(pack_dir), counting).sync()
    assert len(first.added) == 25 and first.unchanged == 0
    total = counting.texts

    # A new process on the same folder finds everything in place.
    again = RunbookIndex(open_client(chroma), load_pack(pack_dir), counting).sync()
    assert again.added == [] and again.updated == [] and again.unchanged == 25
    assert counting.texts == total

    printer = pack_dir / "devices" / "printer-problem.md"
    printer.write_text(printer.read_text().replace("examples:\n", "examples:\n  - the plotter jams\n", 1))
    (pack_dir / "devices" / "disk-full.md").unlink()
    index = RunbookIndex(open_client(chroma), load_pack(pack_dir), counting)
    changed = index.sync()
    assert changed.updated == ["printer-problem"] and changed.removed == ["disk-full"]
    runbook = index.pack.runbooks["printer-problem"]
    assert counting.texts == total + 1 + len(runbook.meta.examples)
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


def test_the_neighbours_are_the_exact_nearest_for_every_eval_message(bundled_index: RunbookIndex) -> None:
    stored = bundled_index._collection.get(include=["embeddings"])
    ids, matrix = np.array(stored["ids"]), np.array(stored["embeddings"], dtype=np.float32)
    cases = load_case_file(Path(__file__).resolve().parents[2] / "eval" / "cases" / "bundled.jsonl").cases
    texts = list(dict.fromkeys(t for case in cases for t in case.texts if t != OTP))
    assert len(texts) > 200
    vectors = bundled_index.embedder.embed(texts)
    k = RunbookIndex._NEIGHBOURS
    differ = []
    for text, vector in zip(texts, vectors, strict=True):
        found = bundled_index._collection.query(query_embeddings=vector[None], n_results=k, include=[])
        exact = ids[np.argsort(-(matrix @ vector))[:k]]
        if set(found["ids"][0]) != set(exact):
            differ.append(text)
    assert differ == []


def test_a_collection_made_with_the_default_search_breadth_is_widened(tmp_path: Path) -> None:
    pack = load_pack(BUNDLED_RUNBOOKS)
    embedder = HashingEmbedder()
    client = open_client(tmp_path / "chroma")
    client.get_or_create_collection(
        collection_name(pack, embedder), configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    assert client.get_collection(collection_name(pack, embedder)).configuration_json["hnsw"]["ef_search"] == 100
    RunbookIndex(open_client(tmp_path / "chroma"), pack, embedder)
    widened = open_client(tmp_path / "chroma").get_collection(collection_name(pack, embedder))
    assert widened.configuration_json["hnsw"]["ef_search"] == RunbookIndex._SEARCH_EF
