from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from vectorstore.embeddings import (
    MiniLMEmbedder,
    bundled_model_path,
    one_pass,
    onnx_model_file,
    quantized_model_file,
)

# Marked model: these tests are about the embedding model itself.
pytestmark = pytest.mark.model

TEXTS = [
    "I forgot my password and can't log in",
    "VPN keeps disconnecting",
    "ok",
    "",
    "Mein Konto ist gesperrt, bitte helfen Sie mir!",
    "printer on floor 3 shows offline — again?? 🙃",
    # Longer than the model's 256 tokens: both runtimes must cut it the same way.
    "the laptop fan is loud and the screen flickers when I dock it " * 30,
]


@pytest.fixture(scope="module")
def torch_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(runtime="torch", cache_size=0)


def test_onnx_runtime_gives_the_vectors_sentence_transformers_gives(
    embedder: MiniLMEmbedder, torch_embedder: MiniLMEmbedder
) -> None:
    assert embedder.runtime == "onnx"
    assert torch_embedder.runtime == "torch"
    onnx = MiniLMEmbedder(cache_size=0).embed(TEXTS)
    reference = torch_embedder.embed(TEXTS)
    assert onnx.shape == reference.shape == (len(TEXTS), 384)
    assert onnx.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(onnx, reference, atol=2e-5)


def test_batches_mixing_lengths_equal_one_at_a_time(embedder: MiniLMEmbedder) -> None:
    fresh = MiniLMEmbedder(cache_size=0)
    together = fresh.embed(TEXTS)
    alone = np.stack([fresh.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=2e-5)
    warmed = MiniLMEmbedder(cache_size=0)
    warmed.warm(TEXTS)
    np.testing.assert_array_equal(warmed.embed(TEXTS), np.stack([warmed.embed([t])[0] for t in TEXTS]))
    np.testing.assert_allclose(warmed.embed(TEXTS), alone, atol=2e-5)


def test_within_one_pass_a_text_is_embedded_once_even_with_the_cache_off() -> None:
    embedder = MiniLMEmbedder(cache_size=0)
    encoded: list[list[str]] = []
    encode = embedder._encode
    embedder._encode = lambda texts, batch, wide: encoded.append(list(texts)) or encode(texts, batch, wide)  # type: ignore[method-assign]
    first = embedder.embed(["no"])
    with one_pass():
        assert np.array_equal(embedder.embed(["no"]), first)
        assert np.array_equal(embedder.embed(["no", "still no"])[0], first[0])
        other = MiniLMEmbedder(cache_size=0)  # another embedder's vectors are its own
        other.embed(["no"])
    embedder.embed(["no"])  # the pass is over: embedded again
    assert encoded == [["no"], ["no"], ["still no"], ["no"]]


def test_the_export_is_made_once_and_reused(tmp_path: Path) -> None:
    first = onnx_model_file(bundled_model_path(), tmp_path)
    made = first.stat().st_mtime_ns
    again = onnx_model_file(bundled_model_path(), tmp_path)
    assert again == first
    assert again.stat().st_mtime_ns == made
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left behind


def test_the_8_bit_model_is_made_once_and_is_a_fraction_of_the_float_file(tmp_path: Path) -> None:
    first = quantized_model_file(bundled_model_path(), tmp_path)
    made = first.stat().st_mtime_ns
    assert quantized_model_file(bundled_model_path(), tmp_path) == first
    assert first.stat().st_mtime_ns == made
    exported = onnx_model_file(bundled_model_path(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([exported.name, first.name])
    # 8-bit weights: about a quarter of the float file.
    assert first.stat().st_size < exported.stat().st_size / 3


def test_the_quantized_embedder_is_a_near_copy_never_the_routing_one(
    embedder: MiniLMEmbedder, torch_embedder: MiniLMEmbedder
) -> None:
    quantized = embedder.quantized()
    assert quantized is not embedder and quantized.name == "all-minilm-l6-v2-int8"
    assert embedder.quantized() is quantized  # opened once, shared by every check over the index
    texts = [t for t in TEXTS if t]
    near, exact = quantized.embed(texts), embedder.embed(texts)
    assert near.shape == exact.shape and near.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(near, axis=1), 1.0, atol=1e-5)
    cosines = (near * exact).sum(axis=1)
    # Close, not equal: which is why routing, calibrated on the float vectors, never uses them.
    assert cosines.min() > 0.8 and cosines.max() < 0.9999
    assert torch_embedder.quantized() is torch_embedder  # the torch runtime has no 8-bit model


def test_a_damaged_export_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIERONE_MODEL_CACHE", str(tmp_path))
    damaged = onnx_model_file(bundled_model_path(), tmp_path)
    damaged.write_bytes(b"half a model")
    with caplog.at_level(logging.WARNING, logger="vectorstore.embeddings"):
        embedder = MiniLMEmbedder(cache_size=0)
    assert embedder.runtime == "onnx"
    assert "would not load" in caplog.text
    assert damaged.stat().st_size > 1_000_000
    assert embedder.embed(["VPN keeps disconnecting"]).shape == (1, 384)


def test_an_unwritable_model_cache_falls_back_to_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("TIERONE_MODEL_CACHE", str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="vectorstore.embeddings"):
        embedder = MiniLMEmbedder(cache_size=0)
    assert embedder.runtime == "torch"
    assert "ONNX embedding runtime unavailable" in caplog.text
    assert embedder.embed(["VPN keeps disconnecting"]).shape == (1, 384)


def test_an_unknown_runtime_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERONE_EMBEDDING_RUNTIME", "tensorflow")
    with pytest.raises(ValueError, match="TIERONE_EMBEDDING_RUNTIME must be onnx or torch, not 'tensorflow'"):
        MiniLMEmbedder()


def test_the_torch_runtime_warms_on_every_core_and_puts_its_threads_back(torch_embedder: MiniLMEmbedder) -> None:
    import torch

    before = torch.get_num_threads()
    warmed = MiniLMEmbedder(runtime="torch", cache_size=0)
    warmed.warm(TEXTS)
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(warmed.embed(TEXTS), torch_embedder.embed(TEXTS), atol=2e-5)
