"""Peers on the validation study's batches: alibi-detect MMDDrift / KSDrift and evidently embedding drift.

Measures how often each peer flags the same batches the package's batch tests judged: the model
swaps of ``benchmarks.validation_package --parts swaps --peer-batches`` and the approved models' own
held-out answers (the null), at level 0.05. Input: the ``peer_batches.npz`` that run writes (each
batch's pooled output embeddings, the pooled embeddings of the baseline's calibration outputs, the
package's batch p-value). The peers take every output as independent, as their APIs do. Output: a
JSON file in ``--out``. Cost: about 3 min for 10 batches per label on two cores (MMD permutations
dominate).

Runs in its OWN environment, never the project's (the peers are not project dependencies, and
alibi-detect pins numpy < 2); from the repository root::

    python3 -m venv peers-venv
    echo "torch==2.13.0" > peers-constraints.txt      # a local CPU build; never a CUDA wheel
    peers-venv/bin/pip install -c peers-constraints.txt torch==2.13.0 alibi-detect evidently
    peers-venv/bin/python -m benchmarks.validation_peers results/validation/peer_batches.npz \\
        --out results/validation --max-per-label 10
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np


def alibi_mmd(x: np.ndarray, ref: np.ndarray, seed: int) -> bool:
    import torch
    from alibi_detect.cd import MMDDrift

    torch.manual_seed(seed)
    cd = MMDDrift(ref, backend="pytorch", p_val=0.05, n_permutations=1000, device="cpu")
    return bool(cd.predict(x)["data"]["is_drift"])


def alibi_ks(x: np.ndarray, ref: np.ndarray, seed: int) -> bool:
    from alibi_detect.cd import KSDrift

    cd = KSDrift(ref, p_val=0.05)  # feature-wise KS, Bonferroni over the 384 dimensions (its default)
    return bool(cd.predict(x)["data"]["is_drift"])


def evidently_embeddings(x: np.ndarray, ref: np.ndarray, seed: int) -> bool:
    import pandas as pd
    from evidently.legacy.metrics import EmbeddingsDriftMetric
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    cols = [f"e{i}" for i in range(x.shape[1])]
    report = Report(metrics=[EmbeddingsDriftMetric("emb")])  # default method: classifier ROC AUC
    report.run(reference_data=pd.DataFrame(ref, columns=cols), current_data=pd.DataFrame(x, columns=cols),
               column_mapping=ColumnMapping(embeddings={"emb": cols}))
    return bool(report.as_dict()["metrics"][0]["result"]["drift_detected"])


PEERS = {"alibi-detect MMDDrift (pytorch, B=1000)": alibi_mmd,
         "alibi-detect KSDrift (per dimension, Bonferroni)": alibi_ks,
         "evidently EmbeddingsDriftMetric (default: classifier)": evidently_embeddings}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation_peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("batches", type=Path, help="peer_batches.npz written by validation_package --peer-batches")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder peers.json is written to")
    parser.add_argument("--max-per-label", type=int, default=30, help="batches per label (default %(default)s)")
    args = parser.parse_args()
    if not args.batches.is_file():
        raise SystemExit(f"{args.batches} does not exist: write it with "
                         "python -m benchmarks.validation_package --parts swaps --peer-batches --out DIR")
    warnings.filterwarnings("ignore")
    data = np.load(args.batches, allow_pickle=False)
    n = int(data["n"])
    by_label: dict[str, list[int]] = defaultdict(list)
    for i in range(n):
        by_label[str(data[f"label_{i}"])].append(i)
    result: dict[str, dict] = {}
    for name, detect in PEERS.items():
        per_label: dict[str, dict] = {}
        started = time.time()
        calls = 0
        try:
            for label, idx in by_label.items():
                flags = []
                for i in idx[: args.max_per_label]:
                    flags.append(detect(data[f"x_{i}"], data[f"ref_{i}"], seed=i))
                    calls += 1
                per_label[label] = {"rate": float(np.mean(flags)), "n": len(flags)}
            result[name] = {"by_label": per_label, "seconds_per_batch": (time.time() - started) / max(calls, 1)}
        except Exception as exc:  # a peer that fails is reported, not hidden
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(name, json.dumps(result[name])[:400], flush=True)
    # The package's p-values are stored as conformance_<scorer>_<batch>: one series per scorer that ran.
    own_scores = sorted(k[len("conformance_"):-2] for k in data.files
                        if k.startswith("conformance_") and k.endswith("_0"))
    for own in own_scores:
        result[f"conformance batch tests ({own})"] = {"by_label": {
            label: {"rate": float(np.mean([float(data[f"conformance_{own}_{i}"]) <= 0.05
                                           for i in idx[: args.max_per_label]])),
                    "n": len(idx[: args.max_per_label])} for label, idx in by_label.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "peers.json"
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
