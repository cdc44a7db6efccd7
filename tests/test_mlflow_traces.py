"""MLflow traces in, verdicts and sign-offs back onto the traces as Feedback assessments.

Against a real embedded SQLite tracking store in a working folder of this module's own, with traces made by
MLflow's own tracing API (``@mlflow.trace`` under ``mlflow.start_run``, and ``mlflow.genai.evaluate`` with a
scorer of code; tags set with ``mlflow.update_current_trace``) and assessments read back with
``mlflow.get_trace``. One small cell (16 approved
prompts at alpha 0.2) is built once for the module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE, read_jsonl

pytestmark = pytest.mark.slow

CELL = ("support-bot-3.2", "shipping_status")
OFF_POLICY = ("Here is my favourite recipe for banana bread: mash three ripe bananas, stir in melted butter, "
              "sugar, an egg and flour, then bake for an hour at 175 degrees.")


def run_cli(*argv: str) -> tuple[int, str, str]:
    from conformance.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _cell_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One approved output per prompt of the cell (16 prompts), and six audited in-bounds rows of it."""
    approved, prompts = [], set()
    for r in read_jsonl(EXAMPLE / "approved.jsonl"):
        if (r["model_version"], r["input_class"]) == CELL and r["prompt_id"] not in prompts and len(prompts) < 16:
            prompts.add(r["prompt_id"])
            approved.append(r)
    audited = [r for r in read_jsonl(EXAMPLE / "audited.jsonl")
               if (r.get("model_version"), r.get("input_class")) == CELL
               and (r.get("metadata") or {}).get("planted") == "in_bounds"][:6]
    return approved, audited


def _log(mlflow: Any, question: str, answer: str, tags: dict[str, str] | None) -> str:
    @mlflow.trace
    def support_bot(question: str) -> dict[str, str]:
        if tags:
            mlflow.update_current_trace(tags=tags)
        return {"answer": answer}

    support_bot(question)
    trace_id = mlflow.get_last_active_trace_id()
    assert trace_id is not None
    return str(trace_id)


def _genai_evaluation(mlflow: Any, rows: list[dict[str, Any]], tags: dict[str, str]) -> str:
    """An evaluation run made by mlflow.genai.evaluate (a scorer of code, no judge model): its run id."""
    from mlflow.genai.scorers import scorer

    answers = {r["input"]: r["output"] for r in rows}

    @scorer
    def answered(outputs: Any) -> bool:
        return bool(outputs)

    def support_bot(question: str) -> dict[str, str]:
        mlflow.update_current_trace(tags=tags)
        return {"answer": answers[question]}

    with contextlib.redirect_stdout(io.StringIO()):
        done = mlflow.genai.evaluate(data=[{"inputs": {"question": q}} for q in answers], predict_fn=support_bot,
                                     scorers=[answered])
    return str(done.run_id)


