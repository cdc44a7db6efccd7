"""How far apart two models' answers are, view by view: why a swap is caught as a batch at 25 outputs, at 100, or never.

For each swap of the arena answers (``validation_arena.SWAPS``, the base model once, and ``CONFIRM_SWAPS``), both
models' answers to every prompt of the set are pooled and the package's label-blind features computed on them, as
the conditional batch test computes them on a batch and its reference
(:func:`conformance.stats.conditional_batch.conditional_features` and ``shape_features``): the residual embeddings,
the scaled descriptor residuals, the style residuals and the shape residuals. For each view the shift is read as a
signal-to-noise ratio::

    kappa = ||Delta||^2 / sqrt(2 tr(Sigma^2))

``Delta`` is the mean of the paired differences (the swapped-in model's row minus the approved model's, prompt by
prompt), its squared norm estimated without bias (over pairs of different prompts); ``Sigma`` is the covariance of
one model's rows across prompts (the two models' averaged; ``tr(Sigma^2)`` estimated without bias). The squared mean
difference between ``n`` batch outputs and ``m`` reference outputs, which ``style_mmd`` and ``shape_mmd`` are, has
under the null a spread of ``sqrt(2 tr(Sigma^2)) (1/n + 1/m)``, and the shift moves it by ``||Delta||^2``: the shift
stands ``kappa / (1/n + 1/m)`` null standard deviations out. The **predicted power** at ``n`` outputs takes that
statistic's null as a scaled chi-square (Satterthwaite) and the shift as its non-centrality; **outputs needed** is
the smallest batch it puts at 0.9 with the baseline built on the set's other prompts (none if no split reaches it).
``joint_mmd`` is a Gaussian-kernel MMD on the residuals and descriptors together, read here through their linear
parts. A reading of the features, not the test: the test combines three statistics (Fisher's method) on features
refitted per batch, and its measured rates are ``validation_arena``'s (docs/validation.md, section 10.1). Intervals
are percentile bootstraps of ``||Delta||^2`` over prompts (features and spread held fixed, 400 resamples, seed 0).
Each descriptor's own shift (``descriptor_shifts``: the mean paired difference of its scaled residual, in units of
its pooled scale) says which way the answers moved.

Cost on two cores with a warm embedding cache (``benchmarks.validation_cache --arena``): under a minute. Writes
``shifts.json`` to ``--out``; with ``--plot DIR`` draws ``validation_arena_shifts.png`` into DIR, annotated with the
rates at 50 outputs that ``validation_arena``'s JSON files in the ``--measured`` folders hold.

    python -m benchmarks.validation_shifts --out results/shifts --plot docs/img \
        --measured results/arena60 results/arena results/arena_confirm
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.data import arena_rows
from benchmarks.validation_arena import BASE_MODEL, CONFIRM_SWAPS, SWAPS
from benchmarks.validation_batch_rules import pooled_views
from benchmarks.validation_cache import EmbeddingCache
from conformance.stats import conditional_batch as cb
from conformance.stats.descriptors import DESCRIPTORS

ALPHA = 0.05
VIEWS = ("residuals", "descriptors", "style", "shape")
RESAMPLES = 400
SIZES = (10, 25, 50, 100, 200)


def pairs() -> list[tuple[str, str, str, str]]:
    """(set, approved, swapped-in, kind) of every swap read here."""
    out = [(s, a, o, "issue" if s == "arena-bench-v1" else "design") for s, a, others in SWAPS
           for o in others if o != BASE_MODEL]
    out += [(s, a, o, "confirmation") for s, a, others in CONFIRM_SWAPS for o in others]
    out.append(("arena-bench-v1", "gpt-3.5-turbo", BASE_MODEL, "base model"))
    return out


def mean_shift(d: np.ndarray, weights: np.ndarray | None = None) -> float:
    """``||Delta||^2`` of paired differences ``d`` (one row per prompt), without bias: the mean of ``d_i . d_j`` over
    pairs of different prompts; ``weights`` are a bootstrap's counts per prompt (a prompt drawn twice is not paired
    with itself)."""
    w = np.ones(d.shape[0]) if weights is None else weights
    total = w @ d
    return (float(total @ total) - float((w ** 2) @ np.einsum("ij,ij->i", d, d))) / float(w.sum() ** 2 - (w ** 2).sum())


def traces(z: np.ndarray) -> tuple[float, float]:
    """``tr(Sigma)`` and ``tr(Sigma^2)`` of the covariance of ``z``'s rows, both without bias (the second as in
    Bai and Saranadasa 1996, for a sample covariance ``S`` of ``n`` rows:
    ``(n-1)^2 / ((n-2)(n+1)) (tr(S^2) - tr(S)^2 / (n-1))``)."""
    n = z.shape[0]
    c = z - z.mean(axis=0)
    gram = c @ c.T / (n - 1)
    tr1 = float(np.trace(gram))
    tr2 = (n - 1) ** 2 / ((n - 2) * (n + 1)) * (float(np.sum(gram * gram)) - tr1 ** 2 / (n - 1))
    return tr1, tr2


def power(delta2: float, tr1: float, tr2: float, n: int, m: int, alpha: float = ALPHA) -> float:
    """Power of the squared mean difference between ``n`` and ``m`` rows at ``alpha``, its null taken as a scaled
    chi-square with ``tr(Sigma)^2 / tr(Sigma^2)`` degrees of freedom (Satterthwaite) and the shift as its
    non-centrality."""
    c = 1 / n + 1 / m
    scale, df = c * tr2 / tr1, tr1 ** 2 / tr2
    return float(stats.ncx2.sf(stats.chi2.ppf(1 - alpha, df), df, max(delta2, 0.0) / scale))


def outputs_needed(delta2: float, tr1: float, tr2: float, n_prompts: int, target: float = 0.9) -> int | None:
    """The smallest batch whose :func:`power` reaches ``target``, the baseline built on the set's other prompts;
    ``None`` if no split of the set reaches it."""
    for n in range(2, n_prompts // 2 + 1):
        if power(delta2, tr1, tr2, n, n_prompts - n) >= target:
            return n
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation_shifts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("results/embedding_cache"))
    parser.add_argument("--out", type=Path, default=Path("results/shifts"))
    parser.add_argument("--plot", type=Path, metavar="DIR", help="also draw validation_arena_shifts.png into DIR")
    parser.add_argument("--measured", type=Path, nargs="+", default=[], metavar="DIR",
                        help="validation_arena's results folders, whose rates at 50 outputs annotate the plot")
    args = parser.parse_args()
    plan = pairs()
    cache = EmbeddingCache(args.cache)
    t0 = time.time()
    results: list[dict[str, object]] = []
    for source in sorted({s for s, *_ in plan}):
        models = {m for s, a, o, _ in plan if s == source for m in (a, o)}
        rows = [r for r in arena_rows([source]) if r["model"] in models and r["output"].strip()]
        x_all, y_all, d_all, s_all = pooled_views(rows, cache)
        index = {(r["model"], r["prompt_id"]): i for i, r in enumerate(rows)}
        for _, approved, other, kind in [p for p in plan if p[0] == source]:
            prompts = sorted(p for (m, p) in index if m == approved and (other, p) in index)
            ia, ib = [index[(approved, p)] for p in prompts], [index[(other, p)] for p in prompts]
            rows_ = ia + ib
            keys = prompts + prompts
            res, scaled, style = cb.conditional_features(x_all[rows_], y_all[rows_], d_all[rows_], keys,
                                                         style=s_all[rows_])
            shape = cb.shape_features(x_all[rows_], s_all[rows_], keys)
            n = len(prompts)
            rng = np.random.default_rng(0)
            draws = [np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64) for _ in range(RESAMPLES)]
            entry: dict[str, object] = {"set": source, "approved": approved, "swapped_in": other, "kind": kind,
                                        "prompts": n}
            for view, z in zip(VIEWS, (res, scaled, style, shape)):
                assert z is not None
                za, zb = z[:n], z[n:]
                diff = zb - za
                delta2 = mean_shift(diff)
                (a1, a2), (b1, b2) = traces(za), traces(zb)
                tr1, tr2 = (a1 + b1) / 2, (a2 + b2) / 2
                spread = float(np.sqrt(2 * tr2))
                boot = np.percentile([mean_shift(diff, w) for w in draws], [2.5, 97.5]) / spread
                entry[view] = {"kappa": delta2 / spread, "interval": [float(boot[0]), float(boot[1])],
                               "effective_dimensions": tr1 ** 2 / tr2,
                               "power": {str(k): power(delta2, tr1, tr2, k, n - k) for k in SIZES},
                               "outputs_needed": outputs_needed(delta2, tr1, tr2, n)}
            entry["descriptor_shifts"] = {name: float(v) for name, v in
                                          zip((*DESCRIPTORS, "relevance"), (scaled[n:] - scaled[:n]).mean(axis=0))}
            best = max(VIEWS, key=lambda v: entry[v]["kappa"])  # type: ignore[index]
            entry["best_view"] = best
            results.append(entry)
            print(f"{source} {approved} -> {other}: " + "  ".join(
                f"{v} {entry[v]['kappa']:.4f} (needs {entry[v]['outputs_needed']})" for v in VIEWS)  # type: ignore
                + f"  [{time.time() - t0:.0f} s]", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / ".shifts.json.tmp"
    tmp.write_text(json.dumps({"alpha": ALPHA, "resamples": RESAMPLES, "seconds": time.time() - t0,
                               "pairs": results}, indent=1))
    os.replace(tmp, args.out / "shifts.json")
    if args.plot:
        print("drawn:", plot(results, args.plot, measured_at(args.measured)))


def measured_at(folders: list[Path], size: int = 50) -> dict[str, float]:
    """``approved -> swapped-in`` -> the share of batches of ``size`` that ``validation_arena`` flagged."""
    found: dict[str, float] = {}
    for path in sorted(p for folder in folders for p in folder.glob("arena_swaps*.json")):
        for label, by_size in json.loads(path.read_text()).items():
            if isinstance(by_size, dict) and str(size) in by_size and " -> " in label:
                found[label.split(": ", 1)[-1]] = by_size[str(size)]["batch"]["rate"]
    return found


def plot(results: list[dict], out: Path, measured: dict[str, float]) -> Path:
    """Each swap's kappa per view (log scale), with its bootstrap interval and the measured rate at 50 outputs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(results, key=lambda e: max(e[v]["kappa"] for v in VIEWS))
    fig, ax = plt.subplots(figsize=(9.6, 5.0))
    floor = 1e-3
    markers = {"residuals": "o", "descriptors": "s", "style": "^", "shape": "D"}
    for j, view in enumerate(VIEWS):
        ys = np.array([e[view]["kappa"] for e in order])
        lo = np.array([e[view]["interval"][0] for e in order])
        hi = np.array([e[view]["interval"][1] for e in order])
        xs = np.arange(len(order)) + (j - 1.5) * 0.15
        shown = np.maximum(ys, floor)
        ax.errorbar(xs, shown, yerr=[shown - np.maximum(lo, floor * 0.5), np.maximum(hi, floor) - shown],
                    fmt=markers[view], ms=4, lw=0.8, capsize=0, label=view)
    for i, e in enumerate(order):
        rate = measured.get(f"{e['approved']} -> {e['swapped_in']}")
        if rate is not None:
            ax.text(i, 0.88, f"{rate:.2f}", fontsize=6.5, ha="center", transform=ax.get_xaxis_transform())
    ax.text(-0.6, 0.99, "batches of 50 outputs flagged through the package (0.10.0):", fontsize=6,
            transform=ax.get_xaxis_transform(), va="top")
    ax.set_yscale("log")
    ax.set_ylim(floor * 0.5, 6.0)
    ax.set_xticks(range(len(order)), [f"{e['approved']}\n→ {e['swapped_in']}" for e in order], fontsize=6,
                  rotation=35, ha="right")
    ax.set_ylabel("kappa: squared mean shift over its null spread (log)")
    ax.set_title("How far apart each swap's answers are, per view of the conditional batch test (all prompts, "
                 f"paired; bars: 95 % bootstrap; below {floor:g}: drawn at {floor:g})", fontsize=7)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "validation_arena_shifts.png", dpi=90)
    plt.close(fig)
    return out / "validation_arena_shifts.png"


if __name__ == "__main__":
    main()
