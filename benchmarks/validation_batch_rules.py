"""How the conditional batch test's statistics are combined: the comparison behind 0.9.0's and 0.10.0's rules.

Measures, for the swaps of the arena answers, how many batches each combination rule flags at alpha 0.05, every rule
computed from the *same* labellings of the *same* batches: for each batch the package's input-conditional features
(:func:`conformance.stats.conditional_batch.conditional_features`) and whole-prompt labellings (B = 1000, seed the
split) give every statistic's value for the observed and the random labellings; a rule is a set of statistics and a
combination (minP, Fisher) over their per-labelling permutation p-values. Besides the package's five statistics (the
shape residuals from :func:`conformance.stats.conditional_batch.shape_features`), eight candidates are recorded: a
descriptor mean shift, a residual mean shift, MMDs of the residuals and of the descriptors at a quarter and four
times the median bandwidth, and energy distances of both. Figures and the steps in which the
sets were looked at: docs/validation.md, section 10.1 ("The 0.9.0 rule", "The 0.10.0 rule").

Sets (``--set``; prompts held out per split with seed ``[seed + split, size]``, the approved model's other answers the
reference, each swapped-in model's answers and the approved model's own to the held-out prompts the batches):

``design``     arena-hard-v0.1, its six directions (gpt-4-0314 approved: 30 splits, seed 2000; gpt-4-0613 and
               gpt-3.5-turbo-0125 approved: 40 splits, seed 5000), batches of 10, 25 and 50
``bench``      arena-bench-v1, the five sibling swaps of the issue, 20 splits, seed 2000, batches of 10 to 200
``confirm``    arena-bench-v1, the five confirmation pairs (``validation_arena.CONFIRM_SWAPS``), 20 splits, seed 7000,
               batches of 25, 50 and 100
``nullcheck``  arena-bench-v1, claude-1, gpt-3.5-turbo and Mistral-7B-Instruct's own answers only, 120 splits, seed
               9000, batches of 100 and 200 (the level where a third or two thirds of the 300 prompts are held out)

Cost on two cores with a warm embedding cache (``benchmarks.validation_cache --arena``): design about 4 min, bench
4 min, confirm 3 min, nullcheck 7 min. Writes ``batch_rules_<set>.npz`` (the recorded statistics) and
``batch_rules_<set>.json`` (the rates, by batch size too) to ``--out``; ``--summarise`` re-reads the recorded
statistics of an earlier run in seconds.

    python -m benchmarks.validation_batch_rules --set design --out results/batch_rules
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.data import arena_rows
from benchmarks.validation_arena import CONFIRM_SEED, CONFIRM_SWAPS
from benchmarks.validation_cache import EmbeddingCache
from conformance.stats import conditional_batch as cb
from conformance.stats.descriptors import DESCRIPTORS, describe
from conformance.stats.style import style_counts

ALPHA = 0.05
#: set -> (source, runs of (approved model, swapped-in models, splits, seed), sizes)
SETS: dict[str, tuple[str, list[tuple[str, tuple[str, ...], int, int]], tuple[int, ...]]] = {
    "design": ("arena-hard-v0.1", [("gpt-4-0314", ("gpt-4-0613", "gpt-3.5-turbo-0125"), 30, 2000),
                                   ("gpt-4-0613", ("gpt-4-0314", "gpt-3.5-turbo-0125"), 40, 5000),
                                   ("gpt-3.5-turbo-0125", ("gpt-4-0314", "gpt-4-0613"), 40, 5000)], (10, 25, 50)),
    "bench": ("arena-bench-v1", [("gpt-3.5-turbo", ("gpt-3.5-turbo-1106",), 20, 2000),
                                 ("gpt-4-0314", ("gpt-4-1106-preview",), 20, 2000),
                                 ("claude-1", ("claude-2.1",), 20, 2000),
                                 ("vicuna-7b-v1.5", ("vicuna-13b-v1.5",), 20, 2000),
                                 ("Mistral-7B-Instruct-v0.1", ("Mixtral-8x7B-Instruct-v0.1",), 20, 2000)],
              (10, 25, 50, 100, 200)),
    "confirm": ("arena-bench-v1", [(a, tuple(o), 20, CONFIRM_SEED) for _, a, o in CONFIRM_SWAPS], (25, 50, 100)),
    "nullcheck": ("arena-bench-v1", [(m, (), 120, 9000) for m in ("claude-1", "gpt-3.5-turbo",
                                                                   "Mistral-7B-Instruct-v0.1")], (100, 200)),
}
#: The recorded columns: the package's four statistics, then the candidates.
COLUMNS = (*cb.STATISTICS, "descriptor_mean_shift", "residual_mmd_bw0.25", "residual_mmd_bw4", "residual_energy",
           "descriptor_mmd_bw0.25", "descriptor_mmd_bw4", "descriptor_energy", "residual_mean_shift")
#: name -> (columns, combination)
RULES = {
    "minP over the four (0.7.0)": (cb.STATISTICS[:4], "minP"),
    "Fisher over the four": (cb.STATISTICS[:4], "fisher"),
    "Fisher over joint, style, shape (0.10.0)": (("joint_mmd", "style_mmd", "shape_mmd"), "fisher"),
    "minP over joint, style, shape": (("joint_mmd", "style_mmd", "shape_mmd"), "minP"),
    "Fisher over joint, shape": (("joint_mmd", "shape_mmd"), "fisher"),
    "minP over joint, style": (("joint_mmd", "style_mmd"), "minP"),
    "Fisher over joint, style (0.9.0)": (("joint_mmd", "style_mmd"), "fisher"),
    "minP over residual, descriptor, style": (("residual_mmd", "descriptor_mmd", "style_mmd"), "minP"),
    "Fisher over residual, descriptor, style": (("residual_mmd", "descriptor_mmd", "style_mmd"), "fisher"),
    "minP over the four and descriptor mean shift": ((*cb.STATISTICS[:4], "descriptor_mean_shift"), "minP"),
    "minP over the four and both energies": ((*cb.STATISTICS[:4], "residual_energy", "descriptor_energy"), "minP"),
    "minP over the four and four bandwidths": ((*cb.STATISTICS[:4], "residual_mmd_bw0.25", "residual_mmd_bw4",
                                                "descriptor_mmd_bw0.25", "descriptor_mmd_bw4"), "minP"),
    **{f"{name} alone": ((name,), "minP") for name in COLUMNS},
}
#: The pairs of rules whose discordant batches are counted: each release's rule against the one before.
COMPARED = (("minP over the four (0.7.0)", "Fisher over joint, style (0.9.0)"),
            ("Fisher over joint, style (0.9.0)", "Fisher over joint, style, shape (0.10.0)"))


def record(batch_rows: list[int], ref_rows: list[int], x: np.ndarray, y: np.ndarray, d: np.ndarray, s, keys: list[str],
           seed: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Every column of :data:`COLUMNS` for the observed labelling (row 0) and 1,000 random ones."""
    rows = batch_rows + ref_rows
    k = [keys[i] for i in rows]
    res, scaled, style = cb.conditional_features(x[rows], y[rows], d[rows], k, style=s[rows])
    shape = cb.shape_features(x[rows], s[rows], k)
    on_x, member = cb.block_labellings(k[:len(batch_rows)], k[len(batch_rows):], 1000, np.random.default_rng(seed))
    signs = cb.sign_matrix(on_x, member)
    package = cb._statistics(signs, res, scaled, style, on_x, member, shape=shape)
    shift = signs @ scaled
    extra = [np.einsum("bj,bj->b", shift, shift)]
    for view in (res, scaled):
        d2 = cb.squared_distances(view)
        median = float(np.median(d2[np.triu_indices_from(d2, k=1)]))
        extra += [cb.quadratic_forms(signs, np.exp(-d2 / (2 * f * median))) for f in (0.25, 4.0)]
        extra.append(-cb.quadratic_forms(signs, np.sqrt(d2)))
    residual_shift = signs @ res
    extra.append(np.einsum("bj,bj->b", residual_shift, residual_shift))
    return np.hstack([package, np.column_stack(extra)]).astype(np.float32)