def _failed_call(mlflow: Any, question: str, tags: dict[str, str]) -> str:
    """An error trace: the call raised, so the trace has no response."""
    @mlflow.trace
    def support_bot(question: str) -> dict[str, str]:
        mlflow.update_current_trace(tags=tags)
        raise TimeoutError("the model server did not answer")

    with contextlib.suppress(TimeoutError):
        support_bot(question)
    return str(mlflow.get_last_active_trace_id())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[dict[str, Any]]:
    """A working folder whose embedded store holds an evaluation experiment (two approved runs, one of them made
    by mlflow.genai.evaluate; a draft run; a run with an untagged trace), an experiment with no approved run, and
    two experiments of production traces; the cell built from the evaluation experiment and approved. MLflow's
    current store is given back as it was."""
    import mlflow

    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    folder = tmp_path_factory.mktemp("traces")
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "CONFORMANCE_LEDGER_URL")}
    old_cwd = os.getcwd()
    os.chdir(folder)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    try:
        from conformance.registry import Registry

        uri = Registry().uri  # the embedded store of this folder
        mlflow.set_tracking_uri(uri)
        approved, audited = _cell_rows()
        tags = {"model_version": CELL[0], "input_class": CELL[1]}
        mlflow.set_experiment("support-bot-evals")
        with mlflow.start_run(run_name="approved-eval") as run:
            mlflow.set_tag("conformance.approved_by", "A. Approver")
            for r in approved[:12]:
                _log(mlflow, r["input"], r["output"], tags)
        evaluated = _genai_evaluation(mlflow, approved[12:], tags)
        mlflow.MlflowClient().set_tag(evaluated, "conformance.approved_by", "A. Approver")
        with mlflow.start_run(run_name="draft-eval"):
            _log(mlflow, approved[0]["input"] + " (draft)", approved[0]["output"], tags)
        with mlflow.start_run(run_name="untagged-eval") as untagged:  # its run carries the tags the trace lacks
            mlflow.set_tags({"model_version": CELL[0]})
            _log(mlflow, approved[1]["input"], approved[1]["output"], {"input_class": CELL[1]})
            untagged_trace = _log(mlflow, approved[2]["input"], approved[2]["output"], None)
        mlflow.set_experiment("nothing-approved")
        with mlflow.start_run(run_name="unapproved"):
            _log(mlflow, approved[3]["input"], approved[3]["output"], tags)
        mlflow.set_experiment("support-bot-prod")
        prod = {"within": [_log(mlflow, r["input"], r["output"], tags) for r in audited],
                "off_policy": _log(mlflow, audited[0]["input"], OFF_POLICY, tags),
                "no_tags": _log(mlflow, audited[1]["input"], audited[1]["output"], {"input_class": CELL[1]}),
                "error": _failed_call(mlflow, audited[2]["input"], tags)}
        mlflow.set_experiment("support-bot-prod-2")
        prod2 = [_log(mlflow, r["input"], r["output"], tags) for r in audited[:4]]
        mlflow.flush_trace_async_logging()

        code, out, err = run_cli("build", "--from-mlflow-experiment", "support-bot-evals", "--alpha", "0.2",
                                 "--approve", "--by", "A. Approver", "--format", "json", "--no-progress")
        assert code == 0, err
        yield {"uri": uri, "run_ids": sorted([run.info.run_id, evaluated]), "untagged_run": untagged.info.run_id,
               "untagged_trace": untagged_trace, "prod": prod, "prod2": prod2, "built": json.loads(out),
               "build_err": err, "folder": folder}
    finally:
        os.chdir(old_cwd)
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def scored(store: dict[str, Any]) -> dict[str, Any]:
    os.chdir(store["folder"])
    code, out, err = run_cli("score", "--from-mlflow-experiment", "support-bot-prod", "--out", "verdicts.jsonl",
                             "--format", "json", "--no-progress")
    assert code in (0, 1), err
    return {"code": code, "out": json.loads(out), "err": err}


def _assessments(trace_id: str, name: str) -> list[Any]:
    import mlflow

    return [a for a in mlflow.get_trace(trace_id).info.assessments if a.name == name]


def test_build_takes_the_approved_run_only(store: dict[str, Any]) -> None:
    from conformance.registry import Registry

    [row] = store["built"]
    assert (row["model_version"], row["input_class"], row["approved_by"]) == (*CELL, "A. Approver")
    assert "read 16 trace(s) of 2 approved run(s); 2 unapproved run(s) skipped" in store["build_err"]
    _, baseline = Registry().resolve_approved(*CELL)  # type: ignore[misc]
    assert baseline.lineage["eval_run_ids"] == store["run_ids"]  # a run of @mlflow.trace and one of genai.evaluate
    assert baseline.lineage["n_records"] == 16
    assert baseline.n_fit + baseline.n_calibration_prompts == 16


def test_a_named_run_is_approved_and_a_trace_without_its_tags_is_a_named_error(store: dict[str, Any]) -> None:
    os.chdir(store["folder"])
    code, out, err = run_cli("build", "--from-mlflow-run", store["untagged_run"], "--alpha", "0.2", "--no-progress")
    assert code == 2 and out == ""
    assert store["untagged_trace"] in err and "no tag 'input_class' on the trace" in err
    assert "Traceback" not in err
    # the other trace of that run took model_version from the run's tags: it is not named
    assert err.count("trace tr-") == 1


def test_an_experiment_without_an_approved_run_is_refused(store: dict[str, Any]) -> None:
    os.chdir(store["folder"])
    code, out, err = run_cli("build", "--from-mlflow-experiment", "nothing-approved", "--no-progress")
    assert code == 2 and out == ""
    assert "none of its 1 run(s) is approved" in err and "conformance.approved_by" in err


