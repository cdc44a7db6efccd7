"""Peers on the validation study's batches: alibi-detect MMDDrift / KSDrift and evidently embedding drift.

Runs in its OWN environment, never the project's (the peers are not project
dependencies, and alibi-detect pins numpy < 2)::

    python3 -m venv /tmp/peers-venv
    echo "torch==2.13.0" > /tmp/peers-constraints.txt      # a local CPU build; never a CUDA wheel
    /tmp/peers-venv/bin/pip install -c /tmp/peers-constraints.txt torch==2.13.0 alibi-detect evidently
    /tmp/peers-venv/bin/python benchmarks/validation_peers.py /tmp/validation/peer_batches.npz \
        --out /tmp/validation/peers.json

The input is written by ``benchmarks/validation.py --parts swaps``: for every
batch of 25 (one output per MT-bench question) of the model swaps and of the
approved models' own held-out outputs (null), the batch's pooled embeddings,
the reference embeddings the project's batch tests used (the calibration part,
one output per question) and the project's own Bonferroni p-values. Every
detector sees exactly those two samples, at level 0.05.

``--parts blockswaps`` writes ``peer_blockbatches.npz`` in the same form: batches of
50 outputs (both turns of 25 conversations) against every calibration output (50),
with the project's p-values from permutations of whole conversations. The peers
take every output as independent, as their APIs do.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import defaultdict

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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("batches")
    parser.add_argument("--out", default="/tmp/validation/peers.json")
    parser.add_argument("--max-per-label", type=int, default=30)
    args = parser.parse_args()
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
    for own in ("knn", "combined"):
        result[f"conformance batch tests ({own})"] = {"by_label": {
            label: {"rate": float(np.mean([float(data[f"conformance_{own}_{i}"]) <= 0.05
                                           for i in idx[: args.max_per_label]])),
                    "n": len(idx[: args.max_per_label])} for label, idx in by_label.items()}}
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
