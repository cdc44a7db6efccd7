"""The scoring run's param and metric keys (conformance.mlflow.runs): fast, no MLflow imported."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conformance.mlflow.runs import RowsDigest, cell_keys, experiment_name, file_digest


def test_cells_keep_readable_keys_and_never_share_one() -> None:
    keys = cell_keys([("support-bot-3.2", "refund_request"), ("a/b", "c"), ("a-b", "c"), ("モデル", "x"),
                      ("模型", "x")])
    assert keys[("support-bot-3.2", "refund_request")] == "support-bot-3.2/refund_request"
    assert len(set(keys.values())) == 5
    assert keys[("a/b", "c")].startswith("a-b/c~") and keys[("a-b", "c")].startswith("a-b/c~")
    assert all(len(k) <= 250 for k in keys.values())


def test_the_experiment_name_and_the_digests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFORMANCE_MLFLOW_EXPERIMENT", raising=False)
    assert experiment_name() == "conformance-scoring"
    monkeypatch.setenv("CONFORMANCE_MLFLOW_EXPERIMENT", "team-scoring")
    assert experiment_name() == "team-scoring" and experiment_name("mine") == "mine"
    with pytest.raises(ValueError, match="non-empty"):
        experiment_name("  ")
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"x": 1}\n')
    assert file_digest(path) == "sha256:" + hashlib.sha256(b'{"x": 1}\n').hexdigest()
    assert RowsDigest().hexdigest() != file_digest(path)
