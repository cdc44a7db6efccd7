"""Streaming ``score``: peak memory at 10k, 100k and 1M records, with a stub embedder.

What grows with the number of records is everything but the embedder: reading, judging, the batch
tests' reservoir, the spool, the ledger and the verdicts file. To measure that at a million records
in reasonable time, the embedder is a **stub** (named so in the results): each text becomes a fixed
pseudo-random unit vector seeded by its SHA-256, in microseconds, so the run measures the package's
own memory and time per record, not the model's.

Each size runs in its own process (``conformance.score`` as ``conformance score`` calls it: records
streamed from a JSON Lines file, ``keep_verdicts=False``, a new SQLite ledger, a ``.jsonl`` verdicts
file, the default chunk of 1,000 records) against two cells' baselines built with the same stub from
synthetic approved outputs, the default (combined) scorer. The process reports its own peak RSS
(``ru_maxrss``) and wall time. The goal: peak RSS at 1M within 1.5 times that at 10k.

    python -m benchmarks.stream --sizes 10000 100000 1000000 --out results/stream

Cost: about 2 ms per record on two cores (a million records: ~35 minutes), and ~450 bytes of disk per
record for the input file, as much again for the verdicts and ~2 KB for the ledger, in a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384
WORDS = ("the order ships within two days refunds take five business days to reach your card we are sorry "
         "for the delay please check the tracking link in your email the product supports bluetooth and "
         "usb charging our support team can help you further").split()


class StubEmbedder:
    """A stand-in for the model: a text's vector is seeded by its SHA-256 (not a real embedding)."""

    fingerprint = {"model": "stub (benchmarks.stream)", "source": "benchmarks", "dimension": DIM,
                   "chunking": {"window": 254}}

    def embed(self, texts: list[str], **_: Any) -> Any:
        from conformance.embedder import EmbeddedTexts

        out = np.empty((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            v = np.random.default_rng(seed).standard_normal(DIM)
            out[i] = v / np.linalg.norm(v)
        return EmbeddedTexts(chunks=out, owner=np.arange(len(texts)),
                             n_tokens=np.array([len(t.split()) for t in texts], dtype=np.int64))


def _text(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def _row(i: int, cell: int, rng: np.random.Generator, prefix: str) -> dict[str, Any]:
    return {"record_id": f"{prefix}{i}", "model_version": "support-bot", "input_class": f"class-{cell}",
            "input": f"question {i // 2 % 5000}: " + _text(rng, 8), "output": _text(rng, 40),
            "prompt_id": f"p{i // 2}"}


def _prepare(folder: Path, sizes: list[int]) -> None:
    from conformance.baseline.fit import build_baseline
    from conformance.records import Record

    rng = np.random.default_rng(0)
    for cell in (0, 1):
        records = [Record(row=i + 1, extras={"prompt_id": r["prompt_id"]},
                          **{k: r[k] for k in ("record_id", "model_version", "input_class", "input", "output")})
                   for i, r in enumerate(_row(i, cell, rng, "a") for i in range(600))]
        baseline = build_baseline(records, embedder=StubEmbedder())  # type: ignore[arg-type]
        baseline.save(folder / f"baseline-{cell}")
    for n in sizes:
        with open(folder / f"audited-{n}.jsonl", "w", encoding="utf-8") as handle:
            for i in range(n):
                handle.write(json.dumps(_row(i, i % 2, rng, "r")) + "\n")


def _child(folder: Path, n: int) -> None:
    import conformance
    from conformance.baseline.format import Baseline

    os.chdir(folder)
    baselines = [Baseline.load(folder / f"baseline-{cell}") for cell in (0, 1)]
    t0 = time.perf_counter()
    result = conformance.score(f"audited-{n}.jsonl", baselines=baselines, ledger=f"sqlite:///{folder}/ledger-{n}.db",
                               out=f"verdicts-{n}.jsonl", keep_verdicts=False, progress=False,
                               embedder=StubEmbedder())  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "seconds": seconds, "per_record_ms": 1000 * seconds / n, "peak_rss_mb": peak_kb / 1024,
                      "counts": result.counts, "ledger_added": result.ledger.added if result.ledger else None,
                      "reservoir": [s.tests["reservoir"] for s in result.summaries if s.tests]}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="numbers of records (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder stream.json is written to")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(Path(args.child[0]), int(args.child[1]))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _prepare(folder, args.sizes)
        for n in args.sizes:
            done = subprocess.run([sys.executable, "-m", "benchmarks.stream", "--out", str(args.out),
                                   "--child", str(folder), str(n)], capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{n:>9,} records: {runs[-1]['seconds']:8.1f} s ({runs[-1]['per_record_ms']:.2f} ms/record), "
                  f"peak RSS {runs[-1]['peak_rss_mb']:.0f} MB", flush=True)
    load_after = os.getloadavg()
    result = {
        "embedder": "stub (SHA-256-seeded vectors; not the model)", "runs": runs,
        "rss_ratio_largest_to_smallest": runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_before": load_before, "load_after": load_after},
        "command": "python -m benchmarks.stream --sizes " + " ".join(map(str, args.sizes)) + f" --out {args.out}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (args.out / "stream.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak RSS {runs[-1]['n']:,} / {runs[0]['n']:,}: {result['rss_ratio_largest_to_smallest']:.2f}x "
          f"(goal <= 1.5x); load {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
