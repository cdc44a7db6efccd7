"""Scoring throughput against its limit, the embedder's own throughput.

Runs, side by side in one process on the same texts:

1. ``SentenceTransformer.encode`` alone (the limit: what the model can do);
2. conformance's chunked, padding-stable embedding;
3. the whole per-record path of ``score`` minus the registry (embed, score, p-value, verdict
   objects), for the ``knn_cosine`` and the ``combined`` scorer.

Usage (texts from ../shared/data, the real MT-bench answers)::

    python benchmarks/throughput.py --n 600

Prints a table and a JSON line; the figures are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from conformance.baseline.fit import build_baseline, embed_inputs
from conformance.embedder import Embedder, get_embedder
from conformance.records import Record
from conformance.scoring import judge

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mt_bench_answers.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=600, help="audited outputs to time (default 600)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    rows = [json.loads(line) for line in gzip.open(args.data, "rt", encoding="utf-8")]
    rows = [r for r in rows if r["prompt_id"].endswith("turn1")]
    rng = np.random.default_rng(0)
    rng.shuffle(rows)  # type: ignore[arg-type]
    texts = [r["output"] for r in rows[: args.n]]
    embedder = get_embedder()
    model = embedder.model
    model.encode(texts[:8])  # warm up

    t0 = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True)
    t_limit = time.perf_counter() - t0

    t0 = time.perf_counter()
    embedded = embedder.embed(texts, progress=False)
    t_embed = time.perf_counter() - t0

    # The same, with every batch filled to 64 rows (conformance 0.2.0's batch size): what the smaller fixed batch saves.
    wide = Embedder(batch_size=64)
    wide.embed(texts[:8], progress=False)  # load
    t0 = time.perf_counter()
    wide.embed(texts, progress=False)
    t_embed_64 = time.perf_counter() - t0

    # Baselines of 200 other turn-1 outputs in one cell, then judge the n outputs against them:
    # the whole per-record path of `score` (embedding included), for each scorer.
    ref = [Record(row=i + 1, record_id=f"b{i}", model_version="m", input_class="c", input=r["input"],
                  output=r["output"], extras={"prompt_id": r["prompt_id"]})
           for i, r in enumerate(rows[args.n : args.n + 200])]
    audited = [Record(row=i + 1, record_id=f"a{i}", model_version="m", input_class="c", input=r["input"],
                      output=r["output"]) for i, r in enumerate(rows[: args.n])]
    t_score = {}
    for scorer in ("knn_cosine", "combined"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            baseline = build_baseline(ref, alpha=0.05, embedder=embedder, scorer=scorer)
        t0 = time.perf_counter()
        embedded = embedder.embed([r.output for r in audited], progress=False)
        inputs = embed_inputs(embedder, [r.input for r in audited]) if scorer == "combined" else None
        judge(baseline, "models:/bench/1", audited, embedded, scored_at="now", inputs=inputs)
        t_score[scorer] = time.perf_counter() - t0

    tokens = float(embedded.n_tokens.mean())
    chunks = int(embedded.chunks.shape[0])
    result = {
        "n": args.n, "mean_word_pieces": round(tokens, 1), "chunks": chunks,
        "encode_limit_per_s": round(args.n / t_limit, 1),
        "conformance_embed_per_s": round(args.n / t_embed, 1),
        "conformance_embed_64_rows_per_s": round(args.n / t_embed_64, 1), "batch_size": embedder.batch_size,
        "score_path_knn_per_s": round(args.n / t_score["knn_cosine"], 1),
        "score_path_combined_per_s": round(args.n / t_score["combined"], 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    print(f"{'path':<40}{'outputs/s':>12}")
    print(f"{'SentenceTransformer.encode (limit)':<40}{result['encode_limit_per_s']:>12}")
    print(f"{'conformance embed (chunked, stable)':<40}{result['conformance_embed_per_s']:>12}")
    print(f"{'  the same, batches filled to 64 rows':<40}{result['conformance_embed_64_rows_per_s']:>12}")
    print(f"{'score path, knn_cosine':<40}{result['score_path_knn_per_s']:>12}")
    print(f"{'score path, combined (inputs embedded too)':<40}{result['score_path_combined_per_s']:>12}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
