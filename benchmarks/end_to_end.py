"""End-to-end ``score`` against the bare embedder, and a second ``score`` of the same file.

On the same ``--n`` real MT-bench answers (turns 1 and 2 of several models, as one cell; ``python -m
benchmarks.data`` says where they are looked for), side by side in one process:

1. **the bare embedder**: the package's embedding of exactly the texts ``score`` embeds, every output and
   every distinct input, with no cache (the limit of what ``score`` can do with this backend);
2. **a first ``score``**: ``conformance.score`` as the command line calls it (records streamed from a
   JSON Lines file, the ledger, the verdicts file, the embedding cache empty at the start);
3. **a second ``score``** of the same file, in a new ledger: the embeddings come from the cache.

The baseline (the default ``combined`` scorer) is built beforehand from ``--reference`` other answers of
the same prompts. The model is loaded before any timing. Goals (issue 17): the first ``score`` at
least 0.9 times the bare embedder's throughput, the second at least 20 times faster than the first.
Prints a table and writes ``end_to_end.json`` to ``--out``, with the machine's load before and after.

    python -m benchmarks.end_to_end --n 400 --out results/end_to_end

Cost: about three embeddings of the ``--n`` answers plus the baseline's, ~6 minutes at ``--n 400`` on two
idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.data import mt_bench_rows, question


def _without_time(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "scored_at"} for line in path.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="audited answers to score (default %(default)s)")
    parser.add_argument("--reference", type=int, default=320, metavar="N",
                        help="approved answers the baseline is built from (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder end_to_end.json is written to")
    args = parser.parse_args()
    import conformance
    from conformance.embedder import embed_inputs, get_embedder

    rows = mt_bench_rows()
    models = sorted({r["model"] for r in rows})
    rng = np.random.default_rng(0)
    approved_models = set(rng.choice(models, size=4, replace=False).tolist())
    approved = [r for r in rows if r["model"] in approved_models]
    audited = [r for r in rows if r["model"] not in approved_models]
    rng.shuffle(approved)  # type: ignore[arg-type]
    rng.shuffle(audited)  # type: ignore[arg-type]
    if args.reference > len(approved) or args.n > len(audited):
        raise SystemExit(f"--reference must be at most {len(approved)} and --n at most {len(audited)}")

    def as_cell(r: dict, i: int, prefix: str) -> dict:
        # one cell; the two turns of one model's conversation are one prompt
        return {"record_id": f"{prefix}{i}", "model_version": "mt-bench", "input_class": "all", "input": r["input"],
                "output": r["output"], "prompt_id": r["prompt_id"],
                "conversation_id": f"{r['model']}:{question(r['prompt_id'])}"}

    approved = [as_cell(r, i, "a") for i, r in enumerate(approved[: args.reference])]
    audited = [as_cell(r, i, "r") for i, r in enumerate(audited[: args.n])]
    embedder = get_embedder()
    _ = embedder.fingerprint
    embedder.embed(["warm up"] * 4, progress=False)
    (built,) = conformance.build(approved, register=False, embedder=embedder, progress=False)

    load_before = os.getloadavg()
    outputs = [r["output"] for r in audited]
    t0 = time.perf_counter()
    embedder.embed(outputs, progress=False)
    embed_inputs(embedder, [r["input"] for r in audited])
    t_bare = time.perf_counter() - t0

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "audited.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in audited))
        cwd = os.getcwd()
        os.chdir(folder)  # the embedding cache: ./conformance_store/embeddings.db, empty
        try:
            for run in (1, 2):
                t0 = time.perf_counter()
                result = conformance.score(path, baselines=[built], ledger=f"sqlite:///{folder}/ledger{run}.db",
                                           out=folder / f"verdicts{run}.jsonl", keep_verdicts=False, cache=True,
                                           progress=False, embedder=embedder)
                times.append(time.perf_counter() - t0)
            same = _without_time(folder / "verdicts1.jsonl") == _without_time(folder / "verdicts2.jsonl")
        finally:
            os.chdir(cwd)
    load_after = os.getloadavg()
    n = len(audited)
    out = {
        "n": n, "n_distinct_inputs": len({r["input"] for r in audited}), "reference": len(approved),
        "scorer": built.baseline.scorer["name"], "counts": result.counts,
        "bare_embedder_s": t_bare, "first_score_s": times[0], "second_score_s": times[1],
        "bare_per_s": n / t_bare, "first_per_s": n / times[0], "second_per_s": n / times[1],
        "first_over_bare": t_bare / times[0], "second_speedup": times[0] / times[1],
        "verdict_files_identical": same,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_before": load_before, "load_after": load_after},
        "command": f"python -m benchmarks.end_to_end --n {args.n} --reference {args.reference} --out {args.out}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "end_to_end.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'path':<44} {'s':>8} {'outputs/s':>10}")
    print(f"{'bare embedder (outputs + distinct inputs)':<44} {t_bare:8.1f} {n / t_bare:10.2f}")
    print(f"{'first score (empty cache)':<44} {times[0]:8.1f} {n / times[0]:10.2f}")
    print(f"{'second score (cache warm)':<44} {times[1]:8.1f} {n / times[1]:10.2f}")
    print(f"first score / bare: {t_bare / times[0]:.2f} (goal >= 0.9); second speedup {times[0] / times[1]:.1f}x "
          f"(goal >= 20x); identical verdict files (but scored_at): {same}; "
          f"load {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
