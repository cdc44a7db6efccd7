"""Startup time of the command line: how long a user waits for ``--help`` or for a missing-file error.

Times, hyperfine-style (``--warmup`` untimed runs, then ``--runs`` timed runs, median and maximum of
the wall time of each whole process):

* ``conformance --help``, ``conformance approve --help``;
* ``conformance build missing.csv`` and ``conformance score missing.jsonl --out x.jsonl`` (both must fail
  at once with a clear message, before anything heavy is imported);
* ``python -c "import conformance"``;
* with ``--score-store DIR`` (a folder where the quickstart's ``conformance build
  baselines/example/approved.jsonl --approve --by NAME`` has run): ``conformance score`` of a one-record
  file whose output text is new (the embedder is loaded: target 10 s on an idle machine), then of the same
  record under another id (its texts are in the embedding cache), each run with its peak RSS; with
  ``--score-against CHECKOUT`` the same for another checkout's code, interleaved run for run.

Once more under ``python -X importtime``, it lists which heavy libraries each command imported (numpy,
scipy, torch, mlflow, sentence_transformers, pandas, ...) and its slowest top-level imports. The
targets are 1.5 s of wall time for ``--help`` and the missing-file errors on an idle machine; the
machine's load average (before and after) and its core count are recorded beside the times, since a
loaded machine makes every figure slower. Needs no data. Cost: about 30 s at the defaults.

The command is the ``conformance`` script beside this Python interpreter (the one a user of this
environment types), or ``--cli PATH``; it runs in an empty temporary folder. Prints a table and
writes ``startup.json`` to ``--out``.

    python -m benchmarks.startup --out results/startup
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any
from pathlib import Path

#: Libraries too heavy for ``--help`` or a missing-file error to import.
HEAVY = ("numpy", "scipy", "pandas", "pyarrow", "sklearn", "torch", "transformers", "sentence_transformers",
         "mlflow", "sqlalchemy", "psycopg", "matplotlib")

#: (label, arguments after the command, whether the 1.5 s target applies).
CLI_CASES = (
    ("conformance --help", ["--help"], True),
    ("conformance approve --help", ["approve", "--help"], True),
    ("conformance build missing.csv", ["build", "missing.csv"], True),
    ("conformance score missing.jsonl --out x.jsonl", ["score", "missing.jsonl", "--out", "x.jsonl"], True),
)
TARGET_S = 1.5


def cli_command(cli: Path | None) -> list[str]:
    """How to start the command line: the given script, the script beside the interpreter, or its equivalent."""
    script = cli or Path(sys.executable).with_name("conformance")
    if script.is_file():
        return [sys.executable, str(script)]
    if cli is not None:
        raise SystemExit(f"--cli: {cli} is not a file")
    # No console script installed here: what it would run.
    return [sys.executable, "-c", "import sys; from conformance.cli import main; sys.argv[0] = 'conformance'; "
                                  "sys.exit(main())"]


def time_runs(argv: list[str], cwd: str, runs: int, warmup: int) -> dict[str, object]:
    """Wall times of ``runs`` runs of ``argv`` after ``warmup`` untimed ones; exit code and first stderr line."""
    result = None
    for _ in range(warmup):
        subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
    assert result is not None
    first = next((line for line in result.stderr.splitlines() if line.strip()), "")
    return {"median_s": statistics.median(times), "max_s": max(times), "min_s": min(times), "runs": runs,
            "exit_code": result.returncode, "stderr_first_line": first[:200]}


def imports(argv: list[str], cwd: str) -> dict[str, object]:
    """The heavy libraries ``argv`` imports and its slowest top-level imports (``python -X importtime``)."""
    assert argv[0] == sys.executable
    done = subprocess.run([sys.executable, "-X", "importtime", *argv[1:]], cwd=cwd, capture_output=True, text=True)
    packages: set[str] = set()
    top: list[tuple[float, str]] = []
    modules = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        modules += 1
        packages.add(name.strip().split(".")[0])
        if not name.startswith("  "):  # a top-level import, not one made by another module
            top.append((int(cumulative) / 1e6, name.strip()))
    top.sort(reverse=True)
    return {"heavy": [p for p in HEAVY if p in packages], "modules": modules,
            "slowest_top_level": [{"module": m, "cumulative_s": round(s, 3)} for s, m in top[:5]]}


SCORE_TARGET_S = 10.0


def cpu_probe() -> float:
    """Seconds for a fixed pure-Python loop: how fast this (possibly shared, throttled) CPU is right now, so
    that figures taken at different times can be compared. 2.0 s is this machine at its quickest."""
    start = time.perf_counter()
    total = 0
    for i in range(20_000_000):
        total += i
    return time.perf_counter() - start


def run_measured(argv: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, int, int]:
    """Wall time (s), peak RSS (MB) and exit code of one whole process."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss // 1024, process.returncode


