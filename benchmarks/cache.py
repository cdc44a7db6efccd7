"""The embedding cache: the embedding step of a first and of a second pass over the same outputs.

Embeds ``--n`` real MT-bench answers (``python -m benchmarks.data`` says where they are looked for)
three times, in one process, through :class:`conformance.embedding_cache.CachedEmbedder`:

1. with a new, empty cache file in a temporary folder (the first ``score`` of a file: every text
   embedded, then written to the cache in one transaction);
2. again, through a new ``CachedEmbedder`` on the same file (a second ``score`` of the same file:
   every text read from the cache);
3. the bare embedder, without any cache (what the cache's writing costs on the first pass).

The model is loaded and its fingerprint computed before any timing (both happen once per process
whatever the cache does). Checks that the second pass is bit-identical to the first. The goal is a
second pass at least 20 times faster than the first. The machine's load average (before and after)
and its core count are recorded beside the times. Cost: about 20 s per 100 answers on two cores.
Prints a summary and writes ``cache.json`` to ``--out``.

    python -m benchmarks.cache --n 300 --out results/cache
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

from conformance.embedder import get_embedder
from conformance.embedding_cache import CACHE_FILE, CachedEmbedder

from benchmarks.data import mt_bench_rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="answers to embed (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder cache.json is written to")
    args = parser.parse_args()
    rows = [r for r in mt_bench_rows() if r["prompt_id"].endswith("turn1")]
    if not 1 <= args.n <= len(rows):
        raise SystemExit(f"--n must be in [1, {len(rows)}], got {args.n}")
    rng = np.random.default_rng(0)
    rng.shuffle(rows)  # type: ignore[arg-type]
    texts = [r["output"] for r in rows[: args.n]]
    embedder = get_embedder()
    _ = embedder.fingerprint  # loads the model and hashes its weights: once per process, cache or not
    embedder.embed(texts[:4], progress=False)  # warm up

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / CACHE_FILE
        first = CachedEmbedder(embedder, path=path)
        t0 = time.perf_counter()
        a = first.embed(texts, progress=False)
        t_first = time.perf_counter() - t0
        first.close()
        size = path.stat().st_size + sum(p.stat().st_size for p in Path(folder).glob(CACHE_FILE + "-*"))
        second = CachedEmbedder(embedder, path=path)
        t0 = time.perf_counter()
        b = second.embed(texts, progress=False)
        t_second = time.perf_counter() - t0
        second.close()
    t0 = time.perf_counter()
    bare = embedder.embed(texts, progress=False)
    t_bare = time.perf_counter() - t0
    load_after = os.getloadavg()

    identical = a.chunks.tobytes() == b.chunks.tobytes() == bare.chunks.tobytes() and np.array_equal(
        a.n_tokens, b.n_tokens) and np.array_equal(a.owner, b.owner)
    result = {
        "n_texts": len(texts), "n_distinct": len(set(texts)), "n_chunks": int(a.chunks.shape[0]),
        "first_s": t_first, "second_s": t_second, "bare_s": t_bare, "speedup": t_first / t_second,
        "first_hits_misses": [first.hits, first.misses], "second_hits_misses": [second.hits, second.misses],
        "cache_bytes": size, "bit_identical": identical,
        "machine": {"cores": os.cpu_count(), "load_average_before": load_before, "load_average_after": load_after,
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{len(texts)} answers, {result['n_chunks']} chunks: first pass {t_first:.2f} s (bare embedder "
          f"{t_bare:.2f} s), second pass {t_second:.3f} s from the cache: {result['speedup']:.0f}x faster; "
          f"bit-identical {identical}; cache {size / 1e6:.1f} MB")
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} cores; "
          f"written to {args.out / 'cache.json'}")


if __name__ == "__main__":
    main()
