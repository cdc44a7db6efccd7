"""Which approved outputs set the bar: the component (or facet) behind the highest calibration scores.

With 25 calibration conversations an output must score above (nearly) every calibration output to be
flagged at alpha 0.05, so the highest-scoring approved outputs of a cell decide what can be detected.
For the one-model cells of ``validation.py --parts power`` (3 models x 8 splits), this counts which
component made each cell's three highest calibration scores, and prints the median z of the changes'
components beside the approved outputs' (docs/validation.md, section 3d):

    /work/venv/bin/python benchmarks/validation_bar.py --legacy-rule   # the fourth run's rule: components
    /work/venv/bin/python benchmarks/validation_bar.py                 # as shipped: facets
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from conformance.stats.combined import EMBEDDING_COMPONENTS

try:
    import validation as V
except ImportError:  # run as a module from the repository root
    from benchmarks import validation as V


def _winning_rows(cell: V.Cell, rows: list[dict], facets: bool) -> tuple[np.ndarray, list[str]]:
    """Per row, the values (facets or components) of the chunk that set its score, and their names."""
    chunks, owner = cell.texts.chunks([r["output"] for r in rows])
    _, x, d = cell._features(rows)
    scorer = cell.combined
    z = scorer.standardised_components(chunks, x[owner], d[owner])
    names = list(EMBEDDING_COMPONENTS) + list(cell.texts.names)
    if facets:
        names, z = scorer.facet_names(z.shape[1]), scorer.facet_values(z)
    s = scorer.score_samples(chunks, x[owner], d[owner])
    out, best = np.zeros((len(rows), z.shape[1])), np.full(len(rows), -np.inf)
    for i, o in enumerate(owner.tolist()):
        if s[i] > best[o]:
            best[o], out[o] = s[i], z[i]
    return out, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--legacy-rule", action="store_true", help="the fourth run's rule (every component)")
    parser.add_argument("--splits", type=int, default=8)
    args = parser.parse_args()
    rows = V.load_rows()
    if not rows:
        print("shared data absent; nothing to measure")
        return
    V.Cell.legacy_rule = args.legacy_rule
    texts = V.Texts(V.EmbeddingCache())
    texts.warm([r["output"] for r in rows] + [r["input"] for r in rows])
    by_model, _, by_model_class = V._grouped(rows)
    rng = np.random.default_rng(50)
    altered = {V.KEYS["row"](r): V.perturb(r, "refusal", by_model_class, rng) for r in rows
               if r["model"] in V.POWER_MODELS}
    texts.warm([r["output"] for r in altered.values()])
    top: Counter[str] = Counter()
    values: dict[str, list[np.ndarray]] = {"approved (test part)": [], "refusal": [], "other_class": []}
    names: list[str] = []
    for model in V.POWER_MODELS:
        for split in range(args.splits):
            cell = V.Cell(by_model[model], texts, seed=600 + split, n_fit_q=30, n_cal_q=25)
            cal, names = _winning_rows(cell, cell.cal, not args.legacy_rule)
            score = np.log(np.exp(np.arcsinh(cal)).sum(axis=1))
            for i in np.argsort(-score)[:3]:
                top[names[int(np.argmax(cal[i]))]] += 1
            values["approved (test part)"].append(_winning_rows(cell, cell.test, not args.legacy_rule)[0])
            values["refusal"].append(_winning_rows(cell, [altered[V.KEYS["row"](r)] for r in cell.test],
                                                   not args.legacy_rule)[0])
            values["other_class"].append(_winning_rows(cell, V.other_class_answers(cell, rng), not args.legacy_rule)[0])
    print("largest component of the 3 highest calibration scores per cell:", dict(top.most_common()))
    for kind, v in values.items():
        med = np.median(np.vstack(v), axis=0)
        print(f"median z, {kind}:", {n: round(float(m), 1) for n, m in zip(names, med)})


if __name__ == "__main__":
    main()
