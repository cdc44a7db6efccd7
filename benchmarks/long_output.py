"""One long output: the time and memory of embedding a text of ``--chars`` characters (default 1,000,000, the
default of ``score --max-output-chars``), against the same model's throughput on ordinary answers.

The embedder cuts a long text into windows of its maximum sequence length and averages their embeddings
(:mod:`conformance.embedder_core`); this measures that the memory stays bounded (peak RSS of this process,
before and after) and how long the longest text ``score`` accepts by default takes. The text is words drawn
with a fixed seed. Records the machine's load average before and after. Prints one line per size and writes
``long_output.json`` to ``--out``.

    python -m benchmarks.long_output --out results/long_output
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import time
from typing import Any
from pathlib import Path

WORDS = ("the parcel left our warehouse on monday and should arrive within three working days if the "
         "carrier keeps to its usual schedule please keep your reference number ready").split()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("results/long_output"))
    args = parser.parse_args(argv)

    from conformance.embedder import get_embedder

    load_before = os.getloadavg()[0]
    embedder = get_embedder()
    _ = embedder.model
    loaded = peak_mb()
    rng = random.Random(0)
    rows = []
    for n in args.chars:
        text = " ".join(rng.choice(WORDS) for _ in range(n // 4 + 1))[:n]
        started = time.perf_counter()
        embedder.embed([text], progress=False)
        rows.append({"chars": n, "seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_mb())})
        print(f"{n:>12,} characters: {rows[-1]['seconds']:>7.1f} s, peak RSS {rows[-1]['peak_rss_mb']} MB "
              f"(model loaded: {loaded:.0f} MB)", flush=True)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": load_before,
                    "load_after": os.getloadavg()[0]},
        "model_loaded_rss_mb": round(loaded), "runs": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "long_output.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"load average {load_before:.2f} before, {result['machine']['load_after']:.2f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
