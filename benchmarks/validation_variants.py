"""Variants of the combined score that were measured and not adopted (docs/validation.md, section 3c).

Power at alpha 0.05 in one-model cells (the cells of ``validation.py --parts power``: 3 models x 8
question splits) and, for the language switch, in gpt-4 cells (24 splits), for other ways to
combine the standardised components than the shipped facets, and for other fit /
calibration allocations. The variants replace ``CombinedScorer.score_samples`` in this process
only; nothing here changes the package.

    /work/venv/bin/python benchmarks/validation_variants.py --fit-q 30 --cal-q 25 --legacy-floor
    /work/venv/bin/python benchmarks/validation_variants.py --fit-q 30 --cal-q 25 \\
        --language-files /work/external/mt_bench_DE_gpt-4_reference_turn1.jsonl

Rules: ``facets`` (shipped since the fifth run: log-sum-exp of asinh of the facet values),
``facets_T0.5``, ``facets_T0.25``, ``facets_T0.1`` (the same with a sharper maximum,
``T log(sum(exp(asinh(f) / T)))``), ``smax`` (the fourth run's rule: log-sum-exp of asinh z over every
component; relevance relative to the nearest inputs unless ``--legacy-rule``), ``sum_asinh``
(sum of asinh of the positive parts), ``sum_lin`` (sum of positive parts), ``l2`` (Euclidean norm of positive parts),
``fisher`` (sum over components of -log of a rank tail probability among the fit part's
cross-fitted values, beyond the fit range continued by exp(-asinh(excess / scale))) and
``fisher_emb`` (that sum over the four embedding components, plus the smooth maximum of the
descriptors).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

import conformance.stats.combined as C
from conformance.stats.conformal import prompt_weighted_p_values

try:
    import validation as V
except ImportError:  # run as a module from the repository root
    from benchmarks import validation as V

KINDS = ("refusal", "other_class", "inject_end_6", "inject_start_3", "truncate_50")

_fit, _robust = C.CombinedScorer.fit, C.CombinedScorer._robust


def _fit_keeping_values(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    """``CombinedScorer.fit`` that also keeps the fit part's cross-fitted deviations (for rank tails)."""
    seen: dict[bool, np.ndarray] = {}

    def robust(values, *, two_sided=False, floor=None):  # type: ignore[no-untyped-def]
        seen[two_sided] = values
        return _robust(values, two_sided=two_sided, floor=floor)

    C.CombinedScorer._robust = staticmethod(robust)  # type: ignore[method-assign]
    try:
        out = _fit(self, *args, **kwargs)
    finally:
        C.CombinedScorer._robust = staticmethod(_robust)  # type: ignore[method-assign]
    dev = np.hstack([seen[False] - self.location_, np.abs(seen[True] - self.descriptor_location_)])
    self.fit_dev_ = np.sort(dev, axis=0)
    self.all_scale_ = np.r_[self.scale_, self.descriptor_scale_]
    return out


def _smax(z: np.ndarray) -> np.ndarray:
    z = np.arcsinh(z)
    top = z.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(z - top).sum(axis=1))


def _smax_t(z: np.ndarray, t: float) -> np.ndarray:
    z = np.arcsinh(z) / t
    top = z.max(axis=1, keepdims=True)
    return t * (top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))