def test_score_logs_each_verdict_onto_its_trace(store: dict[str, Any], scored: dict[str, Any]) -> None:
    from conformance.ledger import Ledger

    prod = store["prod"]
    result = scored["out"]
    assert scored["code"] == 1
    assert result["counts"]["out_of_bounds"] >= 1 and result["counts"]["invalid"] == 2
    assert sum(result["counts"].values()) == len(prod["within"]) + 3
    assert result["assessments"] == {"logged": len(prod["within"]) + 3, "already_there": 0}
    verdicts = {v["record_id"]: v for v in read_jsonl(store["folder"] / "verdicts.jsonl")}
    [off] = _assessments(prod["off_policy"], "conformance")
    assert off.value == "out_of_bounds" == verdicts[prod["off_policy"]]["verdict"]
    assert off.source.source_type == "CODE" and off.source.source_id == "conformance"
    with Ledger() as book:
        entry = book.verdict_entry(prod["off_policy"])
    meta = off.metadata
    assert meta["ledger_seq"] == str(entry.seq) and meta["ledger_run_id"] == result["ledger"]["run_id"]
    assert meta["baseline_uri"] == verdicts[prod["off_policy"]]["baseline"] == store["built"][0]["uri"]
    assert float(meta["p_value"]) == verdicts[prod["off_policy"]]["p_value"] and float(meta["alpha"]) == 0.2
    assert off.rationale == verdicts[prod["off_policy"]]["reason"]
    # the trace without its tags is an invalid verdict, on its trace too, naming what is missing
    [bad] = _assessments(prod["no_tags"], "conformance")
    assert bad.value == "invalid" and "no tag 'model_version'" in bad.rationale
    assert verdicts[prod["no_tags"]]["verdict"] == "invalid"
    [failed] = _assessments(prod["error"], "conformance")
    assert failed.value == "invalid" and "state is ERROR" in failed.rationale


