"""End to end through the CLI: build -> approve -> score, on the real embedder and MLflow store."""

from __future__ import annotations

import re

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conformance.cli import main
from tests.conftest import E2E_CELLS, read_jsonl, write_jsonl

REQUIRED_VERDICT_COLUMNS = {"record_id", "model_version", "input_class", "verdict", "p_value", "score", "alpha",
                            "baseline", "reason"}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_build_reports_each_cell(built: list[dict]) -> None:
    assert {(b["model_version"], b["input_class"]) for b in built} == E2E_CELLS
    for b in built:
        assert {"model_version", "input_class", "name", "version", "n_fit", "n_calibration", "alpha"} <= set(b)
        assert b["alpha"] == 0.05 and b["approved_by"] == "Test Approver"
        assert b["n_fit"] + b["n_calibration_outputs"] == 192
        # 64 prompts x 3 outputs per cell: the p-values use one calibration output per prompt
        assert b["n_calibration_outputs"] == 3 * b["n_calibration"]
        # The even split gives 32 calibration prompts (level 1/33); build keeps 29 (1/30), the fewest that need no
        # small-calibration warning, and moves 3 to the fit part. One drawn output per prompt reaches 1/30,
        # weighing all 87 about 2/88, so build's default rule draws (and says so).
        assert b["n_calibration_from_fraction"] == 32 and b["n_calibration"] == 29
        assert b["expected_false_alarm_rate"] == pytest.approx(1 / 30)
        assert b["p_value_rule"] == "sample"
        assert b["name"] == f"conformance.{b['model_version']}.{b['input_class']}"


@pytest.mark.slow
def test_embedded_store_is_in_the_working_directory(built: list[dict], workdir: Path) -> None:
    assert (workdir / "conformance_store" / "mlflow.db").is_file()
    assert any((workdir / "conformance_store" / "artifacts").rglob("baseline.json"))


@pytest.mark.slow
def test_registry_records_lineage_and_approval(built: list[dict]) -> None:
    from mlflow import MlflowClient

    from conformance.registry import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())
    for b in built:
        mv = client.get_model_version_by_alias(b["name"], "approved")
        assert int(mv.version) == b["version"]
        assert mv.tags["approved_by"] == "Test Approver" and mv.tags["approved_at"]
        assert mv.tags["digest"] == b["digest"]
        assert mv.tags["eval_run_ids"].startswith("eval-")
        assert mv.tags["dataset_digest"].startswith("sha256:")
        assert mv.tags["policy_id"] == "support-policy"
        assert mv.tags["calibration_method"] == "prompt_sample"


@pytest.fixture(scope="module")
def scored(built: list[dict], audited_subset: Path, workdir: Path) -> dict:
    code, out, err = run("score", str(audited_subset), "--out", str(workdir / "v.jsonl"),
                         "--summary", str(workdir / "s.json"), "--no-progress")
    return {"code": code, "out": out, "err": err, "verdicts": read_jsonl(workdir / "v.jsonl"),
            "summary": json.loads((workdir / "s.json").read_text())}


@pytest.mark.slow
def test_score_writes_one_verdict_per_record_in_input_order(scored: dict, audited_subset: Path) -> None:
    audited = read_jsonl(audited_subset)
    verdicts = scored["verdicts"]
    assert len(verdicts) == len(audited)
    assert [v["row"] for v in verdicts] == list(range(1, len(audited) + 1))
    assert [v["record_id"] for v in verdicts] == [a.get("record_id") for a in audited]
    for v in verdicts:
        assert REQUIRED_VERDICT_COLUMNS <= set(v)
        assert v["verdict"] in {"within_bounds", "out_of_bounds", "no_baseline", "invalid"}
        assert v["reason"]


@pytest.mark.slow
def test_exit_code_1_when_anything_is_not_within_bounds(scored: dict) -> None:
    assert scored["code"] == 1


