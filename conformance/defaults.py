"""Defaults shared by the library and the command line, in one light module.

Nothing here imports NumPy, SciPy, torch or MLflow, so that ``conformance --help``
and usage errors stay fast; the library's functions take these as their defaults.
"""

from __future__ import annotations

from pathlib import Path

#: The false-alarm rate a baseline is built for.
ALPHA = 0.05
#: The k of the k-th-nearest-neighbour distance.
K = 5
#: The share of a cell's outputs (whole prompts) held out for calibration, an upper bound (see ``build``).
CALIBRATION_FRACTION = 0.5
#: How a score becomes a p-value: ``sample`` (one calibration output per prompt), ``weighted`` (every
#: calibration output, each prompt weighing the same) or ``auto`` (picked per cell from its prompt counts).
CALIBRATION_METHODS = ("auto", "sample", "weighted")
CALIBRATION_METHOD = "auto"
#: Nonconformity scores a baseline can be built with.
SCORERS = ("knn_cosine", "combined")
SCORER = "combined"
#: Seed of the fit/calibration split and of the calibration draw.
SEED = 0
#: Permutations and seed of the batch tests.
PERMUTATIONS = 1000
BATCH_SEED = 0
#: How many nearest approved outputs a verdict names.
N_NEAREST = 3

#: The embedder's forward pass: torch (sentence-transformers), ONNX Runtime in fp32, or ONNX Runtime with
#: dynamic int8 quantisation (``pip install 'conformance-audit[onnx]'``; docs/pipelines.md, docs/validation.md).
EMBEDDER_BACKENDS = ("torch", "onnx", "onnx-int8")
EMBEDDER_BACKEND = "torch"

#: The embedded store (MLflow's SQLite database, its artifacts, the ledger), relative to the working directory.
STORE_DIR = "conformance_store"
#: The longest input or output judged, in characters; a longer one is an ``invalid`` record with a reason that
#: says so (score --max-output-chars), rather than minutes of embedding and gigabytes of memory for one text.
MAX_TEXT_CHARS = 1_000_000


def default_store_dir() -> Path:
    """``./conformance_store`` in the working directory."""
    return Path.cwd() / STORE_DIR
