"""The embedder's ONNX Runtime backends: ``onnx`` (fp32) and ``onnx-int8`` (dynamic int8 quantisation).

The ONNX model is made here, from the packaged weights, never downloaded: the first use exports the
sentence-transformers model (BERT, mean pooling and normalisation in one graph) with ``torch.onnx.export``
to ``<folder>/<model>.<weights>.fp32.onnx``; ``onnx-int8`` then quantises that file with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights, one scale per output channel) to
``....int8.onnx``. The folder is ``./conformance_store/onnx/`` beside the other stores, or the one named by
``CONFORMANCE_ONNX_DIR``. Each file is written to a temporary name in the folder and renamed, so a reader
never sees half a file; later runs load it without torch.

The fingerprint names the backend, the SHA-256 of the ONNX file the session runs and the onnxruntime
version (its kernels decide the rounding). The export is the same bytes for the same torch, transformers
and onnx versions; on a machine whose export differs, copy the ``.onnx`` files of the machine that built
the baselines into the folder (:meth:`OnnxEmbedder.mismatch_hint` says so when scoring refuses).

Chunking, bucketing by length and filling every batch to ``batch_size`` rows come from
:class:`~conformance.embedder_core.Embedder`, so an embedding depends only on its own text here too
(``tests/test_onnx_backend.py``); ``onnx-int8`` runs each chunk on its own, because dynamic quantisation
scales an activation by the range of the whole batch. The session runs its nodes one after another
(``ORT_SEQUENTIAL``, one inter-op thread) with onnxruntime's default intra-op threads: the same bits came
out with 1, 2 and 4 intra-op threads (docs/pipelines.md).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from conformance.defaults import default_store_dir
from conformance import embedder_bert
from conformance.embedder_core import DEFAULT_MODEL, Embedder
from conformance.errors import ConformanceError
from conformance.files import file_sha256

#: The environment variable that names the folder of the exported ONNX files.
ONNX_DIR_ENV = "CONFORMANCE_ONNX_DIR"
#: The ONNX operator set the export targets (onnxruntime has run it since 1.12).
OPSET = 17
#: How ``onnx-int8`` quantises, as recorded in the fingerprint.
QUANTIZATION = "dynamic int8 (onnxruntime quantize_dynamic, QInt8 weights, per channel)"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_onnx_dir() -> Path:
    """``$CONFORMANCE_ONNX_DIR``, else ``./conformance_store/onnx``."""
    override = os.environ.get(ONNX_DIR_ENV)
    return Path(override).expanduser() if override else default_store_dir() / "onnx"


def _need_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConformanceError(
            "the ONNX embedder backends need onnxruntime and onnx: pip install 'conformance-audit[onnx]'"
        ) from exc
    return onnxruntime



def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary path)`` in ``target``'s folder, then rename it to ``target`` (a reader sees all or none)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def export_fp32(source: Embedder, target: Path) -> None:
    """Export ``source``'s sentence-transformers model (a torch :class:`Embedder`) to the ONNX file ``target``.

    The graph takes the padded word pieces and returns the unit-norm mean-pooled embedding, as
    sentence-transformers computes it for all-MiniLM-L6-v2 (Transformer, mean Pooling, Normalize).
    """
    import torch

    path, _, _ = source._resolve_path()
    if not embedder_bert.fits(path):
        raise ConformanceError(f"the ONNX backends export a Transformer, mean Pooling, Normalize BERT model; "
                               f"{source.model_path or DEFAULT_MODEL} is not one: use backend torch")
    # transformers' own BertModel is traced (not conformance.embedder_bert's copy of it), so that the ONNX file's
    # bytes, which baselines built with an ONNX backend record, stay what they were.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    bert = transformers.AutoModel.from_pretrained(str(path)).eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    example = {name: torch.from_numpy(value) for name, value in source.tokenizer(
        ["an example", "another, longer example text"], padding="max_length", max_length=32,
        return_tensors="np").items()}
    axes = {name: {0: "batch", 1: "length"} for name in _INPUTS}

    def write(path: Path) -> None:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The tracing exporter warns of the Python branches it freezes; the graph is checked in the tests.
            warnings.simplefilter("ignore")
            torch.onnx.export(MeanPooled().eval(), tuple(example[name] for name in _INPUTS), str(path),
                              dynamo=False, input_names=list(_INPUTS), output_names=["sentence_embedding"],
                              dynamic_axes={**axes, "sentence_embedding": {0: "batch"}}, opset_version=OPSET,
                              do_constant_folding=True)

    _write_atomically(target, write)


def quantize_int8(fp32: Path, target: Path) -> None:
    """Quantise the fp32 ONNX file to int8 weights (dynamic activations), per output channel.

    Per channel, because one scale per weight matrix cost too much: cosine to torch down to 0.84 on real
    answers, against 0.97 per channel (docs/validation.md).
    """
    _need_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def write(path: Path) -> None:
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its advice to pre-process the model is for static quantisation
        try:
            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            quiet.setLevel(level)

    _write_atomically(target, write)


class OnnxEmbedder(Embedder):
    """The packaged model run by ONNX Runtime, fp32 or with dynamic int8 quantisation.

    Use :func:`conformance.embedder.get_embedder` (``"onnx"`` or ``"onnx-int8"``) for the
    process-wide instance. ``folder`` holds the exported files (default :func:`default_onnx_dir`);
    ``torch_embedder`` gives the torch embedder that exports them when they are absent (default: a new one).
    """

    def __init__(self, *, quantized: bool = False, model_path: str | None = None, batch_size: int = 16,
                 folder: str | Path | None = None, torch_embedder: Callable[[], Embedder] | None = None) -> None:
        super().__init__(model_path=model_path, batch_size=batch_size)
        # What exports the model when its ONNX file is absent (the process-wide torch embedder, if given).
        self._torch_embedder = torch_embedder
        self.quantized = quantized
        self.backend = "onnx-int8" if quantized else "onnx"
        # Dynamic quantisation scales each activation tensor by its own range, and a tensor holds every row
        # of the batch: a text's int8 embedding would depend on its batch. So each row runs alone.
        self.fill_batches = not quantized
        self.folder = Path(folder) if folder is not None else None
        self._tokenizer: Any = None
        self._config: dict[str, Any] | None = None
        self._path: Path | None = None
        self._weights: str | None = None

    # -- the files ---------------------------------------------------------
    def onnx_path(self) -> Path:
        """The ONNX file this embedder runs, exported (and quantised) on first use."""
        if self._path is None:
            _need_onnxruntime()
            _, name, _ = self._resolve_path()
            folder = self.folder or default_onnx_dir()
            stem = f"{name.rsplit('/', 1)[-1]}.{self.weights_sha256()[:16]}"
            fp32 = folder / f"{stem}.fp32.onnx"
            if not fp32.is_file():
                source = (self._torch_embedder() if self._torch_embedder is not None
                          else Embedder(model_path=self.model_path, batch_size=self.batch_size))
                export_fp32(source, fp32)
            path = fp32
            if self.quantized:
                path = folder / f"{stem}.int8.onnx"
                if not path.is_file():
                    quantize_int8(fp32, path)
            self._path = path
        return self._path

    def weights_sha256(self) -> str:
        if self._weights is None:
            self._weights = super().weights_sha256()
        return self._weights

    # -- loading -----------------------------------------------------------
    @property
    def model(self) -> Any:
        """The onnxruntime ``InferenceSession``."""
        with self._lock:
            if self._model is None:
                ort = _need_onnxruntime()
                options = ort.SessionOptions()
                # Nodes one after another; the kernels' own threads gave the same bits at 1, 2 and 4.
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.inter_op_num_threads = 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3
                path = self.onnx_path()
                try:
                    self._model = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                except Exception as exc:  # onnxruntime raises its own untyped errors for a damaged file
                    raise ConformanceError(f"onnxruntime cannot load {path} ({exc}); delete the file and it is "
                                           "exported again on the next run") from exc
            return self._model

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import transformers

            transformers.logging.set_verbosity_error()
            path, _, _ = self._resolve_path()
            if not path.is_dir():
                raise ConformanceError(f"embedder model folder {path} does not exist")
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        return self._tokenizer

    def _st_config(self) -> dict[str, Any]:
        if self._config is None:
            path, _, _ = self._resolve_path()
            config = path / "sentence_bert_config.json"
            self._config = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
        return self._config

    @property
    def max_seq_length(self) -> int:
        if "max_seq_length" not in self._st_config():
            raise ConformanceError(f"{self._resolve_path()[0]} has no sentence_bert_config.json with max_seq_length")
        return int(self._st_config()["max_seq_length"])

    @property
    def dimension(self) -> int:
        shape = self.model.get_outputs()[0].shape
        if isinstance(shape[-1], int):
            return int(shape[-1])
        return int(self._forward(self._features([""]))[0].shape[0])

    def _features(self, texts: list[str]) -> dict[str, np.ndarray]:
        features = self.tokenizer(texts, padding="max_length", max_length=32, truncation=True, return_tensors="np")
        return {name: np.asarray(v, dtype=np.int64) for name, v in features.items()}

    # -- fingerprint and forward pass --------------------------------------
    def _backend_fingerprint(self) -> dict[str, Any]:
        ort = _need_onnxruntime()
        return {
            "name": self.backend,
            "onnx_sha256": file_sha256(self.onnx_path()),
            "onnxruntime": ort.__version__,
            "opset": OPSET,
            "quantization": QUANTIZATION if self.quantized else None,
        }

    def mismatch_hint(self, stored: dict[str, Any]) -> str:
        here = self.fingerprint.get("backend", {})
        if stored.get("onnxruntime") != here.get("onnxruntime"):
            return (f"The baseline was built with onnxruntime {stored.get('onnxruntime')}, this environment has "
                    f"{here.get('onnxruntime')}: install onnxruntime=={stored.get('onnxruntime')}, or rebuild and "
                    "re-approve the baseline.")
        return (f"The ONNX file differs (baseline sha256 {stored.get('onnx_sha256')}, here {self.onnx_path()} has "
                f"{here.get('onnx_sha256')}): copy the .onnx files of the machine that built the baseline into "
                f"{self.onnx_path().parent} (or point {ONNX_DIR_ENV} at them), or rebuild and re-approve the baseline.")

    def _forward(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: features[name] for name in _INPUTS}
        if not self.quantized:
            return np.asarray(self.model.run(None, feed)[0])
        rows = feed["input_ids"].shape[0]
        return np.concatenate([self.model.run(None, {name: v[i : i + 1] for name, v in feed.items()})[0]
                               for i in range(rows)])