def test_a_rerun_adds_no_second_assessment(store: dict[str, Any], scored: dict[str, Any]) -> None:
    """Run as a person would, in a process of its own: stdout is the JSON and nothing else (MLflow's console lines
    stay off it), and nothing is logged or recorded twice."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONFORMANCE_LEDGER_URL")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    run = subprocess.run([sys.executable, "-c", "import sys; from conformance.cli import main; sys.exit(main())",
                          "score", "--from-mlflow-experiment", "support-bot-prod", "--out", "again.jsonl",
                          "--no-progress", "--format", "json"],
                         cwd=store["folder"], env=env, capture_output=True, text=True, timeout=600)
    n = len(store["prod"]["within"]) + 3
    assert run.returncode == 1, run.stderr
    said = json.loads(run.stdout)
    assert said["assessments"] == {"logged": 0, "already_there": n}
    assert said["ledger"]["added"] == 0 and said["ledger"]["already_recorded"] == n
    for trace_id in [*store["prod"]["within"], store["prod"]["off_policy"]]:
        assert len(_assessments(trace_id, "conformance")) == 1


def test_a_signoff_lands_on_the_trace(store: dict[str, Any], scored: dict[str, Any]) -> None:
    from conformance import api

    os.chdir(store["folder"])
    trace_id = store["prod"]["off_policy"]
    done = api.signoff(trace_id, decision="confirmed", by="R. Reviewer", comment="a recipe, not shipping help")
    [landed] = _assessments(trace_id, "conformance.signoff")
    assert landed.value == "confirmed" and landed.rationale == "a recipe, not shipping help"
    assert landed.metadata["by"] == "R. Reviewer" and landed.metadata["signed_seq"] == str(done["signed_seq"])
    again = api.signoff(trace_id, decision="confirmed", by="R. Reviewer", comment="a recipe, not shipping help")
    assert again["added"] is False and len(_assessments(trace_id, "conformance.signoff")) == 1


def test_a_signoff_with_the_store_down_is_recorded_with_a_warning(store: dict[str, Any],
                                                                 scored: dict[str, Any]) -> None:
    from conformance import api

    os.chdir(store["folder"])
    trace_id = store["prod"]["within"][0]
    os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"  # nothing listens there
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            done = api.signoff(trace_id, decision="false_alarm", by="R. Reviewer")
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    assert done["added"] is True
    said = [str(w.message) for w in caught]
    assert any("its trace was not updated" in m and f"#{done['seq']}" in m for m in said), said
    import mlflow

    mlflow.set_tracking_uri(store["uri"])
    assert _assessments(trace_id, "conformance.signoff") == []
    # with the store back, the same sign-off again completes the trace and adds nothing to the ledger
    again = api.signoff(trace_id, decision="false_alarm", by="R. Reviewer")
    assert again["added"] is False and len(_assessments(trace_id, "conformance.signoff")) == 1


def test_a_rerun_completes_what_was_not_logged(store: dict[str, Any]) -> None:
    """The verdicts of a batch recorded, only some logged onto their traces (as after a store failure midway):
    the same command again logs the rest and records nothing twice."""
    from conformance.ledger import Ledger
    from conformance.mlflow.traces import log_verdicts, records_from_experiment, score_traces

    os.chdir(store["folder"])
    n = len(store["prod2"])
    done = score_traces("support-bot-prod-2", log_assessments=False, progress=False)
    assert done.result.n == n and done.assessments.logged == 0 and done.result.ledger.added == n  # type: ignore
    read = records_from_experiment("support-bot-prod-2")
    with Ledger() as book:
        report = log_verdicts(done.result.verdicts[:2], book=book, assessed=read.assessed,
                              run_id=done.result.ledger.run_id)  # type: ignore[union-attr]
    assert report.to_dict() == {"logged": 2, "already_there": 0}
    code, out, err = run_cli("score", "--from-mlflow-experiment", "support-bot-prod-2", "--out", "prod2.jsonl",
                             "--no-progress")
    assert code in (0, 1), err
    assert f"assessments on traces: {n - 2} logged, 2 already there" in out and f"0 new entries, {n} already" in out
    for trace_id in store["prod2"]:
        [one] = _assessments(trace_id, "conformance")
        assert one.metadata["ledger_run_id"] == done.result.ledger.run_id  # type: ignore[union-attr]
    with pytest.raises(Exception, match="holds no traces"):  # --since after every trace: said plainly
        records_from_experiment("support-bot-prod-2", since="2999-01-01")


def test_a_store_down_after_the_ledger_committed_is_a_clear_error(store: dict[str, Any]) -> None:
    from conformance.ledger import Ledger
    from conformance.mlflow.traces import AssessmentError, log_verdicts, score_traces

    os.chdir(store["folder"])
    done = score_traces("support-bot-prod-2", log_assessments=False, progress=False)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        with Ledger() as book, pytest.raises(AssessmentError) as caught:
            log_verdicts(done.result.verdicts, book=book, assessed={}, tracking_uri="http://127.0.0.1:9")
    finally:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        import mlflow

        mlflow.set_tracking_uri(store["uri"])
    said = str(caught.value)
    assert "recorded in the ledger" in said and "run the same command again" in said and "127.0.0.1:9" in said
    assert caught.value.report.logged == 0


def test_every_trace_is_read_page_by_page(store: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.mlflow import traces

    os.chdir(store["folder"])
    whole = traces.records_from_experiment("support-bot-prod")
    monkeypatch.setattr(traces, "_PAGE", 3)  # pages of 3: the 9 traces take 3 pages
    paged = traces.records_from_experiment("support-bot-prod")
    assert [r.record_id for r in paged.records.rows] == [r.record_id for r in whole.records.rows]
    assert paged.n_traces == len(store["prod"]["within"]) + 3


def test_a_filter_mlflow_refuses_is_a_usage_error_not_a_store_failure(store: dict[str, Any]) -> None:
    os.chdir(store["folder"])
    code, out, err = run_cli("score", "--from-mlflow-experiment", "support-bot-prod", "--out", "never.jsonl",
                             "--filter-string", "tags.input_class === 'x'")
    assert code == 2 and out == "" and not (store["folder"] / "never.jsonl").exists()
    assert "--filter-string \"tags.input_class === 'x'\" is not a trace filter MLflow accepts" in err
    assert "reachable" not in err and "Traceback" not in err


def test_fields_tags_and_since_choose_what_is_read(store: dict[str, Any]) -> None:
    import mlflow

    from conformance.mlflow.traces import TraceFields, records_from_experiment
    from conformance.records import Record

    os.chdir(store["folder"])
    whole = records_from_experiment("support-bot-prod-2")
    named = records_from_experiment("support-bot-prod-2", fields=TraceFields(input_field="question",
                                                                             output_field="answer"))
    assert [r.to_dict() for r in named.records.records] == [r.to_dict() for r in whole.records.records]
    # Oldest first; traces logged within one millisecond come in MLflow's own tie-break, by trace id.
    client = mlflow.MlflowClient()
    oldest_first = sorted(store["prod2"], key=lambda t: (client.get_trace(t).info.timestamp_ms, t))
    assert [r.record_id for r in whole.records.records] == oldest_first
    first = whole.records.records[0]
    assert first.extras["metadata"]["trace_id"] == first.record_id
    assert first.extras["timestamp"].endswith("+00:00") and "eval_run_id" not in first.extras  # logged under no run
    missing = records_from_experiment("support-bot-prod-2", fields=TraceFields(output_field="text"))
    assert not missing.records.records and len(missing.records.invalid) == len(store["prod2"])
    assert "its response has no field 'text' (it holds answer)" in missing.records.invalid[0].reason
    renamed = records_from_experiment("support-bot-prod-2", fields=TraceFields(input_class_tag="intent"))
    assert all("no tag 'intent' on the trace" in bad.reason for bad in renamed.records.invalid)
    since = records_from_experiment("support-bot-prod-2", since=first.extras["timestamp"][:19] + "Z")
    assert all(isinstance(r, Record) for r in since.records.rows)
    assert {r.record_id for r in since.records.rows} <= set(store["prod2"]) and since.n_traces >= 1
