"""The Spark engine against the single-process engine on the same records: time ratio and identical verdicts.

Builds one baseline in memory (``register=False``) from ``--approved`` real MT-bench answers (turn 1 of
the first models in name order, one cell ``(mt-bench-chat, mt_bench)``), then scores ``--n`` answers of
the other models (both turns) three times, with the real embedder and no embedding cache:

1. ``conformance.score`` in this process (the embedder loaded and warmed before timing);
2. ``conformance.spark.score_file`` on ``--master`` (default ``local[2]``), the session started before
   timing: a cold run, where each Python worker loads the embedder and the baseline;
3. the same again: a warm run (workers reused, the model already loaded in each).

Verdicts are compared as the tests do: every column but ``scored_at``, scores to 12 significant digits
(another number of rows in a matrix product may round the 16th digit differently), p-values, verdicts and
reasons exactly; and the group summaries exactly. The load average (before and after) and the core count
are recorded beside the times. Prints a summary and writes ``spark.json`` to ``--out``.

    python -m benchmarks.spark --n 400 --out results/spark
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import conformance
from conformance.embedder import get_embedder

from benchmarks.data import mt_bench_rows


def _strip(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [{k: (float(f"{v:.12g}") if k == "score" and v is not None else v) for k, v in r.items()
             if k != "scored_at"} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="audited answers to score (default %(default)s)")
    parser.add_argument("--approved", type=int, default=320,
                        help="approved answers the baseline is built from (default %(default)s)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder spark.json is written to")
    args = parser.parse_args()
    rows = mt_bench_rows()
    models = sorted({r["model"] for r in rows})
    first = set(models[:8])
    approved = [r for r in rows if r["model"] in first and r["prompt_id"].endswith("turn1")][: args.approved]
    audited = [r for r in rows if r["model"] not in first]
    if not 1 <= args.n <= len(audited):
        raise SystemExit(f"--n must be in [1, {len(audited)}], got {args.n}")
    audited = audited[: args.n]

    def record(r: dict, i: int, kind: str) -> dict:
        return {"record_id": f"{kind}{i}", "model_version": "mt-bench-chat", "input_class": "mt_bench",
                "input": r["input"], "output": r["output"], "prompt_id": r["prompt_id"],
                "metadata": {"model": r["model"], "category": r["input_class"]}}

    embedder = get_embedder()
    _ = embedder.fingerprint
    embedder.embed(["warm up"], progress=False)
    t0 = time.perf_counter()
    built = conformance.build([record(r, i, "a") for i, r in enumerate(approved)], register=False)
    t_build = time.perf_counter() - t0

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    repo = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])
    from conformance.spark import score_file, session

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        where = Path(folder)
        path = where / "audited.jsonl"
        path.write_text("".join(json.dumps(record(r, i, "r")) + "\n" for i, r in enumerate(audited)),
                        encoding="utf-8")
        t0 = time.perf_counter()
        one = conformance.score(path, baselines=built, out=where / "one.jsonl", progress=False)
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        spark = session(args.master, app_name="conformance-benchmark")
        spark.sparkContext.setLogLevel("ERROR")
        t_session = time.perf_counter() - t0
        times = []
        results = []
        for name in ("cold", "warm"):
            t0 = time.perf_counter()
            results.append(score_file(path, baselines=built, out=where / f"spark-{name}.jsonl", master=args.master))
            times.append(time.perf_counter() - t0)
        identical = all(_strip(where / f"spark-{name}.jsonl") == _strip(where / "one.jsonl")
                        for name in ("cold", "warm"))
        same_summaries = all([s.to_dict() for s in r.summaries] == [s.to_dict() for s in one.summaries]
                             for r in results)
        partitions = spark.sparkContext.textFile(str(path)).getNumPartitions()
        spark.stop()
    load_after = os.getloadavg()
    result = {
        "n_audited": len(audited), "n_approved": len(approved), "master": args.master, "partitions": partitions,
        "build_s": t_build, "single_process_s": t_one, "spark_session_start_s": t_session,
        "spark_cold_s": times[0], "spark_warm_s": times[1],
        "ratio_cold": times[0] / t_one, "ratio_warm": times[1] / t_one,
        "verdicts_identical": identical, "summaries_identical": same_summaries, "counts": one.counts,
        "machine": {"cores": os.cpu_count(), "load_average_before": load_before, "load_average_after": load_after,
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spark.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{len(audited)} MT-bench answers against a baseline of {len(approved)}: single process {t_one:.2f} s; "
          f"Spark {args.master} ({partitions} partitions) {times[0]:.2f} s cold (ratio {result['ratio_cold']:.2f}), "
          f"{times[1]:.2f} s warm (ratio {result['ratio_warm']:.2f}), session start {t_session:.1f} s apart")
    print(f"verdicts identical {identical}, summaries identical {same_summaries}; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} cores; "
          f"written to {args.out / 'spark.json'}")


if __name__ == "__main__":
    main()
