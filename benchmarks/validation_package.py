"""Batch swaps and level through the package itself: ``build_baseline`` and ``score_record_set``.

``benchmarks/validation.py`` fits the combined scorer in its own ``Cell`` (mirroring ``build``) and
calls the batch tests directly. This script checks that the figures hold for what a user runs: for
each split it builds the baseline of one approved model with :func:`conformance.build.build_baseline`
(on 55 of MT-bench's 80 conversations, both turns, ``conversation_id`` set, 25 of them for calibration
as in ``validation.py``), then scores the other 25 conversations (50 outputs) of the swapped-in model,
labelled with the approved model's version, with :func:`conformance.scoring.score_record_set`, and
reads the group's batch verdict and the per-output verdicts. The approved model's own held-out
outputs give the null. The test conversations of split ``s`` are those of ``validation.py``'s part
``blockswaps`` (seed ``300 + s``), so the two are comparable batch by batch.

The embeddings come from the validation cache (``benchmarks/validation_cache.py``), through an
embedder that carries the packaged embedder's fingerprint; nothing else is replaced.

    /work/venv/bin/python benchmarks/validation_package.py --splits 100 --out /tmp/validation6
    /work/venv/bin/python benchmarks/validation_package.py --splits 100 --out /tmp/validation6 --pooled-embeddings
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from conformance.build import SmallCalibrationWarning, build_baseline
from conformance.embedder import EmbeddedTexts
from conformance.records import Record, RecordSet
from conformance.scoring import score_record_set

try:
    from validation import SWAPS, question, rate
    from validation_cache import EmbeddingCache, load_rows
except ImportError:  # run as a module from the repository root
    from benchmarks.validation import SWAPS, question, rate
    from benchmarks.validation_cache import EmbeddingCache, load_rows

N_QUESTIONS, N_TEST = 80, 25


class CachedEmbedder:
    """The packaged embedder's fingerprint, embeddings from the validation cache."""

    def __init__(self, cache: EmbeddingCache) -> None:
        self.cache = cache
        self.fingerprint = cache.embedder.fingerprint

    def embed(self, texts: Sequence[str], **_: object) -> EmbeddedTexts:
        return self.cache.embed(list(texts))


def _records(rows: list[dict], model_version: str) -> list[Record]:
    return [Record(row=i + 1, record_id=f"{r['model']}:{r['prompt_id']}", model_version=model_version,
                   input_class="mt-bench", input=r["input"], output=r["output"],
                   extras={"prompt_id": r["prompt_id"], "conversation_id": question(r["prompt_id"])})
            for i, r in enumerate(rows)]


def test_questions(questions: list[str], split: int) -> set[str]:
    """The test conversations of ``validation.py``'s ``Cell`` with seed ``300 + split`` (30 fit, 25 calibration)."""
    order = np.random.default_rng(300 + split).permutation(len(questions))
    return {questions[i] for i in order[N_QUESTIONS - N_TEST:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=30, help="splits per swap (one 50-output batch each)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--pooled-embeddings", action="store_true",
                        help="drop the baseline's calibration residuals, so that score runs MMD and energy on "
                             "pooled output embeddings, as for a baseline built before they were stored")
    parser.add_argument("--out", default="/tmp/validation_package")
    args = parser.parse_args()
    rows = load_rows()
    if not rows:
        raise SystemExit("the MT-bench outputs (../shared/data/mt_bench_answers.jsonl.gz) are not there")
    os.makedirs(args.out, exist_ok=True)
    embedder = CachedEmbedder(EmbeddingCache())
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_model[r["model"]].append(r)
    results: dict[str, object] = {"splits": args.splits, "alpha": args.alpha,
                                  "embeddings": "pooled" if args.pooled_embeddings else "residual"}
    for a, b in SWAPS + [(a, a) for a, _ in SWAPS]:
        label = f"{a} -> {b}" if a != b else f"{a} (null: own held-out outputs)"
        questions = sorted({question(r["prompt_id"]) for r in by_model[a]})
        assert len(questions) == N_QUESTIONS, (a, len(questions))
        batch_flags, batch_p, per_test, output_flags, seconds = [], [], defaultdict(list), [], []
        for split in range(args.splits):
            test_q = test_questions(questions, split)
            approved = _records([r for r in by_model[a] if question(r["prompt_id"]) not in test_q], a)
            batch = _records([r for r in by_model[b] if question(r["prompt_id"]) in test_q], a)
            t0 = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SmallCalibrationWarning)
                baseline = build_baseline(approved, alpha=args.alpha, calibration_fraction=N_TEST / 55,
                                          seed=split, embedder=embedder)  # type: ignore[arg-type]
            if args.pooled_embeddings:
                baseline = replace(baseline, calibration_residuals=None)
            result = score_record_set(RecordSet(path="<benchmark>", rows=tuple(batch)),
                                      lambda mv, ic, found=baseline: ("benchmark", found),
                                      embedder=embedder,  # type: ignore[arg-type]
                                      progress=False)
            seconds.append(time.time() - t0)
            (summary,) = result.summaries
            kind = "pooled" if args.pooled_embeddings else "residual"
            assert summary.tests is not None and str(summary.tests.get("embeddings", "")).startswith(kind)
            batch_flags.append(summary.verdict == "out_of_bounds")
            batch_p.append(summary.p_value)
            for name, p in summary.tests["p_values"].items():
                per_test[name].append(p <= args.alpha)
            output_flags += [v.verdict == "out_of_bounds" for v in result.verdicts]
        results[label] = {
            "batch": rate(batch_flags),
            "per_test_at_alpha": {name: float(np.mean(flags)) for name, flags in per_test.items()},
            "per_output": rate(output_flags),
            "n_calibration_conversations": baseline.n_calibration_prompts,
            "seconds_per_split": float(np.mean(seconds)),
            "batch_p_by_split": batch_p,
        }
        r = results[label]
        assert isinstance(r, dict)
        lo, hi = r["batch"]["ci95"]
        print(f"{label}: batch {r['batch']['rate']:.2f} ({lo:.2f}-{hi:.2f}, n={r['batch']['n']}); "
              f"per output {r['per_output']['rate']:.3f} (n={r['per_output']['n']}); "
              f"{r['seconds_per_split']:.1f} s per split", flush=True)
    name = "package_blockswaps_pooled.json" if args.pooled_embeddings else "package_blockswaps.json"
    with open(os.path.join(args.out, name), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