def score_one(cli: list[str], store: Path, runs: int, against: Path | None) -> list[dict[str, Any]]:
    """``conformance score`` of one quickstart record with a new output text, then again from the cache;
    with ``against`` (another checkout), the same runs of that code interleaved with these, one for one."""
    example = Path(__file__).resolve().parent.parent / "baselines" / "example" / "audited.jsonl"
    record = json.loads(example.read_text(encoding="utf-8").splitlines()[0])
    trees: list[tuple[str, dict[str, str] | None]] = [("", None)]
    if against is not None:
        trees.append((f" [{against}]", {**os.environ, "PYTHONPATH": str(against)}))
    rows = []
    for label, cached in (("score, one record, new text", False), ("score, one record, cached text", True)):
        figures: dict[str, dict[str, list[float]]] = {tree: {"wall": [], "rss": [], "code": []} for tree, _ in trees}
        for _ in range(runs):
            for tree, env in trees:
                stamp = f"startup-{time.time_ns()}"
                one, out = Path(store) / f"{stamp}.jsonl", Path(store) / f"{stamp}.out.jsonl"
                text = f"{record['output']} ({stamp})"
                argv = cli + ["score", str(one), "--out", str(out), "--no-progress"]
                if cached:  # put the text in the cache first (untimed), then score it under another id
                    one.write_text(json.dumps({**record, "record_id": stamp, "output": text}) + "\n", encoding="utf-8")
                    run_measured(argv, str(store), env)
                one.write_text(json.dumps({**record, "record_id": stamp + "-timed", "output": text}) + "\n",
                               encoding="utf-8")
                wall, peak, code = run_measured(argv, str(store), env)
                figures[tree]["wall"].append(wall)
                figures[tree]["rss"].append(peak)
                figures[tree]["code"].append(code)
                one.unlink(missing_ok=True)
                out.unlink(missing_ok=True)
        for tree, _ in trees:
            times, rss = figures[tree]["wall"], figures[tree]["rss"]
            rows.append({"command": label + tree, "median_s": statistics.median(times), "max_s": max(times),
                         "min_s": min(times), "runs": runs, "peak_rss_mb": [int(min(rss)), int(max(rss))],
                         "exit_codes": sorted({int(c) for c in figures[tree]["code"]}),
                         "target_s": SCORE_TARGET_S if not cached else None})
        print(f"timed {label}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default %(default)s)")
    parser.add_argument("--cli", type=Path, help="the conformance script to time (default: beside this Python)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder startup.json is written to")
    parser.add_argument("--score-store", type=Path, metavar="DIR",
                        help="also time a one-record `conformance score` in DIR, where the quickstart's baselines "
                             "are built and approved")
    parser.add_argument("--score-against", type=Path, metavar="CHECKOUT",
                        help="with --score-store: also time the one-record score of another checkout's code "
                             "(run with PYTHONPATH=CHECKOUT), interleaved run for run, e.g. a worktree of the last "
                             "release")
    parser.add_argument("--score-runs", type=int, default=5, help="runs of each one-record score (default %(default)s)")
    args = parser.parse_args()
    if args.score_store is not None and not (args.score_store / "conformance_store").is_dir():
        raise SystemExit(f"--score-store: {args.score_store} has no conformance_store/; "
                         "run the quickstart's build there")
    if args.runs < 1 or args.warmup < 0:
        raise SystemExit(f"--runs must be at least 1 and --warmup at least 0, got {args.runs} and {args.warmup}")
    cli = cli_command(args.cli)
    cases = [(label, cli + extra, target) for label, extra, target in CLI_CASES]
    cases.append(('python -c "import conformance"', [sys.executable, "-c", "import conformance"], False))
    load_before = os.getloadavg()
    probe_before = cpu_probe()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as empty:
        for label, argv, target in cases:
            row: dict[str, Any] = {"command": label, **time_runs(argv, empty, args.runs, args.warmup),
                                   **imports(argv, empty)}
            row["target_s"] = TARGET_S if target else None
            rows.append(row)
            print(f"timed {label}", file=sys.stderr, flush=True)
    scored = (score_one(cli, args.score_store, args.score_runs, args.score_against)
              if args.score_store is not None else [])
    load_after = os.getloadavg()
    probe_after = cpu_probe()
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0))
                    if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "load_average_before": load_before, "load_average_after": load_after,
                    "cpu_probe_s_before": probe_before, "cpu_probe_s_after": probe_after},
        "cli": cli[1] if len(cli) == 2 else "python -c 'from conformance.cli import main'",
        "conformance": subprocess.run([sys.executable, "-c", "import conformance; print(conformance.__file__, "
                                       "conformance.__version__)"], capture_output=True, text=True).stdout.strip(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commands": rows,
        "score_one_record": scored,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    m = result["machine"]
    print(f"{m['cpu_count']} cores; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"(1 min); {args.runs} runs each; CPU probe {probe_before:.2f} s before, {probe_after:.2f} s after")
    print(f"{'command':<48}{'median s':>9}{'max s':>8}{'exit':>6}  {'target':<8} heavy imports")
    for row in rows:
        verdict = "" if row["target_s"] is None else ("ok" if row["median_s"] <= TARGET_S else "SLOW")
        print(f"{row['command']:<48}{row['median_s']:>9.3f}{row['max_s']:>8.3f}{row['exit_code']:>6}  {verdict:<8} "
              + (", ".join(row["heavy"]) or "none"))
    for row in scored:
        verdict = "" if row["target_s"] is None else ("ok" if row["median_s"] <= SCORE_TARGET_S else "SLOW")
        codes = ",".join(map(str, row["exit_codes"]))
        print(f"{row['command']:<48}\n{'':<48}{row['median_s']:>9.3f}{row['max_s']:>8.3f}{codes:>6}  {verdict:<8} "
              f"peak RSS {row['peak_rss_mb'][0]}-{row['peak_rss_mb'][1]} MB")
    print(f"wrote {args.out / 'startup.json'}")


if __name__ == "__main__":
    main()
