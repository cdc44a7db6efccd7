"""The Spark engine (``conformance.spark``): the same verdicts, summaries and ledger as the single-process
engine on the same records. The merges it relies on are tested fast, without Spark; the rest runs on
``local[2]`` (slow tier: needs pyspark and Java)."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import conformance
from conformance.baseline.fit import build_baseline
from conformance.scoring.groups import GroupAccumulator
from conformance.scoring.reservoir import PromptReservoir
from conformance.scoring.stream import StreamScorer
from conformance.spark_worker import decode_state, encode_state, merge_plan
from conformance.verdict import WITHIN, Verdict
from conformance.verdict_files import ColumnPlan
from tests.test_stat_fdr import FakeEmbedder
from tests.test_stream import _approved, _audited, _strip

EXAMPLE = Path(__file__).resolve().parents[1] / "baselines" / "example"
FAKE = "tests.test_stat_fdr:FakeEmbedder"


# -- merging partitions' statistics (fast) --------------------------------------------------------------------

def _stream(seed: int, n: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(f"p{rng.randrange(40)}", i) for i in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_merged_partition_reservoirs_equal_one_reservoir_over_the_whole_stream(seed: int) -> None:
    stream = _stream(seed, 300)
    one = PromptReservoir(max_outputs=50, seed=7)
    for key, item in stream:
        one.add(key, item)
    cuts = sorted(random.Random(seed + 100).sample(range(1, len(stream)), 3))
    parts = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    merged = PromptReservoir(max_outputs=50, seed=7)
    for part in parts:
        reservoir = PromptReservoir(max_outputs=50, seed=7)
        for key, item in part:
            reservoir.add(key, item)
        merged.merge(reservoir)
    assert merged.kept() == one.kept()
    assert (merged.n_kept, merged.n_seen, merged.cut) == (one.n_kept, one.n_seen, one.cut)
    for key, item in _stream(seed + 1, 50):  # and the merged one goes on as the single one does
        one.add(key, item)
        merged.add(key, item)
    assert merged.kept() == one.kept()


def test_reservoirs_of_other_sizes_or_seeds_do_not_merge() -> None:
    with pytest.raises(ValueError, match="cannot merge a reservoir of max_outputs 5, seed 1"):
        PromptReservoir(max_outputs=4, seed=1).merge(PromptReservoir(max_outputs=5, seed=1))
    with pytest.raises(ValueError, match="cannot merge group"):
        GroupAccumulator("m", "c").merge(GroupAccumulator("m", "d"))


@pytest.fixture(scope="module")
def baseline():
    return build_baseline(_approved(120, 2), alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder())  # type: ignore[arg-type]


def test_merged_scorers_through_json_give_the_summaries_and_flags_of_one_scorer(baseline) -> None:
    from conformance.records import as_record_set

    rows = as_record_set(_audited(700)).rows
    def resolve(mv: str, ic: str):  # type: ignore[no-untyped-def]
        return ("models:/m-c/1", baseline) if (mv, ic) == ("m", "c") else "no baseline"

    def scorer() -> StreamScorer:
        return StreamScorer(resolve, embedder=FakeEmbedder(), fdr=0.1, scored_at="t")  # type: ignore[arg-type]

    one = scorer()
    expected = one.score_chunk(rows)
    merged, plan = scorer(), ColumnPlan(fdr=True)
    whole_plan = ColumnPlan(fdr=True)
    whole_plan.add(expected)
    got: list[Verdict] = []
    for start in (0, 250, 600):
        part, part_plan = scorer(), ColumnPlan(fdr=True)
        verdicts = part.score_chunk(rows[start:{0: 250, 250: 600, 600: len(rows)}[start]])
        part_plan.add(verdicts)
        got.extend(verdicts)
        back, back_plan = scorer(), ColumnPlan(fdr=True)
        decode_state(encode_state(part, part_plan), back, back_plan)
        merged.merge(back)
        merge_plan(plan, back_plan)
    merged.resolved = dict(one.resolved)
    assert merged.groups[("m", "c")].reservoir.n_kept < merged.groups[("m", "c")].n  # the reservoir sampled
    (want, want_flags), (have, have_flags) = one.finish(), merged.finish()
    assert [s.to_dict() for s in have] == [s.to_dict() for s in want]
    assert want_flags is not None and have_flags is not None
    assert have_flags.flags.tolist() == want_flags.flags.tolist()
    assert list(plan.columns) == list(whole_plan.columns) and plan.arrow_schema() == whole_plan.arrow_schema()
    assert _strip([v.to_dict() for v in got]) == _strip([v.to_dict() for v in expected])


def test_without_pyspark_the_module_imports_and_scoring_says_what_to_install() -> None:
    import subprocess

    code = ("import sys; sys.modules['pyspark'] = None\n"  # as if not installed
            "import conformance.spark as s\n"
            "try:\n    s.score(None)\nexcept s.SparkUnavailableError as e:\n    print(e)\n")
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"PYTHONPATH": root})
    assert "install the spark extra: pip install -e '.[spark]'" in out.stdout, out.stderr


# -- on Spark, local[2] (slow) ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[spark]'")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("the Spark tests need Java 17 or newer ('java' on PATH or JAVA_HOME)")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    from conformance.spark import session

    s = session("local[2]", app_name="conformance-tests")
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def _plain(column) -> list:  # type: ignore[no-untyped-def]
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in column.tolist()]


def _jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _file_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_spark_file_gives_the_verdicts_summaries_and_ledger_of_one_process(spark, baseline, tmp_path: Path) -> None:
    from conformance.spark import score_file

    rows = _audited(1200)
    rows.insert(30, dict(rows[5]))  # a duplicate record id, in another partition than its first use
    rows.append(dict(rows[900]))
    rows.append({"record_id": "x", "model_version": "m", "input_class": "c", "input": "q", "output": 5})
    path = tmp_path / "audited.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:600]) + "\nnot json\n[1]\n"
                    + "".join(json.dumps(r) + "\n" for r in rows[600:]), encoding="utf-8")
    one = conformance.score(path, baselines=[baseline], embedder=FakeEmbedder(), fdr=0.1,  # type: ignore[arg-type]
                            out=tmp_path / "one.jsonl", ledger=f"sqlite:///{tmp_path / 'one.db'}")
    ledger = f"sqlite:///{tmp_path / 'spark.db'}"
    got = score_file(path, baselines=[baseline], embedder=FAKE, fdr=0.1, out=tmp_path / "spark.jsonl",
                     ledger=ledger, partitions=3, chunk_size=200, summary=tmp_path / "summary.json")
    assert _strip(_file_rows(tmp_path / "spark.jsonl")) == _strip(_file_rows(tmp_path / "one.jsonl"))
    assert [s.to_dict() for s in got.summaries] == [s.to_dict() for s in one.summaries]
    assert got.counts == one.counts and got.counts["invalid"] == 6
    assert got.ledger is not None and one.ledger is not None
    assert (got.ledger.added, got.ledger.already_recorded) == (one.ledger.added, one.ledger.already_recorded)
    reasons = [r["reason"] for r in _file_rows(tmp_path / "spark.jsonl") if r["verdict"] == "invalid"]
    assert any("first used at row 6" in r for r in reasons) and any("not valid JSON" in r for r in reasons)
    again = score_file(path, baselines=[baseline], embedder=FAKE, fdr=0.1, out=tmp_path / "again.jsonl",
                       ledger=ledger, partitions=2, run_id=got.ledger.run_id)
    assert again.ledger is not None and again.ledger.added == 0  # exactly once
    assert again.ledger.already_recorded == got.ledger.added + got.ledger.already_recorded


@pytest.mark.slow
def test_spark_dataframe_gives_the_verdicts_of_one_process(spark, baseline) -> None:
    from conformance.spark import score

    rows = _audited(400)
    frame = spark.createDataFrame(
        [{k: r.get(k) for k in ("record_id", "model_version", "input_class", "input", "output", "prompt_id")}
         for r in rows])
    assert frame.rdd.getNumPartitions() == 2  # in the order of `rows`
    got = score(frame, baselines=[baseline], embedder=FAKE, fdr=0.2).toPandas()
    want = conformance.score([{k: v for k, v in r.items() if k != "n"} for r in rows], baselines=[baseline],
                             embedder=FakeEmbedder(), fdr=0.2).to_pandas()  # type: ignore[arg-type]
    assert list(got.columns) == list(want.columns)
    for column in ("row", "record_id", "verdict", "reason", "p_value", "bh_flag", "baseline"):
        assert _plain(got[column]) == _plain(want[column]), column
    assert np.allclose(got["score"].astype(float), want["score"].astype(float), rtol=1e-12, equal_nan=True)


@pytest.mark.slow
def test_spark_with_the_real_embedder_on_the_example(spark, tmp_path: Path) -> None:
    from conformance.spark import score_file
    from tests.conftest import E2E_CELLS, read_jsonl

    cell = sorted(E2E_CELLS)[0]
    approved = [r for r in read_jsonl(EXAMPLE / "approved.jsonl") if (r["model_version"], r["input_class"]) == cell]
    built = conformance.build(approved, register=False)
    audited = [r for r in read_jsonl(EXAMPLE / "audited.jsonl")
               if (r.get("model_version"), r.get("input_class")) == cell
               or (r.get("metadata") or {}).get("planted", "").startswith(("no_baseline", "invalid"))]
    path = _jsonl(audited, tmp_path / "audited.jsonl")
    one = conformance.score(path, baselines=built, out=tmp_path / "one.jsonl")
    got = score_file(path, baselines=built, out=tmp_path / "spark.jsonl", partitions=2)
    assert _strip(_file_rows(tmp_path / "spark.jsonl")) == _strip(_file_rows(tmp_path / "one.jsonl"))
    assert [s.to_dict() for s in got.summaries] == [s.to_dict() for s in one.summaries]
    assert got.counts[WITHIN] > 0 and got.ledger is None


@pytest.mark.slow
def test_cli_engine_spark_gives_the_local_engines_verdicts_and_ledger(spark, built, workdir: Path,
                                                                      audited_subset: Path) -> None:
    """The command line, baselines from the registry (the session's approved cells), ``--engine spark``:
    the verdicts file, the printed counts and the ledger of ``--engine local``."""
    import contextlib
    import io

    from conformance.cli import main
    from conformance.ledger import Ledger

    rows = _file_rows(audited_subset)[:14]
    path = _jsonl(rows, workdir / "audited-spark-cli.jsonl")
    codes, printed = [], []
    for engine in ("local", "spark"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            extra = ["--engine", "spark", "--spark-master", "local[2]"] if engine == "spark" else []
            codes.append(main(["score", str(path), "--out", str(workdir / f"cli-{engine}.jsonl"), "--format", "json",
                               "--no-progress", "--ledger", f"sqlite:///{workdir / f'cli-{engine}.db'}", *extra]))
        printed.append(json.loads(out.getvalue()))
    assert codes[0] == codes[1] and printed[0]["counts"] == printed[1]["counts"]
    assert printed[0]["groups"] == printed[1]["groups"]
    assert _strip(_file_rows(workdir / "cli-spark.jsonl")) == _strip(_file_rows(workdir / "cli-local.jsonl"))
    assert any(r["baseline"] and r["baseline"].startswith("models:/") for r in _file_rows(workdir / "cli-spark.jsonl"))
    for engine in ("local", "spark"):
        with Ledger(f"sqlite:///{workdir / f'cli-{engine}.db'}") as book:
            assert len(book.query_rows()) == len(rows)
    # Each is an MLflow scoring run, the same but for the engine (docs/mlflow.md).
    from conformance.registry import Registry

    runs = [Registry().client.get_run(p["mlflow_run"]["run_id"]) for p in printed]
    assert [r.data.params["engine"] for r in runs] == ["local", "spark"]
    assert runs[0].data.params["input_digest"] == runs[1].data.params["input_digest"]
    assert runs[0].data.metrics == runs[1].data.metrics
