"""The library core: build and score records held in memory, with no MLflow, no ledger and no files,
and the same verdicts as the file path through the command line."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

import conformance
from tests.conftest import read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def no_store(tmp_path_factory: pytest.TempPathFactory, workdir: Path, built: list[dict]):
    """MLflow and the ledger pointed at places that fail or leave a trace if anything touches them (after the
    session's command-line build, which the comparison below needs, has registered its baselines)."""
    trap = tmp_path_factory.mktemp("trap")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    mp.setenv("CONFORMANCE_LEDGER_URL", "sqlite:///" + str(trap / "ledger.db"))
    yield trap
    mp.undo()


@pytest.fixture(scope="module")
def in_memory(no_store: Path, approved_subset: Path, audited_subset: Path, embedder):
    approved = pd.read_json(approved_subset, lines=True, dtype=False)
    audited = read_jsonl(audited_subset)  # a list of dicts: the invalid rows stay as they are
    built = conformance.build(approved, register=False, embedder=embedder)
    result = conformance.score(audited, baselines=built, embedder=embedder, progress=False)
    return built, result


def test_in_memory_build_and_score_touch_no_store_and_write_no_file(in_memory, no_store: Path) -> None:
    built, result = in_memory
    assert len(built) == 2 and all(b.registered is None for b in built)
    assert result.ledger is None
    assert list(no_store.iterdir()) == []
    frame = result.to_pandas()
    assert len(frame) == len(result.verdicts)
    assert list(frame["row"]) == list(range(1, len(frame) + 1))
    assert {"record_id", "verdict", "p_value", "score", "alpha", "baseline", "reason", "nearest"} <= set(frame.columns)
    assert set(frame["verdict"]) == {"within_bounds", "out_of_bounds", "no_baseline", "invalid"}


def test_in_memory_verdicts_equal_the_command_lines(in_memory, built: list[dict], audited_subset: Path,
                                                    workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the command line scores against the session's embedded store
    monkeypatch.delenv("CONFORMANCE_LEDGER_URL")  # ... whose default ledger holds the approvals score checks

    out = workdir / "api-compare.jsonl"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["score", str(audited_subset), "--out", str(out), "--no-progress", "--ledger",
                     "sqlite:///" + str(workdir / "api-compare-ledger.db")])
    assert code == 1
    by_cli = read_jsonl(out)
    _, result = in_memory
    mine = result.to_pandas().to_dict(orient="records")
    # pandas shows an absent value (the record id of an invalid row) as NaN where JSON has null
    assert [v["record_id"] for v in by_cli] == [None if pd.isna(v["record_id"]) else v["record_id"] for v in mine]
    for cli_v, mem_v in zip(by_cli, mine):
        assert cli_v["verdict"] == mem_v["verdict"], cli_v["record_id"]
        if cli_v["p_value"] is None:
            assert pd.isna(mem_v["p_value"])
            continue
        assert cli_v["p_value"] == pytest.approx(mem_v["p_value"], abs=1e-12)
        assert cli_v["score"] == pytest.approx(mem_v["score"], abs=1e-9)
        assert cli_v["nearest"] == list(mem_v["nearest"])
    # Only where each came from differs: a registry version for the CLI, the content digest in memory.
    scored = [v for v in mine if v["verdict"] in ("within_bounds", "out_of_bounds")]
    assert all(str(v["baseline"]).startswith("sha256:") for v in scored)
    assert all(v["baseline"].startswith("models:/") for v in by_cli if v["verdict"] in ("within_bounds",
                                                                                       "out_of_bounds"))


def test_a_cell_without_a_given_baseline_is_no_baseline_never_a_pass(in_memory, embedder) -> None:
    built, _ = in_memory
    record = {"record_id": "x1", "model_version": "support-bot-9", "input_class": "shipping_status",
              "input": "Where is my parcel?", "output": "It left the depot this morning."}
    result = conformance.score([record], baselines=[b.baseline for b in built], embedder=embedder, progress=False)
    (verdict,) = result.verdicts
    assert verdict.verdict == "no_baseline" and "no baseline was given" in verdict.reason
    assert not result.all_within_bounds


def test_a_saved_baseline_loads_and_scores_the_same(in_memory, tmp_path: Path, audited_subset: Path,
                                                    embedder) -> None:
    built, result = in_memory
    first = built[0].baseline
    first.save(tmp_path / "b")
    again = conformance.Baseline.load(tmp_path / "b")
    assert again.digest == first.digest
    cell = (first.model_version, first.input_class)
    rows = [r for r in read_jsonl(audited_subset) if (r.get("model_version"), r.get("input_class")) == cell]
    rescored = conformance.score(pd.DataFrame(rows), baselines=[again], embedder=embedder, progress=False)
    before = {v.record_id: v for v in result.verdicts}
    for v in rescored.verdicts:
        if v.p_value is not None:
            assert (v.verdict, v.p_value, v.score) == (before[v.record_id].verdict, before[v.record_id].p_value,
                                                       before[v.record_id].score)


def test_approve_by_without_register_is_refused() -> None:
    with pytest.raises(ValueError, match="approve_by needs register=True"):
        conformance.build([{"record_id": "r"}], register=False, approve_by="X")


def test_the_result_summaries_convert(in_memory) -> None:
    _, result = in_memory
    frame = result.summaries_to_pandas()
    assert len(frame) == len(result.summaries)
    assert json.loads(frame.to_json(orient="records"))[0]["model_version"]