@pytest.mark.slow
def test_every_planted_kind_gets_its_verdict(scored: dict) -> None:
    for v in scored["verdicts"]:
        planted = (v.get("metadata") or {}).get("planted", "")
        if planted.startswith("invalid"):
            assert v["verdict"] == "invalid" and v["p_value"] is None
        elif planted == "no_baseline":
            assert v["verdict"] == "no_baseline" and "no baseline" in v["reason"]
        else:
            assert v["verdict"] in {"within_bounds", "out_of_bounds"}
            assert 0 < v["p_value"] <= 1 and v["baseline"].startswith("models:/conformance.")
            assert (v["verdict"] == "out_of_bounds") == (v["p_value"] <= v["alpha"])
            assert len(v["nearest"]) == 3
            assert v["approved_by"] == "Test Approver" and v["approved_at"].startswith("20")
    off = [v for v in scored["verdicts"] if (v.get("metadata") or {}).get("planted", "").startswith("off_policy")]
    clean = [v for v in scored["verdicts"] if (v.get("metadata") or {}).get("planted") == "in_bounds"]
    # The off-policy outputs of these two cells (a poem, a bare "OK", a German
    # reply, a 720-word ramble) are caught; at alpha = 0.05 most clean ones pass.
    caught = {v["metadata"]["planted"] for v in off if v["verdict"] == "out_of_bounds"}
    assert caught == {"off_policy:off_topic_poem", "off_policy:minimal_ok",
                      "off_policy:language_german", "off_policy:long_rambling"}
    assert sum(v["verdict"] == "within_bounds" for v in clean) >= 0.8 * len(clean)


@pytest.mark.slow
def test_the_reason_says_what_stands_out(scored: dict) -> None:
    """A reviewer reads which property made an output unusual, in words (facets, conformance.stats.combined)."""
    by_kind = {v["metadata"]["planted"]: v["reason"] for v in scored["verdicts"]
               if (v.get("metadata") or {}).get("planted", "").startswith("off_policy")}
    assert "What stands out most is its language or script" in by_kind["off_policy:language_german"]
    assert "What stands out most is its length" in by_kind["off_policy:long_rambling"]
    assert "What stands out most is its length" in by_kind["off_policy:minimal_ok"]
    assert all("What stands out most is" in v["reason"] for v in scored["verdicts"] if v["p_value"] is not None)
    # ... against what the approved calibration outputs reach on that property.
    german = re.search(r"a standardised value of ([0-9.]+), where the (\d+) approved calibration outputs \(every "
                       r"answer to those 29 prompts\) reach at most ([0-9.]+) \(median",
                       by_kind["off_policy:language_german"])
    assert german is not None, by_kind["off_policy:language_german"]
    assert float(german.group(1)) > float(german.group(3)) and int(german.group(2)) > 0


@pytest.mark.slow
def test_invalid_reasons_say_row_and_field(scored: dict) -> None:
    reasons = {v["metadata"]["planted"]: v["reason"] for v in scored["verdicts"]
               if (v.get("metadata") or {}).get("planted", "").startswith("invalid")}
    assert "'output'" in reasons["invalid:missing_output"] and "missing" in reasons["invalid:missing_output"]
    assert "must be a string, got int" in reasons["invalid:non_string_output"]
    assert "empty" in reasons["invalid:empty_output"]
    assert "'record_id'" in reasons["invalid:missing_record_id"]
    assert all("row " in r for r in reasons.values())


@pytest.mark.slow
def test_optional_fields_are_carried_through_unchanged(scored: dict, audited_subset: Path) -> None:
    audited = read_jsonl(audited_subset)
    for a, v in zip(audited, scored["verdicts"]):
        for key in ("timestamp", "policy_id", "policy_version", "training_data_version", "sampling",
                    "downstream_action", "intent", "metadata", "input", "output"):
            if key in a:
                assert v[key] == a[key], key


@pytest.mark.slow
def test_summary_has_one_group_per_cell(scored: dict) -> None:
    groups = {(g["model_version"], g["input_class"]): g for g in scored["summary"]}
    for cell in E2E_CELLS:
        g = groups[cell]
        assert g["n"] == sum(g[k] for k in ("within_bounds", "out_of_bounds", "no_baseline", "invalid"))
        assert 0 < g["p_value"] <= 1 and g["verdict"] in {"within_bounds", "out_of_bounds"}
    assert any(g["verdict"] == "no_baseline" and g["p_value"] is None for g in scored["summary"])


@pytest.mark.slow
def test_scoring_is_deterministic_bit_for_bit(scored: dict, audited_subset: Path, workdir: Path) -> None:
    code, _, _ = run("score", str(audited_subset), "--out", str(workdir / "again.jsonl"), "--no-progress")
    assert code == scored["code"]
    again = read_jsonl(workdir / "again.jsonl")
    strip = lambda v: {k: x for k, x in v.items() if k != "scored_at"}  # noqa: E731
    assert [strip(v) for v in again] == [strip(v) for v in scored["verdicts"]]


