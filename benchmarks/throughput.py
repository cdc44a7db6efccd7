"""Scoring throughput against its limit, the embedder's own throughput.

Runs, side by side in one process on the same ``--n`` real MT-bench turn-1 answers
(``python -m benchmarks.data`` says where they are looked for):

1. ``SentenceTransformer.encode`` alone (the limit: what the model can do);
2. the package's chunked, padding-stable embedding, and the same with every batch filled to 64 rows;
3. the whole per-record path of ``score`` minus the registry (embed, score, p-value, verdict
   objects) against a baseline of ``--reference`` (200) other answers, for the ``knn_cosine`` and
   ``combined`` scorers.

Cost: every path embeds the ``--n`` answers once and each baseline its ``--reference`` answers,
about 4 minutes at the defaults on two idle cores; ``--n 20 --reference 60`` proves it runs. Prints
a table and writes ``throughput.json`` to ``--out``; the recorded figures are in benchmarks/README.md.

    python -m benchmarks.throughput --n 400 --out results/throughput
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from conformance.baseline.fit import build_baseline
from conformance.embedder import Embedder, embed_inputs, get_embedder
from conformance.records import Record
from conformance.scoring import judge

from benchmarks.data import mt_bench_rows

def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="audited outputs to time (default %(default)s)")
    parser.add_argument("--reference", type=int, default=200, metavar="N",
                        help="approved answers the baseline is built from (default %(default)s; at least 60)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder throughput.json is written to")
    args = parser.parse_args()
    rows = [r for r in mt_bench_rows() if r["prompt_id"].endswith("turn1")]
    if args.reference < 60 or args.n < 1 or args.n + args.reference > len(rows):
        raise SystemExit(f"--n and --reference must be at least 1 and 60 and sum to at most {len(rows)}, "
                         f"got {args.n} and {args.reference}")
    rng = np.random.default_rng(0)
    rng.shuffle(rows)  # type: ignore[arg-type]
    texts = [r["output"] for r in rows[: args.n]]
    embedder = get_embedder()
    from sentence_transformers import SentenceTransformer

    # The limit is sentence-transformers itself (conformance runs the same weights through transformers).
    model = SentenceTransformer(str(embedder._resolve_path()[0]), device="cpu")
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

    # Baselines of --reference other turn-1 outputs in one cell, then judge the n outputs against them:
    # the whole per-record path of `score` (embedding included), for each scorer.
    ref = [Record(row=i + 1, record_id=f"b{i}", model_version="m", input_class="c", input=r["input"],
                  output=r["output"], extras={"prompt_id": r["prompt_id"]})
           for i, r in enumerate(rows[args.n : args.n + args.reference])]
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
        "n": args.n, "reference": args.reference, "mean_word_pieces": round(tokens, 1), "chunks": chunks,
        "encode_limit_per_s": round(args.n / t_limit, 1),
        "conformance_embed_per_s": round(args.n / t_embed, 1),
        "conformance_embed_64_rows_per_s": round(args.n / t_embed_64, 1), "batch_size": embedder.batch_size,
        "score_path_knn_per_s": round(args.n / t_score["knn_cosine"], 1),
        "score_path_combined_per_s": round(args.n / t_score["combined"], 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": os.getloadavg(),
    }
    print(f"{'path':<40}{'outputs/s':>12}")
    print(f"{'SentenceTransformer.encode (limit)':<40}{result['encode_limit_per_s']:>12}")
    print(f"{'conformance embed (chunked, stable)':<40}{result['conformance_embed_per_s']:>12}")
    print(f"{'  the same, batches filled to 64 rows':<40}{result['conformance_embed_64_rows_per_s']:>12}")
    print(f"{'score path, knn_cosine':<40}{result['score_path_knn_per_s']:>12}")
    print(f"{'score path, combined (inputs embedded too)':<40}{result['score_path_combined_per_s']:>12}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {args.out / 'throughput.json'}")


if __name__ == "__main__":
    main()
