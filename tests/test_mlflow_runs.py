"""MLflow's doors out: every score an MLflow run, the build run's lineage, the report on its run, and the
``mlflow.genai`` scorer; on the real embedder and the embedded MLflow store (tests/conftest.py's ``built``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from tests.conftest import E2E_CELLS, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def client() -> Any:
    from conformance.registry import Registry

    return Registry().client


def runs_in(experiment: str) -> list[Any]:
    found = client().get_experiment_by_name(experiment)
    return [] if found is None else client().search_runs([found.experiment_id], max_results=1000)


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs_audited(audited_subset: Path, workdir: Path) -> Path:
    """The session's audited rows under record ids of this module's own: the session's ledger may already hold the
    verdicts of another module's score of the same rows (the test files run in any order), and the scoring run
    below must record its own."""
    rows = [{**r, "record_id": f"runs:{r['record_id']}"} if isinstance(r.get("record_id"), str) else r
            for r in read_jsonl(audited_subset)]
    return write_jsonl(rows, workdir / "runs-audited-subset.jsonl")


@pytest.fixture(scope="module")
def scored(built: list[dict], runs_audited: Path, workdir: Path) -> dict:
    """One CLI score with --format json, in an experiment of its own."""
    experiment = f"runs-test-{uuid.uuid4().hex[:8]}"
    out, summary = workdir / "runs-v.jsonl", workdir / "runs-s.json"
    code, stdout, stderr = run("score", str(runs_audited), "--out", str(out), "--summary", str(summary),
                               "--no-progress", "--format", "json", "--mlflow-experiment", experiment)
    return {"code": code, "json": json.loads(stdout), "stderr": stderr, "experiment": experiment, "out": out,
            "summary": summary}


def test_a_cli_score_is_exactly_one_run_with_its_params_metrics_tags_and_artifacts(
        scored: dict, built: list[dict], runs_audited: Path, workdir: Path) -> None:
    assert scored["code"] == 1  # the subset holds out_of_bounds, no_baseline and invalid records
    doc = scored["json"]
    runs = runs_in(scored["experiment"])
    assert len(runs) == 1
    mlflow_run = runs[0]
    assert doc["mlflow_run"]["run_id"] == mlflow_run.info.run_id
    assert doc["mlflow_run"]["experiment"] == scored["experiment"]
    assert mlflow_run.info.status == "FINISHED"
    params, metrics, tags = mlflow_run.data.params, mlflow_run.data.metrics, mlflow_run.data.tags

    assert params["input_digest"] == sha256(runs_audited)
    assert params["input_source"] == str(runs_audited)
    assert params["engine"] == "local" and params["chunk_size"] == "1000" and params["fdr"] == "none"
    assert params["alpha"] == "0.05"
    assert params["n_baselines"] == "2"
    for b in built:
        assert params[f"baseline/{b['model_version']}/{b['input_class']}"] == b["uri"]

    counts = doc["counts"]
    n = sum(counts.values())
    for verdict, count in counts.items():
        assert metrics[f"count/{verdict}"] == count
        assert metrics[f"share/{verdict}"] == pytest.approx(count / n)
    assert counts["out_of_bounds"] > 0 and counts["no_baseline"] > 0 and counts["invalid"] > 0
    batch = {(g["model_version"], g["input_class"]): g["p_value"] for g in doc["groups"] if g["p_value"] is not None}
    assert set(batch) == E2E_CELLS
    for (mv, ic), p in batch.items():
        assert metrics[f"batch_p_value/{mv}/{ic}"] == pytest.approx(p)
    assert metrics["min_batch_p_value"] == pytest.approx(min(batch.values()))

    code, head_out, _ = run("ledger", "head", "--format", "json")
    head = json.loads(head_out)
    assert code == 0
    assert tags["conformance.ledger_run_id"] == doc["ledger"]["run_id"]
    assert tags["conformance.ledger_head_hash"] == head["head_hash"] == doc["ledger"]["head_hash"]
    assert tags["conformance.ledger_head_seq"] == str(head["head_seq"])
    assert tags["conformance.ledger_url"] == doc["ledger"]["ledger"]
    assert tags["conformance.verdicts_sha256"] == sha256(scored["out"])

    listed = {a.path for a in client().list_artifacts(mlflow_run.info.run_id)}
    assert listed == {"runs-v.jsonl", "runs-s.json", "baselines.json"}
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(run_id=mlflow_run.info.run_id, dst_path=str(workdir / "dl")))
    assert (local / "runs-v.jsonl").read_bytes() == scored["out"].read_bytes()
    assert (local / "runs-s.json").read_bytes() == scored["summary"].read_bytes()
    used = json.loads((local / "baselines.json").read_text())
    assert {u["uri"] for u in used} == {b["uri"] for b in built}


def test_the_table_form_prints_the_run_id_on_stderr_and_no_mlflow_line_on_stdout(
        built: list[dict], audited_subset: Path, workdir: Path) -> None:
    before = {r.info.run_id for r in runs_in("conformance-scoring")}
    code, stdout, stderr = run("score", str(audited_subset), "--out", str(workdir / "runs-t.jsonl"), "--no-progress")
    assert code == 1
    new = [r for r in runs_in("conformance-scoring") if r.info.run_id not in before]
    assert len(new) == 1
    assert f"MLflow run {new[0].info.run_id} in experiment 'conformance-scoring'" in stderr
    assert "MLflow run" not in stdout and "View run" not in stdout
    assert new[0].data.tags["conformance.ledger_run_id"] in stdout  # the ledger line names the same run


def test_no_mlflow_run_creates_none_and_exits_as_scored(built: list[dict], audited_subset: Path,
                                                        workdir: Path) -> None:
    before = {r.info.run_id for r in client().search_runs(
        [e.experiment_id for e in client().search_experiments()], max_results=1000)}
    code, stdout, _ = run("score", str(audited_subset), "--out", str(workdir / "runs-n.jsonl"), "--no-progress",
                          "--format", "json", "--no-mlflow-run")
    after = {r.info.run_id for r in client().search_runs(
        [e.experiment_id for e in client().search_experiments()], max_results=1000)}
    assert code == 1
    assert after == before
    assert json.loads(stdout)["mlflow_run"] is None


def test_mlflow_failing_after_scoring_warns_and_the_verdicts_stand(built: list[dict], audited_subset: Path,
                                                                   workdir: Path) -> None:
    # A real failure of MLflow after the ledger committed: the experiment named was deleted.
    name = f"runs-deleted-{uuid.uuid4().hex[:8]}"
    client().delete_experiment(client().create_experiment(name))
    out = workdir / "runs-f.jsonl"
    code, stdout, stderr = run("score", str(audited_subset), "--out", str(out), "--no-progress", "--format",
                               "json", "--mlflow-experiment", name)
    doc = json.loads(stdout)  # still parseable
    assert code == 1  # as scored: the same exit code as without the run
    assert doc["mlflow_run"] is None
    assert "could not be logged" in doc["mlflow_run_error"] and name in doc["mlflow_run_error"]
    assert "warning: the scoring run could not be logged" in stderr and "The verdicts stand" in stderr
    assert "Traceback" not in stderr
    assert len(read_jsonl(out)) == sum(doc["counts"].values())
    assert doc["ledger"]["head_hash"] == json.loads(run("ledger", "head", "--format", "json")[1])["head_hash"]


def test_in_memory_baselines_touch_no_mlflow(built: list[dict], audited_subset: Path, tmp_path: Path) -> None:
    from conformance import api
    from conformance.registry import Registry

    reg = Registry()
    baselines = [reg.load_version(b["name"], b["version"])[1] for b in built]
    rows = [r for r in read_jsonl(audited_subset) if (r.get("model_version"), r.get("input_class")) in E2E_CELLS][:6]
    before = len(client().search_runs([e.experiment_id for e in client().search_experiments()], max_results=1000))
    here = os.getcwd()
    os.chdir(tmp_path)  # an empty folder: an embedded store or ledger made by mistake would appear here
    try:
        result = api.score(rows, baselines=baselines, progress=False)
    finally:
        os.chdir(here)
    assert result.mlflow_run is None and result.mlflow_run_error is None
    assert list(tmp_path.iterdir()) == []
    assert len(client().search_runs([e.experiment_id for e in client().search_experiments()],
                                    max_results=1000)) == before
    assert {v.verdict for v in result.verdicts} <= {"within_bounds", "out_of_bounds"}


def test_in_memory_records_against_the_registry_are_a_run_with_their_digest(
        built: list[dict], audited_subset: Path) -> None:
    import pandas as pd

    from conformance import api
    from conformance.ledger.canonical import canonical_json
    from conformance.records import as_record_set

    rows = [r for r in read_jsonl(audited_subset) if (r.get("model_version"), r.get("input_class")) in E2E_CELLS][:5]
    frame = pd.DataFrame(rows)
    experiment = f"runs-mem-{uuid.uuid4().hex[:8]}"
    result = api.score(frame, ledger=False, progress=False, mlflow_experiment=experiment)
    assert result.mlflow_run is not None
    logged = client().get_run(result.mlflow_run.run_id)
    expected = hashlib.sha256(b"".join(canonical_json(r.to_dict()).encode() + b"\n"
                                       for r in as_record_set(frame).records)).hexdigest()
    assert logged.data.params["input_digest"] == "sha256:" + expected
    assert logged.data.params["input_source"] == "<DataFrame>"
    assert logged.data.tags["conformance.ledger_url"].startswith("none")
    # No verdicts file was asked for: the verdicts and the summary are written to the run from memory.
    assert {a.path for a in client().list_artifacts(logged.info.run_id)} == {"verdicts.jsonl", "summary.json",
                                                                            "baselines.json"}


def test_the_build_run_has_its_dataset_input_example_and_plot(built: list[dict], approved_subset: Path,
                                                              workdir: Path) -> None:
    import mlflow

    from conformance.registry import Registry

    reg = Registry()
    for b in built:
        version = client().get_model_version(b["name"], str(b["version"]))
        build_run = client().get_run(version.run_id)
        inputs = build_run.inputs.dataset_inputs
        assert len(inputs) == 1
        dataset = inputs[0].dataset
        full = version.tags["dataset_digest"]
        assert full.startswith("sha256:")
        assert dataset.digest == full[len("sha256:"):][:36]
        input_tags = {t.key: t.value for t in inputs[0].tags}
        assert input_tags["conformance.dataset_digest"] == full
        assert input_tags["mlflow.data.context"] == "approved"
        assert dataset.name == f"{b['name']}.approved"
        columns = {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert {"record_id", "prompt_id", "input", "output", "model_version", "input_class"} <= columns
        n_approved = sum((r["model_version"], r["input_class"]) == (b["model_version"], b["input_class"])
                         for r in read_jsonl(approved_subset))
        assert json.loads(dataset.profile)["num_rows"] == n_approved
        assert build_run.data.tags["conformance.eval_run_ids"]

        info = mlflow.models.get_model_info(f"models:/{b['name']}/{b['version']}")
        assert info.saved_input_example_info is not None

        local = Path(mlflow.artifacts.download_artifacts(run_id=build_run.info.run_id, artifact_path="",
                                                         dst_path=str(workdir / f"build-{b['version']}-{b['name']}")))
        baseline = reg.load_version(b["name"], b["version"])[1]
        svg = ET.fromstring((local / "calibration_scores.svg").read_text())
        circles = [e for e in svg.iter() if e.tag.endswith("circle")]
        assert len(circles) == baseline.n_calibration
        scores = json.loads((local / "calibration_scores.json").read_text())["calibration_scores"]
        assert scores == pytest.approx(baseline.calibration_scores.tolist())


def test_report_is_logged_to_its_scoring_run(scored: dict, workdir: Path) -> None:
    out = workdir / "runs-report.html"
    code, stdout, _ = run("report", str(scored["out"]), "--summary", str(scored["summary"]), "--out", str(out))
    assert code == 0
    run_id = scored["json"]["mlflow_run"]["run_id"]
    assert f"report logged to MLflow run {run_id}" in stdout
    assert "runs-report.html" in {a.path for a in client().list_artifacts(run_id)}

    # By the ledger's run id too (report --run).
    code, stdout, _ = run("report", "--run", scored["json"]["ledger"]["run_id"], "--out",
                          str(workdir / "runs-report-2.html"))
    assert code == 0 and f"report logged to MLflow run {run_id}" in stdout

    # Verdicts that no scoring run wrote: the report is written, nothing is logged, no failure.
    other = write_jsonl(read_jsonl(scored["out"])[:3], workdir / "runs-other.jsonl")
    code, stdout, stderr = run("report", str(other), "--out", str(workdir / "runs-report-3.html"))
    assert code == 0 and "logged to MLflow" not in stdout and "warning" not in stderr


def test_the_genai_scorer_gives_one_feedback_per_row_matching_score(built: list[dict], audited_subset: Path) -> None:
    import mlflow
    import pandas as pd

    import conformance.mlflow
    from conformance import api

    cell_rows = [r for r in read_jsonl(audited_subset) if (r.get("model_version"), r.get("input_class")) in E2E_CELLS]
    planted = {"aud-0043", "aud-0062"}  # an off-topic poem and a German answer: out of bounds
    picked = cell_rows[:3] + [r for r in cell_rows if r["record_id"] in planted]
    records = [{"record_id": r["record_id"], "model_version": r["model_version"], "input_class": r["input_class"],
                "input": r["input"], "output": r["output"]} for r in picked]
    expected = {v.record_id: v for v in api.score(records, ledger=False, mlflow_run=False, progress=False).verdicts}
    assert {v.verdict for v in expected.values()} == {"within_bounds", "out_of_bounds"}

    data = pd.DataFrame(
        [{"inputs": {"question": r["input"]}, "outputs": r["output"],
          "expectations": {"model_version": r["model_version"], "input_class": r["input_class"],
                           "record": r["record_id"]}} for r in records]
        + [{"inputs": {"question": "hello"}, "outputs": "hi",
            "expectations": {"model_version": "no-such-model", "input_class": "x", "record": "none"}},
           {"inputs": {"question": "hello"}, "outputs": "hi", "expectations": {"record": "nocell"}}])
    experiment = f"runs-genai-{uuid.uuid4().hex[:8]}"
    mlflow.set_experiment(experiment)
    result = mlflow.genai.evaluate(data=data, scorers=[conformance.mlflow.scorer()])
    mlflow.flush_trace_async_logging()

    traces = mlflow.search_traces(run_id=result.run_id, return_type="list")
    assert len(traces) == len(data)
    seen: dict[str, Any] = {}
    for trace in traces:
        feedbacks = [a for a in trace.info.assessments if a.name == "conformance"]
        assert len(feedbacks) == 1
        expectation = {a.name: a.value for a in trace.info.assessments if a.name == "record"}
        seen[expectation["record"]] = feedbacks[0]
    assert set(seen) == {r["record_id"] for r in records} | {"none", "nocell"}
    for record_id, v in expected.items():
        fb = seen[record_id]
        assert fb.value == v.verdict
        assert fb.rationale == v.reason
        assert float(fb.metadata["p_value"]) == pytest.approx(v.p_value)
        assert float(fb.metadata["alpha"]) == v.alpha
        assert fb.metadata["baseline"] == v.baseline
    assert seen["none"].value == "no_baseline" and "no-such-model" in seen["none"].rationale
    assert seen["nocell"].value == "invalid" and "model_version" in seen["nocell"].rationale


def test_the_scorer_refuses_half_a_cell() -> None:
    import conformance.mlflow

    with pytest.raises(ValueError, match="both model_version and input_class"):
        conformance.mlflow.scorer(model_version="m")


def test_on_a_real_mlflow_server_the_run_goes_there_and_no_mlflow_line_reaches_stdout(
        built: list[dict], audited_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from conformance import api
    from conformance.registry import Registry
    from tests.test_registry_failures import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("runs-server"))
    try:
        baselines = [Registry().load_version(b["name"], b["version"])[1] for b in built]
        rows = [r for r in read_jsonl(audited_subset) if (r.get("model_version"), r.get("input_class")) in E2E_CELLS]
        server.wait_until_up()
        remote = Registry(server.uri)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = api.score(rows[:4], baselines=baselines, ledger=False, progress=False, mlflow_run=True,
                               registry=remote)
        assert result.mlflow_run is not None, result.mlflow_run_error
        assert out.getvalue() == ""
        assert "View run" in err.getvalue()  # MLflow's own line, sent to stderr
        logged = remote.client.get_run(result.mlflow_run.run_id)
        assert logged.data.params["n_baselines"] == "2" and result.mlflow_run.tracking_uri == server.uri
        assert {a.path for a in remote.client.list_artifacts(logged.info.run_id)} == {
            "verdicts.jsonl", "summary.json", "baselines.json"}
    finally:
        server.stop()
        _ = Registry().client  # MLflow's process-wide tracking URI back to the embedded store, for later tests


def test_the_scorer_takes_the_cell_from_trace_tags_or_from_its_arguments(built: list[dict],
                                                                         audited_subset: Path) -> None:
    import mlflow

    import conformance.mlflow
    from conformance import api

    b = built[0]
    rows = [r for r in read_jsonl(audited_subset)
            if (r.get("model_version"), r.get("input_class")) == (b["model_version"], b["input_class"])][:2]
    scored = api.score([{k: r[k] for k in ("record_id", "model_version", "input_class", "input", "output")}
                        for r in rows], ledger=False, mlflow_run=False, progress=False).verdicts
    expected, p_values = [v.verdict for v in scored], [v.p_value for v in scored]

    mlflow.set_experiment(f"runs-traces-{uuid.uuid4().hex[:8]}")
    for r in rows:  # production calls, traced with MLflow's own API, their cell in the trace's tags
        with mlflow.start_span(name="answer") as span:
            span.set_inputs({"question": r["input"]})
            span.set_outputs(r["output"])
            mlflow.update_current_trace(tags={"model_version": r["model_version"], "input_class": r["input_class"]})
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(return_type="pandas")
    assert len(traces) == len(rows)
    result = mlflow.genai.evaluate(data=traces, scorers=[conformance.mlflow.scorer()])
    mlflow.flush_trace_async_logging()
    by_input: dict[str, Any] = {}
    for trace in mlflow.search_traces(run_id=result.run_id, return_type="list"):
        feedback = [a for a in trace.info.assessments if a.name == "conformance"]
        assert len(feedback) == 1
        by_input[json.loads(trace.data.request)["question"]] = feedback[0]
    assert [by_input[r["input"]].value for r in rows] == expected
    assert [float(by_input[r["input"]].metadata["p_value"]) for r in rows] == pytest.approx(p_values)
    assert {by_input[r["input"]].metadata["cell_from"] for r in rows} == {"the trace's tags"}

    # The cell given to the scorer: plain rows, no expectations.
    plain = [{"inputs": {"question": r["input"]}, "outputs": r["output"]} for r in rows]
    result = mlflow.genai.evaluate(data=plain, scorers=[conformance.mlflow.scorer(
        model_version=b["model_version"], input_class=b["input_class"])])
    mlflow.flush_trace_async_logging()
    values = {json.loads(t.data.request)["question"]: [a for a in t.info.assessments if a.name == "conformance"][0]
              for t in mlflow.search_traces(run_id=result.run_id, return_type="list")}
    assert [values[r["input"]].value for r in rows] == expected
    assert {v.metadata["cell_from"] for v in values.values()} == {"the scorer's arguments"}