@pytest.mark.slow
def test_verdicts_as_csv_and_parquet(scored: dict, audited_subset: Path, workdir: Path) -> None:
    for ext in ("csv", "parquet"):
        path = workdir / f"v.{ext}"
        assert run("score", str(audited_subset), "--out", str(path), "--no-progress")[0] == 1
        frame = pd.read_csv(path, keep_default_na=False) if ext == "csv" else pd.read_parquet(path)
        assert REQUIRED_VERDICT_COLUMNS <= set(frame.columns)
        assert list(frame["verdict"]) == [v["verdict"] for v in scored["verdicts"]]


@pytest.mark.slow
def test_all_within_bounds_exits_0(built: list[dict], workdir: Path) -> None:
    clean = [r for r in read_jsonl(workdir / "audited-subset.jsonl")
             if (r.get("metadata") or {}).get("planted") == "in_bounds"]
    path = write_jsonl(clean, workdir / "clean.jsonl")
    code, out, _ = run("score", str(path), "--out", str(workdir / "clean-v.jsonl"), "--no-progress")
    verdicts = read_jsonl(workdir / "clean-v.jsonl")
    assert code == (0 if all(v["verdict"] == "within_bounds" for v in verdicts) else 1)
    within = [r for r, v in zip(clean, verdicts) if v["verdict"] == "within_bounds"]
    path = write_jsonl(within, workdir / "within.jsonl")
    assert run("score", str(path), "--out", str(workdir / "within-v.jsonl"), "--no-progress")[0] == 0


@pytest.mark.slow
def test_missing_column_exits_2_and_writes_nothing(built: list[dict], workdir: Path) -> None:
    path = workdir / "nocol.csv"
    pd.DataFrame([{"record_id": "a", "model_version": "m", "input": "i", "output": "o"}]).to_csv(path, index=False)
    out = workdir / "nocol-v.jsonl"
    code, _, err = run("score", str(path), "--out", str(out))
    assert code == 2 and "input_class" in err and str(path) in err
    assert not out.exists()


def test_unreadable_file_exits_2(workdir: Path) -> None:
    code, _, err = run("score", str(workdir / "nope.jsonl"), "--out", str(workdir / "x.jsonl"))
    assert code == 2 and "no such file" in err


@pytest.mark.slow
def test_approve_a_version(built: list[dict], approved_subset: Path) -> None:
    b = built[0]
    code, out, _ = run("approve", "--model-version", b["model_version"], "--input-class", b["input_class"],
                       "--by", "Second Reviewer", "--format", "json")
    assert code == 0 and json.loads(out)["approved_by"] == "Second Reviewer"
    code, _, err = run("approve", "--model-version", b["model_version"], "--input-class", b["input_class"],
                       "--version", "99", "--by", "X")
    assert code == 2 and "no version 99" in err
    code, _, err = run("approve", "--model-version", "nope", "--input-class", "x", "--by", "X")
    assert code == 2 and "no baseline is registered" in err