def pooled_views(rows: list[dict], cache: EmbeddingCache):  # type: ignore[no-untyped-def]
    """What the conditional batch test reads of ``rows``: pooled input and output embeddings (one row per row of
    ``rows``), the outputs' descriptors and their style counts (CSR)."""
    inputs = sorted({r["input"] for r in rows})
    where = {t: i for i, t in enumerate(inputs)}
    x = cache.embed(inputs).pooled().astype(np.float64)[[where[r["input"]] for r in rows]]
    embedded = cache.embed([r["output"] for r in rows])
    y = embedded.pooled().astype(np.float64)
    d = describe([r["output"] for r in rows], embedded.n_tokens.tolist(), names=DESCRIPTORS)
    return x, y, d, style_counts([r["output"] for r in rows]).tocsr()


def combined_p(stats_: np.ndarray, rule: str) -> float:
    names, how = RULES[rule]
    return cb.COMBINATIONS[how](stats_[:, [COLUMNS.index(n) for n in names]].astype(np.float64))[0]


def summarise(recorded: dict[str, np.ndarray]) -> dict[str, object]:
    """Batches flagged per rule, by (approved -> model, size) and pooled, with the discordant pairs of each release's
    rule against the one before (:data:`COMPARED`: batches flagged by one of the two only)."""
    flags: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for key, stats_ in recorded.items():
        approved, model, size, _ = key.split("|")
        label = f"{approved} (null)" if model == approved else f"{approved} -> {model}"
        for rule in RULES:
            flags[rule][f"{label} [{size}]"].append(combined_p(stats_, rule) <= ALPHA)
    out: dict[str, object] = {}
    for rule, by in flags.items():
        alt = [f for k, v in by.items() if "(null)" not in k for f in v]
        null = [f for k, v in by.items() if "(null)" in k for f in v]
        sizes = sorted({int(k.rsplit("[", 1)[1][:-1]) for k in by})
        out[rule] = {"swapped": float(np.mean(alt)) if alt else None, "n_swapped": len(alt),
                     "null": float(np.mean(null)) if null else None, "n_null": len(null),
                     "swapped_by_size": {str(n): float(np.mean([float(f) for k, v in by.items() if "(null)" not in k
                                                                and k.endswith(f"[{n}]") for f in v] or [np.nan]))
                                         for n in sizes},
                     "by_batch": {k: float(np.mean(v)) for k, v in by.items()}}
    for before, after in COMPARED:
        names = [rule.rsplit("(", 1)[1].rstrip(")") for rule in (before, after)]
        for side in ("swapped", "null"):
            base = [f for k, v in flags[before].items() if ("(null)" in k) == (side == "null") for f in v]
            new = [f for k, v in flags[after].items() if ("(null)" in k) == (side == "null") for f in v]
            out[f"discordant_{side}_{names[1]}"] = {
                f"{names[1]} only": int(sum(n and not b for b, n in zip(base, new))),
                f"{names[0]} only": int(sum(b and not n for b, n in zip(base, new)))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation_batch_rules", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=sorted(SETS), required=True)
    parser.add_argument("--cache", type=Path, default=Path("results/embedding_cache"))
    parser.add_argument("--out", type=Path, default=Path("results/batch_rules"))
    parser.add_argument("--summarise", action="store_true",
                        help="only summarise the statistics an earlier run recorded in --out (no embedding, no tests)")
    args = parser.parse_args()
    if args.summarise:
        earlier = args.out / f"batch_rules_{args.set}.json"
        seconds = float(json.loads(earlier.read_text()).get("seconds", 0.0)) if earlier.exists() else 0.0
        with np.load(args.out / f"batch_rules_{args.set}.npz") as z:
            report(args, {k: z[k] for k in z.files}, seconds)
        return
    source, runs, sizes = SETS[args.set]
    models = {m for a, o, _, _ in runs for m in (a, *o)}
    rows = [r for r in arena_rows([source]) if r["model"] in models and r["output"].strip()]
    cache = EmbeddingCache(args.cache)
    t0 = time.time()
    x, y, d, s = pooled_views(rows, cache)
    keys = [r["prompt_id"] for r in rows]
    index = {(r["model"], r["prompt_id"]): i for i, r in enumerate(rows)}
    recorded: dict[str, np.ndarray] = {}
    for approved, others, splits, seed in runs:
        prompts = sorted(p for (m, p) in index if m == approved)
        for size in sizes:
            for split in range(splits):
                order = np.random.default_rng([seed + split, size]).permutation(len(prompts))
                test = [prompts[i] for i in order[:size]]
                held = set(test)
                ref = [index[(approved, p)] for p in prompts if p not in held]
                for model in (approved, *others):
                    batch = [index[(model, p)] for p in test if (model, p) in index]
                    recorded[f"{approved}|{model}|{size}|{split}"] = record(batch, ref, x, y, d, s, keys, split)
            print(f"{args.set}: {approved} size {size}, {splits} splits [{time.time() - t0:.0f} s]", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / f"batch_rules_{args.set}.npz", **recorded)  # type: ignore[arg-type]
    report(args, recorded, time.time() - t0)


def report(args: argparse.Namespace, recorded: dict[str, np.ndarray], seconds: float) -> None:
    """Write ``batch_rules_<set>.json`` and print each rule's rates, pooled and by batch size."""
    results = summarise(recorded) | {"set": args.set, "alpha": ALPHA, "seconds": seconds}
    tmp = args.out / f".batch_rules_{args.set}.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, args.out / f"batch_rules_{args.set}.json")
    for rule in RULES:
        r = results[rule]
        if r["n_swapped"]:  # type: ignore[index]
            by_size = "  ".join(f"{n}: {v:.3f}" for n, v in r["swapped_by_size"].items())  # type: ignore[index]
            print(f"{rule:48s} swapped {r['swapped']:.3f} (n={r['n_swapped']}; by size {by_size})  "  # type: ignore
                  f"null {r['null']:.3f} (n={r['n_null']})")  # type: ignore[index]
        else:
            print(f"{rule:48s} null {r['null']:.3f} (n={r['n_null']})")  # type: ignore[index]
    for _, after in COMPARED:
        name = after.rsplit("(", 1)[1].rstrip(")")
        print(f"discordant, {name}'s rule against the one before (swapped):", results[f"discordant_swapped_{name}"],
              " (null):", results[f"discordant_null_{name}"])


if __name__ == "__main__":
    main()
