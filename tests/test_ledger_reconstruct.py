"""End to end: score through the CLI into the ledger, then query, verify and reconstruct.

Uses the session's built baseline (``built`` in conftest.py), registered again
as versions 1 and 2 in a registry of this test's own, so that approving and
deleting versions here cannot disturb the pipeline tests.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.ledger import Ledger
from conformance.reconstruct import reconstruct
from tests.conftest import read_jsonl, write_jsonl


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


class OtherEmbedder:
    """An embedder with another fingerprint: reconstruct must refuse it and say so."""

    fingerprint = {"model": "some-other-model", "weights_sha256": "0" * 64}


@pytest.mark.slow
def test_score_record_query_verify_reconstruct(built: list[dict], audited_subset: Path, embedder: Any,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.registry import Registry

    name, version = built[0]["name"], built[0]["version"]
    _, baseline = Registry().load_version(name, version)  # from the session's store
    cell = (baseline.model_version, baseline.input_class)
    audited = read_jsonl(audited_subset)
    in_cell = [r for r in audited if (r.get("model_version"), r.get("input_class")) == cell][:5]
    other = next(r for r in audited if r.get("model_version") and (r["model_version"], r.get("input_class")) != cell
                 and r.get("record_id"))
    invalid = next(r for r in audited if (r.get("metadata") or {}).get("planted") == "invalid:empty_output")
    rows = in_cell + [other, invalid]

    monkeypatch.chdir(tmp_path)  # this test's own embedded store and default ledger
    monkeypatch.delenv("CONFORMANCE_LEDGER_URL", raising=False)
    registry = Registry()
    v1 = registry.register(baseline)
    import conformance

    conformance.approve(*cell, by="Ledger Tester", version=v1.version, registry=registry)  # ledger entry #1
    audited_file = write_jsonl(rows, tmp_path / "audited.jsonl")

    code, out = run("score", str(audited_file), "--out", "v.jsonl", "--format", "json", "--no-progress")
    assert code == 1  # the invalid and no_baseline rows
    recorded = json.loads(out)["ledger"]
    assert recorded["added"] == len(rows) and recorded["first_seq"] == 2
    assert (tmp_path / "conformance_store" / "ledger.db").is_file()  # the embedded default, beside mlflow.db

    code, out = run("ledger", "verify", "--format", "json")
    assert code == 0 and json.loads(out)["count"] == len(rows) + 1 and json.loads(out)["approvals"] == 1
    code, out = run("verdicts", "--format", "json")
    listed = json.loads(out)
    assert {v["verdict"] for v in listed} >= {"no_baseline", "invalid"}
    assert [v["record_id"] for v in listed] == [r.get("record_id") for r in rows]

    # reconstruct: identical, bit for bit
    rid = in_cell[0]["record_id"]
    code, out = run("reconstruct", rid, "--format", "json")
    result = json.loads(out)
    assert code == 0 and result["status"] == "identical", result["differences"]
    assert result["recomputed"]["p_value"] == result["recorded"]["p_value"]

    # a later release that words the reason differently: the same evidence, never a different verdict
    import importlib

    judging = importlib.import_module("conformance.scoring.judge")  # the module, not the function it exports

    worded = judging.output_reason
    with monkeypatch.context() as later_release:
        later_release.setattr(judging, "output_reason", lambda *a, **k: "In other words: " + worded(*a, **k))
        code, out = run("reconstruct", rid, "--format", "json")
        result = json.loads(out)
        assert code == 0 and result["status"] == "same_evidence", result
        assert result["differences"] == [] and [r.split(":")[0] for r in result["reworded"]] == ["reason"]
        assert any("same verdict and figures; explanation worded differently" in n for n in result["explanations"])
        code, out = run("reconstruct", rid)
        assert code == 0 and "SAME EVIDENCE" in out and "reworded: reason" in out
    assert run("reconstruct", other["record_id"])[0] == 0  # no_baseline: nothing to re-score
    assert run("reconstruct", invalid["record_id"], "--format", "json")[0] == 0

    # re-scoring against the same baseline version adds nothing
    code, out = run("score", str(audited_file), "--out", "v.jsonl", "--format", "json", "--no-progress")
    assert json.loads(out)["ledger"]["added"] == 0

    # a new approved baseline version: a new entry per scored record, pointing to the earlier one
    v2 = registry.register(baseline)
    conformance.approve(*cell, by="Ledger Tester", version=v2.version, registry=registry)
    code, out = run("score", str(audited_file), "--out", "v.jsonl", "--format", "json", "--no-progress")
    assert json.loads(out)["ledger"]["added"] == len(in_cell)
    code, out = run("verdicts", "--baseline-version", str(v2.version), "--format", "json")
    newer = json.loads(out)
    assert len(newer) == len(in_cell) and all(v["previous_seq"] is not None for v in newer)
    assert run("ledger", "verify")[0] == 0

    # the earlier version deleted: its entry can no longer be reproduced, and says why
    registry.client.delete_model_version(name, str(v1.version))
    code, out = run("reconstruct", rid, "--seq", "2", "--format", "json")  # its first verdict, after the approval
    result = json.loads(out)
    assert code == 1 and result["status"] == "not_reproducible"
    assert "can no longer be loaded" in " ".join(result["explanations"])
    assert run("reconstruct", rid)[0] == 0  # the entry against version 2 still reproduces

    # another embedder: refused, with the reason
    with Ledger() as ledger:
        other_embedder = reconstruct(ledger, rid, embedder=OtherEmbedder())  # type: ignore[arg-type]
    assert other_embedder.status == "not_reproducible"
    assert "embedder" in " ".join(other_embedder.explanations)