@pytest.mark.slow
def test_approve_loads_no_embedder(built: list[dict], workdir: Path) -> None:
    b = built[0]
    code = ("import sys\n"
            "from conformance.cli import main\n"
            f"assert main(['approve', '--model-version', {b['model_version']!r}, '--input-class', "
            f"{b['input_class']!r}, '--by', 'Third Reviewer']) == 0\n"
            "print(sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_registered_model_is_a_working_pyfunc(built: list[dict], audited_subset: Path) -> None:
    import mlflow

    b = built[0]
    model = mlflow.pyfunc.load_model(f"models:/{b['name']}@approved")
    rows = [r for r in read_jsonl(audited_subset)
            if (r.get("model_version"), r.get("input_class")) == (b["model_version"], b["input_class"])]
    frame = pd.DataFrame([{k: r.get(k) for k in ("record_id", "model_version", "input_class", "input", "output")}
                          for r in rows[:4]] + [{"record_id": "other", "model_version": "zzz", "input_class": "c",
                                                "input": "i", "output": "o"}])
    result = model.predict(frame)
    assert list(result["record_id"]) == list(frame["record_id"])
    assert set(result["verdict"][:4]) <= {"within_bounds", "out_of_bounds"}
    assert result["verdict"].iloc[4] == "no_baseline"


@pytest.mark.slow
def test_too_few_approved_outputs_is_refused_with_the_number_needed(workdir: Path, embedder) -> None:
    rows = [{"record_id": f"r{i}", "model_version": "tiny", "input_class": "c", "input": f"q{i}",
             "output": f"answer {i}"} for i in range(20)]
    path = write_jsonl(rows, workdir / "tiny.jsonl")
    code, _, err = run("build", str(path))
    assert code == 2
    assert "answers 10 distinct prompts (10 outputs" in err and "at least 19 calibration prompts" in err
    # --calibration-fraction moves prompts between the parts; the CLI's default is build's.
    code, _, err = run("build", str(path), "--calibration-fraction", "0.75")
    assert code == 2 and "answers 15 distinct prompts (15 outputs" in err
    from conformance.baseline.fit import DEFAULT_CALIBRATION_FRACTION
    from conformance.cli.main import CALIBRATION_FRACTION
    assert CALIBRATION_FRACTION == DEFAULT_CALIBRATION_FRACTION
    from conformance.baseline.fit import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD
    from conformance.cli.main import CALIBRATION_METHOD
    from conformance.cli.main import CALIBRATION_METHODS as CLI_METHODS
    from conformance.stats.conformal import CALIBRATION_CHOICES
    assert CALIBRATION_METHOD == DEFAULT_CALIBRATION_METHOD and CLI_METHODS == CALIBRATION_CHOICES
    assert set(CALIBRATION_METHODS) == set(CALIBRATION_CHOICES) - {"auto"}


def test_entry_point_help_and_usage_errors() -> None:
    exe = [sys.executable, "-m", "conformance.cli.main"]
    help_text = subprocess.run(exe + ["score", "--help"], capture_output=True, text=True, check=True).stdout
    for needle in ("exit codes", "MLFLOW_TRACKING_URI", "conformance_store/mlflow.db", "out_of_bounds"):
        assert needle in help_text
    bad = subprocess.run(exe + ["score"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--out" in bad.stderr


@pytest.mark.slow
def test_a_small_calibration_part_builds_with_a_warning_that_says_why(embedder) -> None:
    import warnings

    from conformance.baseline.fit import SmallCalibrationWarning, build_baseline
    from conformance.records import Record

    topics = ["parcel", "refund", "invoice", "password", "delivery"]
    records = [Record(row=i + 1, record_id=f"s{i}", model_version="small", input_class="c", input=f"question {i}",
                      output=f"Answer {i} about the {topics[i % 5]}: it is handled within {i % 7 + 1} days.")
               for i in range(50)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        baseline = build_baseline(records, alpha=0.05, embedder=embedder, scorer="knn_cosine")
    # The even split gives 25 calibration outputs: at alpha = 0.05 the realised false-alarm rate is then
    # Beta(1, 25), whose 95th percentile, 1 - 0.05 ** (1 / 25) = 0.113, exceeds twice alpha already, so build
    # keeps 19 (level 1/20 = 0.05 instead of 1/26), Beta(1, 19): 0.146, and says both.
    assert baseline.n_calibration == 19 and baseline.scorer["calibration_rounding"]["prompts_from_fraction"] == 25
    messages = [str(w.message) for w in caught if issubclass(w.category, SmallCalibrationWarning)]
    assert len(messages) == 1 and "only 19 distinct prompts" in messages[0] and "0.146" in messages[0]
    assert "The split gave 25 calibration prompts" in messages[0] and "0.050 instead of 0.038" in messages[0]
    assert "--no-round-calibration" in messages[0]
    with pytest.warns(SmallCalibrationWarning, match="only 25 distinct prompts.*0.113"):
        whole = build_baseline(records, alpha=0.05, embedder=embedder, scorer="knn_cosine", round_calibration=False)
    assert whole.n_calibration == 25 and whole.scorer["calibration_rounding"]["prompts_from_fraction"] is None


@pytest.mark.slow
def test_few_distinct_calibration_prompts_are_refused(embedder) -> None:
    from conformance.baseline.fit import build_baseline
    from conformance.errors import BaselineError
    from conformance.records import Record

    # 60 outputs for 6 prompts: 30 calibration outputs, but only 3 distinct prompts. A new
    # prompt's output is exchangeable with one output per calibration prompt, not with all 30,
    # so the smallest p-value is 1/4: nothing could ever be flagged at 0.05.
    records = [Record(row=i + 1, record_id=f"p{i}", model_version="few", input_class="c", input=f"question {i % 6}",
                      output=f"Answer number {i} to question {i % 6}, version {i // 6}.") for i in range(60)]
    with pytest.raises(BaselineError) as caught:
        build_baseline(records, alpha=0.05, embedder=embedder, scorer="knn_cosine")
    message = str(caught.value)
    assert "answers 3 distinct prompts (30 outputs" in message and "at least 19 calibration prompts" in message
    assert "1/4 = 0.250" in message