def _tails(self, z: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    dev, fit = z * self.all_scale_, self.fit_dev_
    n = fit.shape[0]
    out = np.empty_like(dev)
    for j in range(dev.shape[1]):
        f = fit[:, j]
        below = np.interp(dev[:, j], f, np.arange(1, n + 1), left=0.0, right=float(n))
        t = (n - below + 0.5) / (n + 1)
        beyond = dev[:, j] > f[-1]
        t[beyond] = 0.5 / (n + 1) * np.exp(-np.arcsinh((dev[beyond, j] - f[-1]) / self.all_scale_[j]))
        out[:, j] = -np.log(np.clip(t, 1e-300, 1.0))
    return out


RULES = {
    "facets": lambda self, z: _smax(self.facet_values(z)),
    "facets_T0.5": lambda self, z: _smax_t(self.facet_values(z), 0.5),
    "facets_T0.25": lambda self, z: _smax_t(self.facet_values(z), 0.25),
    "facets_T0.1": lambda self, z: _smax_t(self.facet_values(z), 0.1),
    "smax": lambda self, z: _smax(z),
    "sum_asinh": lambda self, z: np.arcsinh(np.maximum(z, 0)).sum(axis=1) + 1e-6 * _smax(z),
    "sum_lin": lambda self, z: np.maximum(z, 0).sum(axis=1) + 1e-6 * _smax(z),
    "l2": lambda self, z: np.sqrt((np.maximum(z, 0) ** 2).sum(axis=1)),
    "fisher": lambda self, z: _tails(self, z).sum(axis=1),
    "fisher_emb": lambda self, z: _tails(self, z)[:, :4].sum(axis=1) + _smax(z[:, 4:]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--fit-q", type=int, default=30)
    parser.add_argument("--cal-q", type=int, default=25)
    parser.add_argument("--splits", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=list(V.POWER_MODELS),
                        help="approved models of the one-model cells (default: those of part power)")
    parser.add_argument("--legacy-floor", action="store_true", help="descriptor scales floored at 1e-3")
    parser.add_argument("--legacy-rule", action="store_true",
                        help="relevance taken as it is (the fourth run's); the rule is chosen with --rules")
    parser.add_argument("--language-files", nargs="*", default=[])
    parser.add_argument("--out", default=None, help="write the rates as JSON here")
    args = parser.parse_args()
    rows = V.load_rows()
    if not rows:
        print("shared data absent; nothing to measure")
        return
    V.Cell.legacy_floor = args.legacy_floor
    V.Cell.legacy_rule = args.legacy_rule
    rule = [args.rules[0]]
    C.CombinedScorer.fit = _fit_keeping_values  # type: ignore[method-assign]
    C.CombinedScorer.score_samples = (  # type: ignore[method-assign]
        lambda self, y, x, d=None: RULES[rule[0]](self, self.standardised_components(y, x, d)))
    texts = V.Texts(V.EmbeddingCache())
    texts.warm([r["output"] for r in rows] + [r["input"] for r in rows])
    by_model, _, by_model_class = V._grouped(rows)
    rng = np.random.default_rng(50)
    altered = {(k, V.KEYS["row"](r)): V.perturb(r, k, by_model_class, rng) for k in KINDS if k != "other_class"
               for r in rows if r["model"] in args.models}
    texts.warm([r["output"] for r in altered.values()])
    translations = V.load_translations(args.language_files)
    texts.warm([t for d in translations.values() for t in d.values()])
    flags: dict[str, dict[str, list[bool]]] = {r: defaultdict(list) for r in args.rules}

    def measure(model: str, seed: int, kinds: tuple[str, ...]) -> None:
        cell = V.Cell(by_model[model], texts, seed=seed, n_fit_q=args.fit_q, n_cal_q=args.cal_q)
        groups = [V.question(r["prompt_id"]) for r in cell.cal]
        alts: dict[str, list[dict]] = {}
        for kind in kinds:
            if kind == "other_class":
                alts[kind] = V.other_class_answers(cell, rng)
            elif kind in translations:
                alts[kind] = V.translated(cell.test, translations[kind])[1]
            else:
                alts[kind] = [altered[(kind, V.KEYS["row"](r))] for r in cell.test]
        for name in args.rules:
            rule[0] = name
            cal = cell.scores(cell.cal)["combined"]
            null = prompt_weighted_p_values(cell.scores(cell.test)["combined"], cal, groups)
            flags[name]["null"].extend((null <= 0.05).tolist())
            for kind, alt in alts.items():
                p = prompt_weighted_p_values(cell.scores(alt)["combined"], cal, groups)
                flags[name][kind].extend((p <= 0.05).tolist())

    for model in args.models:
        for split in range(args.splits):
            measure(model, 600 + split, KINDS)
    for split in range(24 if translations else 0):
        measure(V.LANGUAGE_MODEL, 700 + split, tuple(translations))
    result = {name: {k: V.rate(v) for k, v in d.items()} for name, d in flags.items()}
    for name, d in result.items():
        print(f"fit {args.fit_q} / cal {args.cal_q} {name:10s}",
              " ".join(f"{k}={v['rate']:.3f}" for k, v in sorted(d.items())), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "detect_0.05": result}, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
