"""The embedder's backends side by side: torch, ONNX Runtime fp32 and ONNX Runtime int8.

Two parts, in one process, one backend at a time (never two heavy things at once):

1. **Throughput and closeness.** ``--n`` real MT-bench turn-1 answers (``python -m benchmarks.data``
   says where they are looked for) embedded by each bare embedder (no cache), ``--rounds`` times with
   the backends taking turns, so that a change in the machine's load falls on all of them: texts/s
   and chunks/s per round, and each chunk's cosine to torch's embedding of it.
2. **Verdicts, the decision criterion.** The model swaps of ``benchmarks.study.SWAPS`` split by
   MT-bench question as in ``benchmarks.validation_package`` (part ``swaps``: seed ``300 + split``,
   the approved model's answers to 55 questions approved, its answers to the other 25 and the other
   model's answers to them audited). Each backend builds its own baseline from the same approved
   records with ``conformance.build(records, register=False, ...)`` and scores the same audited
   records with ``conformance.score(records, baselines=[...])``. Reported per backend: the share of
   audited outputs whose verdict equals torch's, the false-alarm rate on the approved model's held-out
   answers against alpha (each baseline's rate, the interval from their spread, and the pooled rate
   with its Clopper-Pearson interval), and the flag rate on the other model's answers. Embeddings go
   through the package's embedding cache, ``<out>/embeddings.db`` (one row per text and backend), so a
   second run costs only the builds and scores.

The ONNX files are exported (and quantised) on first use into ``./conformance_store/onnx`` or
``$CONFORMANCE_ONNX_DIR``; the seconds that took are recorded. The machine's load average
(``uptime``) before and after each part and its core count are recorded beside the figures.
Cost on two cores with other work running: about 3 min for part 1 at ``--n 150 --rounds 2``; part 2
about 15 min the first time at ``--splits 12`` (every text embedded by each backend), 4 min once
``<out>/embeddings.db`` holds them. Prints a summary and writes ``backends.json`` to ``--out`` (a part
run alone keeps the other part's figures in it).

    python -m benchmarks.backends --parts throughput --n 150 --rounds 2 --out results/backends
    python -m benchmarks.backends --parts verdicts --splits 12 --out results/backends
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import conformance
from conformance.defaults import EMBEDDER_BACKENDS
from conformance.embedder import Embedder, fingerprint_digest, get_embedder
from conformance.embedding_cache import CachedEmbedder

from benchmarks.data import mt_bench_rows, question
from benchmarks.study import SWAPS, rate

N_QUESTIONS, N_TEST = 80, 25


def uptime() -> str:
    """The machine's ``uptime`` line (load averages over 1, 5 and 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def ready(backend: str) -> tuple[Embedder, float]:
    """The process-wide embedder of ``backend``, loaded and fingerprinted (exporting its ONNX file if absent),
    and the seconds that took."""
    t0 = time.perf_counter()
    embedder = get_embedder(backend)
    _ = embedder.fingerprint
    embedder.embed(["warm up the kernels", "and a second text"], progress=False)
    return embedder, time.perf_counter() - t0


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine, in float64 (the float32 rows' norms differ from 1 in the seventh digit)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def part_throughput(args: argparse.Namespace, embedders: dict[str, Embedder]) -> dict[str, Any]:
    rows = [r for r in mt_bench_rows() if r["prompt_id"].endswith("turn1")]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))[: args.n]
    texts = [rows[i]["output"] for i in order]
    out: dict[str, Any] = {"n_texts": len(texts), "load_before": uptime(), "rounds": defaultdict(list)}
    chunks: dict[str, np.ndarray] = {}
    for round_ in range(args.rounds):
        for backend in (args.backends if round_ % 2 == 0 else args.backends[::-1]):
            t0 = time.perf_counter()
            embedded = embedders[backend].embed(texts, progress=False)
            seconds = time.perf_counter() - t0
            chunks[backend] = embedded.chunks
            out["rounds"][backend].append({"seconds": seconds, "texts_per_s": len(texts) / seconds,
                                           "chunks_per_s": embedded.chunks.shape[0] / seconds})
            print(f"round {round_ + 1} {backend}: {len(texts) / seconds:.1f} texts/s, "
                  f"{embedded.chunks.shape[0] / seconds:.1f} chunks/s ({seconds:.1f} s)", flush=True)
    out["n_chunks"] = int(next(iter(chunks.values())).shape[0])
    out["load_after"] = uptime()
    if "torch" in chunks:
        out["cosine_to_torch"] = {}
        for backend, c in chunks.items():
            cos = cosine(c, chunks["torch"])
            out["cosine_to_torch"][backend] = {"min": float(cos.min()), "p01": float(np.quantile(cos, 0.01)),
                                               "median": float(np.median(cos)), "mean": float(cos.mean())}
    if "onnx" in chunks and "onnx-int8" in chunks:
        cos = cosine(chunks["onnx-int8"], chunks["onnx"])
        out["cosine_int8_to_onnx_fp32"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    return out


def _record(r: dict, kind: str, model_version: str) -> dict[str, str]:
    return {"record_id": f"{kind}:{r['model']}:{r['prompt_id']}", "model_version": model_version,
            "input_class": "mt-bench", "prompt_id": r["prompt_id"], "conversation_id": question(r["prompt_id"]),
            "input": r["input"], "output": r["output"]}


def part_verdicts(args: argparse.Namespace, embedders: dict[str, Embedder]) -> dict[str, Any]:
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in mt_bench_rows():
        by_model[r["model"]].append(r)
    cached = {b: CachedEmbedder(embedders[b], path=Path(args.out) / "embeddings.db") for b in args.backends}
    verdicts: dict[str, dict[str, str]] = {b: {} for b in args.backends}  # backend -> key -> verdict
    p_values: dict[str, dict[str, float | None]] = {b: {} for b in args.backends}
    per_baseline_null: dict[str, list[float]] = defaultdict(list)
    per_split_null: dict[str, list[list[bool]]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    load_before = uptime()
    for split in range(args.splits):
        for backend in args.backends:
            per_split_null[backend].append([])
        for a, b in SWAPS:
            questions = sorted({question(r["prompt_id"]) for r in by_model[a]})
            order = np.random.default_rng(300 + split).permutation(len(questions))
            held = {questions[i] for i in order[N_QUESTIONS - N_TEST:]}
            approved = [_record(r, "approved", a) for r in by_model[a] if question(r["prompt_id"]) not in held]
            audited = ([_record(r, "null", a) for r in by_model[a] if question(r["prompt_id"]) in held]
                       + [_record(r, "swap", a) for r in by_model[b] if question(r["prompt_id"]) in held])
            for backend in args.backends:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the small-calibration warning: the design is fixed
                    built = conformance.build(approved, register=False, alpha=args.alpha, seed=split,
                                              embedder=cached[backend])
                    result = conformance.score(audited, baselines=built, embedder=cached[backend], ledger=False)
                seconds[backend] += time.perf_counter() - t0
                nulls = []
                for v in result.verdicts:
                    verdicts[backend][f"{split}|{a}|{v.record_id}"] = v.verdict
                    p_values[backend][f"{split}|{a}|{v.record_id}"] = v.p_value
                    if str(v.record_id).startswith("null:"):
                        nulls.append(v.verdict == "out_of_bounds")
                per_baseline_null[backend].append(float(np.mean(nulls)))
                per_split_null[backend][-1].extend(nulls)
        print(f"split {split + 1}/{args.splits}: " + ", ".join(f"{b} {seconds[b]:.0f} s" for b in args.backends),
              flush=True)
    out: dict[str, Any] = {"splits": args.splits, "alpha": args.alpha, "swaps": [list(s) for s in SWAPS],
                           "load_before": load_before, "load_after": uptime(), "backends": {}}
    reference = verdicts.get("torch")
    for backend in args.backends:
        got = verdicts[backend]
        flags = {kind: [v == "out_of_bounds" for k, v in got.items() if k.split("|")[2].startswith(kind + ":")]
                 for kind in ("null", "swap")}
        rates = per_baseline_null[backend]
        level = float(np.mean(rates))
        half = 1.96 * float(np.std(rates, ddof=1)) / np.sqrt(len(rates)) if len(rates) > 1 else 0.0
        # The five swaps of a split hold out the same 25 questions, so the splits are the independent units.
        split_rates = [float(np.mean(f)) for f in per_split_null[backend]]
        split_half = (1.96 * float(np.std(split_rates, ddof=1)) / np.sqrt(len(split_rates))
                      if len(split_rates) > 1 else 0.0)
        entry: dict[str, Any] = {
            "fingerprint": fingerprint_digest(cached[backend].fingerprint),
            "seconds_build_and_score": seconds[backend],
            "false_alarm_rate": {"by_baseline": {"mean": level, "ci95": [level - half, level + half],
                                                 "n_baselines": len(rates)},
                                 "by_split": {"mean": float(np.mean(split_rates)),
                                              "ci95": [float(np.mean(split_rates)) - split_half,
                                                       float(np.mean(split_rates)) + split_half],
                                              "rates": split_rates},
                                 "pooled": rate(flags["null"])},
            "swap_flag_rate": rate(flags["swap"]),
        }
        if reference is not None:
            same = [got[k] == reference[k] for k in reference]
            differ = [k for k in reference if got[k] != reference[k]]
            entry["agreement_with_torch"] = {
                **rate(same),
                "null": rate([got[k] == reference[k] for k in reference if k.split("|")[2].startswith("null:")]),
                "swap": rate([got[k] == reference[k] for k in reference if k.split("|")[2].startswith("swap:")]),
                "disagreements": dict(Counter(f"torch {reference[k]} -> {got[k]}" for k in differ)),
                # How near alpha the differing verdicts were: torch's p-value and this backend's, per record.
                "differing_p_values": [[p_values["torch"][k], p_values[backend][k]] for k in differ],
            }
        out["backends"][backend] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=EMBEDDER_BACKENDS, default=list(EMBEDDER_BACKENDS),
                        help="the backends to compare (torch first: agreement and cosine are to torch)")
    parser.add_argument("--n", type=int, default=150, help="part 1: answers embedded per round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="part 1: rounds per backend (default %(default)s)")
    parser.add_argument("--splits", type=int, default=12,
                        help="part 2: splits per model swap (100 audited outputs each; default %(default)s)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--parts", nargs="+", choices=("throughput", "verdicts"), default=["throughput", "verdicts"])
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder backends.json is written to")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "conformance": conformance.__version__, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_at_start": uptime(), "backends": args.backends,
    }
    try:
        import onnxruntime

        result["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    embedders, setup = {}, {}
    for backend in args.backends:
        embedders[backend], setup[backend] = ready(backend)
        print(f"{backend}: ready in {setup[backend]:.1f} s (fingerprint "
              f"{fingerprint_digest(embedders[backend].fingerprint)})", flush=True)
    result["setup_seconds"] = setup
    result["fingerprints"] = {b: e.fingerprint for b, e in embedders.items()}
    if "throughput" in args.parts:
        result["throughput"] = part_throughput(args, embedders)
    if "verdicts" in args.parts:
        result["verdicts"] = part_verdicts(args, embedders)
        for backend, entry in result["verdicts"]["backends"].items():
            fa, agree = entry["false_alarm_rate"], entry.get("agreement_with_torch")
            print(f"{backend}: false alarms {fa['by_split']['mean']:.4f} (95 % CI "
                  f"{fa['by_split']['ci95'][0]:.4f}-{fa['by_split']['ci95'][1]:.4f} by split, "
                  f"{fa['by_baseline']['ci95'][0]:.4f}-{fa['by_baseline']['ci95'][1]:.4f} by baseline; "
                  f"pooled {fa['pooled']['k']}/{fa['pooled']['n']}); "
                  f"swap flagged {entry['swap_flag_rate']['rate']:.3f}"
                  + ("" if agree is None else f"; verdicts equal to torch's {agree['rate']:.4f} "
                     f"({agree['ci95'][0]:.4f}-{agree['ci95'][1]:.4f}, {agree['n'] - agree['k']} of {agree['n']} "
                     f"differ: {agree['disagreements']})"), flush=True)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["load_at_end"] = uptime()
    path = args.out / "backends.json"
    if path.is_file():  # a part run alone keeps the other part's figures of an earlier run (each has its loads)
        earlier = json.loads(path.read_text(encoding="utf-8"))
        for part in ("throughput", "verdicts"):
            if part not in result and part in earlier:
                result[part] = earlier[part]
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
