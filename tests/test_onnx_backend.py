"""The embedder's ONNX Runtime backends: exported once, fingerprinted by their graph, batch-independent,
close to torch; a baseline's fingerprint picks the embedder that scores against it (``embedder_for``).

The tests marked slow load torch and onnxruntime; the others use neither."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance import embedder as embedder_module
from conformance.embedder import Embedder, backend_of, check_backend, embedder_for
from conformance.errors import EmbedderMismatchError

from tests.conftest import EXAMPLE, read_jsonl

# The packaged embedder's torch fingerprint digest since 0.2 (the README's verdicts carry it): adding
# backends must not change it, or every existing baseline would stop matching.
TORCH_FINGERPRINT_DIGEST = "6b2971baa409f925"


# -- without the model -------------------------------------------------------------------------
class FixedEmbedder(Embedder):
    """An embedder that only has a fingerprint."""

    def __init__(self, backend: str, fingerprint: dict[str, Any]) -> None:
        super().__init__()
        self.backend = backend
        self._fingerprint = fingerprint


@pytest.fixture()
def fixed_embedders(monkeypatch: pytest.MonkeyPatch) -> dict[str, FixedEmbedder]:
    base = {"model": "m", "weights_sha256": "ab" * 32, "dimension": 384}
    made = {"torch": FixedEmbedder("torch", dict(base)),
            "onnx-int8": FixedEmbedder("onnx-int8", {**base, "backend": {"name": "onnx-int8", "onnx_sha256": "1"}})}
    monkeypatch.setattr(embedder_module, "_DEFAULTS", dict(made))
    return made


def test_backend_of_reads_the_fingerprint_and_absent_means_torch() -> None:
    assert backend_of({"model": "m"}) == "torch"
    assert backend_of({"model": "m", "backend": {"name": "onnx"}}) == "onnx"
    assert backend_of({"model": "m", "backend": {"name": "onnx-int8"}}) == "onnx-int8"
    with pytest.raises(EmbedderMismatchError, match="backend 'tpu'.*does not know"):
        backend_of({"model": "m", "backend": {"name": "tpu"}})


def test_check_backend_names_the_allowed_values() -> None:
    assert check_backend("onnx") == "onnx"
    with pytest.raises(ValueError, match=r"backend must be one of torch, onnx, onnx-int8, got 'cuda'"):
        check_backend("cuda")


def test_embedder_for_returns_the_process_wide_embedder_of_the_fingerprints_backend(fixed_embedders) -> None:
    torch_fp = fixed_embedders["torch"].fingerprint
    int8_fp = fixed_embedders["onnx-int8"].fingerprint
    assert embedder_for(torch_fp) is fixed_embedders["torch"]
    assert embedder_for(int8_fp) is fixed_embedders["onnx-int8"]
    assert embedder_for(dict(int8_fp)) is embedder_for(int8_fp)  # one per backend, reused


def test_embedder_for_refuses_a_fingerprint_this_machine_cannot_reproduce(fixed_embedders) -> None:
    other_graph = {**fixed_embedders["onnx-int8"].fingerprint,
                   "backend": {"name": "onnx-int8", "onnx_sha256": "2"}}
    with pytest.raises(EmbedderMismatchError, match="differ in: backend"):
        embedder_for(other_graph)
    other_weights = {**fixed_embedders["torch"].fingerprint, "weights_sha256": "cd" * 32}
    with pytest.raises(EmbedderMismatchError, match="differ in: weights_sha256"):
        embedder_for(other_weights)


def test_build_refuses_an_unknown_backend_before_reading_records() -> None:
    import conformance

    with pytest.raises(ValueError, match="backend must be one of"):
        conformance.build("no-such-file.jsonl", register=False, backend="gpu")


def test_cli_build_offers_the_backends(capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["build", "x.jsonl", "--embedder-backend", "gpu"])
    assert stop.value.code == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_an_onnx_file_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    from conformance.embedder_onnx import _write_atomically

    target = tmp_path / "deep" / "model.onnx"

    def fails(path: Path) -> None:
        path.write_bytes(b"half a mod")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        _write_atomically(target, fails)
    assert not target.exists() and list(target.parent.iterdir()) == []
    _write_atomically(target, lambda path: path.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole" and [p.name for p in target.parent.iterdir()] == ["model.onnx"]


# -- with the model (slow) ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory, embedder) -> Path:
    pytest.importorskip("onnxruntime")
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def onnx_embedders(onnx_folder: Path, embedder) -> dict[str, Embedder]:
    from conformance.embedder_onnx import OnnxEmbedder

    made = {"onnx": OnnxEmbedder(folder=onnx_folder, torch_embedder=lambda: embedder),
            "onnx-int8": OnnxEmbedder(quantized=True, folder=onnx_folder, torch_embedder=lambda: embedder)}
    for e in made.values():
        _ = e.fingerprint  # exports, then quantises, once for the module
    return made


@pytest.mark.slow
def test_torch_fingerprint_is_unchanged(embedder) -> None:
    assert "backend" not in embedder.fingerprint
    assert embedder.fingerprint_digest == TORCH_FINGERPRINT_DIGEST


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_an_onnx_embedding_is_the_same_bits_in_any_batch(onnx_embedders, backend: str) -> None:
    # As tests/test_embedder.py for torch; int8 is the hard case, since dynamic quantisation scales an
    # activation by the range of the whole tensor (a text embedded with others changed in the third digit).
    e = onnx_embedders[backend]
    rng = np.random.default_rng(0)
    words = "the parcel refund order arrive business days account please contact support sorry delay".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(5, 60)))) for _ in range(40)]
    target = texts[0]
    alone = e.embed([target], progress=False).chunks[0]
    for size in (2, 3, 17, 40):
        others = [texts[i] for i in rng.permutation(np.arange(1, 40))[: size - 1]]
        position = int(rng.integers(0, size))
        got = e.embed(others[:position] + [target] + others[position:], progress=False)
        assert np.array_equal(got.chunks[got.owner == position][0], alone), (backend, size, position)


@pytest.mark.slow
def test_onnx_fingerprints_name_backend_and_graph_and_keep_the_rest(embedder, onnx_embedders, onnx_folder) -> None:
    from conformance.embedder_onnx import file_sha256

    torch_fp = embedder.fingerprint
    for backend, e in onnx_embedders.items():
        fp = e.fingerprint
        assert {k: v for k, v in fp.items() if k != "backend"} == torch_fp
        assert fp["backend"]["name"] == backend
        assert fp["backend"]["onnx_sha256"] == file_sha256(e.onnx_path())
        assert e.onnx_path().parent == onnx_folder
    fp32, int8 = (onnx_embedders[b].fingerprint["backend"] for b in ("onnx", "onnx-int8"))
    assert fp32["quantization"] is None and "int8" in int8["quantization"]
    assert fp32["onnx_sha256"] != int8["onnx_sha256"]
    assert sorted(p.name for p in onnx_folder.iterdir()) == [
        f"all-MiniLM-L6-v2.{torch_fp['weights_sha256'][:16]}.{kind}.onnx" for kind in ("fp32", "int8")]


@pytest.mark.slow
def test_the_onnx_file_is_reused_and_exported_the_same(onnx_embedders, onnx_folder, embedder, tmp_path: Path) -> None:
    from conformance.embedder_onnx import OnnxEmbedder

    path = onnx_embedders["onnx"].onnx_path()
    before = path.stat().st_mtime_ns
    again = OnnxEmbedder(folder=onnx_folder)
    assert again.fingerprint == onnx_embedders["onnx"].fingerprint and path.stat().st_mtime_ns == before
    # Exported afresh elsewhere: the same bytes, so a baseline's graph hash holds on a second machine alike.
    fresh = OnnxEmbedder(folder=tmp_path, torch_embedder=lambda: embedder)
    assert fresh.fingerprint == onnx_embedders["onnx"].fingerprint


@pytest.mark.slow
def test_onnx_embeddings_are_close_to_torch(embedder, onnx_embedders) -> None:
    texts = [r["output"] for r in read_jsonl(EXAMPLE / "approved.jsonl")[:12]]
    reference = embedder.embed(texts, progress=False).chunks
    cos = {b: np.sum(e.embed(texts, progress=False).chunks * reference, axis=1) for b, e in onnx_embedders.items()}
    assert cos["onnx"].min() > 0.99999
    assert cos["onnx-int8"].min() > 0.95


@pytest.mark.slow
def test_a_baseline_built_on_onnx_int8_is_scored_with_it(onnx_embedders, onnx_folder, embedder,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import conformance

    monkeypatch.setenv("CONFORMANCE_ONNX_DIR", str(onnx_folder))
    monkeypatch.setattr(embedder_module, "_DEFAULTS", {"torch": embedder})
    cell = ("support-bot-3.2", "shipping_status")
    approved = [r for r in read_jsonl(EXAMPLE / "approved.jsonl") if (r["model_version"], r["input_class"]) == cell]
    audited = [r for r in read_jsonl(EXAMPLE / "audited.jsonl")
               if (r.get("model_version"), r.get("input_class")) == cell]
    (built,) = conformance.build(approved, register=False, backend="onnx-int8", scorer="knn_cosine")
    assert built.baseline.embedder == onnx_embedders["onnx-int8"].fingerprint
    with pytest.raises(EmbedderMismatchError):
        built.baseline.check_embedder(embedder.fingerprint)
    chosen = embedder_for(built.baseline.embedder)
    assert chosen.backend == "onnx-int8" and chosen is embedder_module._DEFAULTS["onnx-int8"]
    # scoring picks the baseline's backend itself: no embedder given
    result = conformance.score(audited, baselines=[built])
    assert len(result.verdicts) == len(audited)
    assert {v.embedder for v in result.verdicts if v.p_value is not None} == {chosen.fingerprint_digest}


def test_a_cached_embedder_reports_the_backend_it_wraps(fixed_embedders) -> None:
    from conformance.embedding_cache import CachedEmbedder

    assert CachedEmbedder(fixed_embedders["onnx-int8"]).backend == "onnx-int8"
    assert CachedEmbedder(fixed_embedders["torch"]).backend == "torch"
