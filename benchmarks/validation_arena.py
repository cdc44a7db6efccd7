"""The validation study on the arena answers: batch power against silent model updates, per-output power in cells
of one model and one class, both through the package (``build_baseline`` and ``score_record_set``).

Data: ``../shared/data/arena_answers.jsonl.gz`` (``python -m benchmarks.data`` says where it is looked for):
17 models on the 300 prompts of arena-bench-v1, gpt-4-0314 / gpt-4-0613 / gpt-3.5-turbo-0125 on the 500 of
arena-hard-v0.1, o3-mini and sky-t1-32b on the 750 of arena-hard-v2.0 (coding, math, creative writing). One answer
per prompt and model, so the prompt is the unit. Embeddings come from the study's cache (``--cache``,
``benchmarks.validation_cache --arena`` warms it); nothing else of the package is replaced. Figures and their
discussion: docs/validation.md, section 10.

Parts (``--parts``; each writes ``arena_<part>[_TAG].json`` to ``--out``):

``swaps``   for every batch size of ``--sizes`` and split (seed ``2000 + split``): ``size`` prompts of the set are
            held out, the approved model's baseline is built on all the others (alpha 0.05, the package's
            defaults), and the batch verdict is read for each swapped-in model's answers to the held-out prompts
            and for the approved model's own (the null). ``--peer-batches`` also keeps the batches of size 50
            (arena-bench-v1) and 100 (arena-hard-v0.1) for ``benchmarks.validation_peers``; ``--confirm`` runs
            the pairs that confirmed 0.9.0's batch rule instead (seed ``7000 + split``).
``cells``   cells of one model and one input class (arena-hard-v2.0): ``--held-out`` prompts of the cell are held
            out per split (seed ``3000 + split``), the baseline is built on the others, and every held-out answer
            is judged as it is (the null), replaced by the same model's answer to a prompt of another class, by a
            refusal, and, in the first ``--injection-splits`` splits, the first ``--injection-prompts`` of them with
            1, 3 or 6 off-policy sentences injected at the start, middle or end.

Cost on two cores with a warm cache: ``swaps`` about 1-2 s per baseline (each scores every batch of its split);
``cells`` about 10 s per baseline, plus the first embedding of each injected text.

    python -m benchmarks.validation_arena --parts swaps --splits 40 --out results/arena
    python -m benchmarks.validation_arena --parts cells --splits 10 --out results/arena
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.data import arena_rows
from benchmarks.study import REFUSALS, auroc, perturb, rate
from benchmarks.validation_cache import EmbeddingCache
from benchmarks.validation_package import CachedEmbedder, score
from conformance.baseline.fit import SmallCalibrationWarning, build_baseline
from conformance.records import Record

ALPHA = 0.05
#: (set, approved model, swapped-in models): the issue's real version changes, and a base model in place of a
#: chat model. Every chat model of arena-bench-v1 also gets llama-13b at batch size 50 (``--base-model-sizes``).
SWAPS = (
    ("arena-bench-v1", "gpt-3.5-turbo", ("gpt-3.5-turbo-1106", "llama-13b")),
    ("arena-bench-v1", "gpt-4-0314", ("gpt-4-1106-preview", "llama-13b")),
    ("arena-bench-v1", "claude-1", ("claude-2.1", "llama-13b")),
    ("arena-bench-v1", "vicuna-7b-v1.5", ("vicuna-13b-v1.5", "llama-13b")),
    ("arena-bench-v1", "Mistral-7B-Instruct-v0.1", ("Mixtral-8x7B-Instruct-v0.1", "llama-13b")),
    ("arena-hard-v0.1", "gpt-4-0314", ("gpt-4-0613", "gpt-3.5-turbo-0125")),
)
#: Pairs of models first run to confirm the 0.9.0 batch rule (``--confirm``; docs/validation.md, section 10.1):
#: sibling fine-tunes of one base, a provider's cheaper model, another size of a family, and two fine-tunes of
#: Mistral-7B.
CONFIRM_SWAPS = (
    ("arena-bench-v1", "openchat_3.5", ("Starling-LM-7B-alpha",)),
    ("arena-bench-v1", "Starling-LM-7B-alpha", ("openchat_3.5",)),
    ("arena-bench-v1", "claude-1", ("claude-instant-1",)),
    ("arena-bench-v1", "vicuna-13b-v1.5", ("vicuna-33b-v1.3",)),
    ("arena-bench-v1", "Mistral-7B-Instruct-v0.1", ("openchat_3.5",)),
)
#: The first split seed of ``--confirm`` (``2000`` otherwise).
CONFIRM_SEED = 7000
BASE_MODEL = "llama-13b"
CELL_MODELS = ("o3-mini-2025-01-31", "sky-t1-32b")
INJECTIONS = tuple(f"inject_{where}_{n}" for n in (1, 3, 6) for where in ("start", "middle", "end"))


def records_of(rows: list[dict], label: str, input_class: str, prefix: str = "") -> list[Record]:
    """Records of ``rows`` labelled as ``label``'s outputs (a swapped-in model's answers carry the approved model's
    label: that is the swap), one prompt per row."""
    return [Record(row=i + 1, record_id=f"{prefix}{r['model']}:{r['prompt_id']}", model_version=label,
                   input_class=input_class, input=r["input"], output=r["output"],
                   extras={"prompt_id": r["prompt_id"]})
            for i, r in enumerate(rows) if r["output"].strip()]


def build(approved: list[Record], seed: int, embedder: CachedEmbedder):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallCalibrationWarning)
        return build_baseline(approved, alpha=ALPHA, seed=seed, embedder=embedder)  # type: ignore[arg-type]


def part_swaps(args: argparse.Namespace, rows: list[dict], embedder: CachedEmbedder) -> None:
    answers: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in rows:
        answers[(r["source"], r["model"])][r["prompt_id"]] = r
    swaps = CONFIRM_SWAPS if args.confirm else SWAPS
    plan = [(source, approved, tuple(others), tuple(args.sizes)) for source, approved, others in swaps
            if source in args.sets]
    if args.base_model_sizes and "arena-bench-v1" in args.sets and not args.confirm:
        covered = {a for s, a, _ in SWAPS if s == "arena-bench-v1"}
        chat = sorted(m for s, m in answers if s == "arena-bench-v1" and m != BASE_MODEL and m not in covered)
        plan += [("arena-bench-v1", m, (BASE_MODEL,), tuple(args.base_model_sizes)) for m in chat]
    flags: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    per_stat: dict[str, dict[int, dict[str, list[bool]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    per_output: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    p_values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    peer: dict[str, list[np.ndarray]] = defaultdict(list)
    t0, n_built = time.time(), 0
    for source, approved_model, others, sizes in plan:
        own = answers[(source, approved_model)]
        prompts = sorted(own)
        for size in sizes:
            for split in range(args.splits):
                seed = (CONFIRM_SEED if args.confirm else 2000) + split
                order = np.random.default_rng([seed, size]).permutation(len(prompts))
                test = [prompts[i] for i in order[:size]]
                approved = records_of([own[p] for p in prompts if p not in set(test)], approved_model, source)
                baseline = build(approved, split, embedder)
                n_built += 1
                for model in (approved_model, *others):
                    label = (f"{source}: {approved_model} (null: own held-out answers)" if model == approved_model
                             else f"{source}: {approved_model} -> {model}")
                    batch = records_of([answers[(source, model)][p] for p in test if p in answers[(source, model)]],
                                       approved_model, source, prefix="audited:")
                    result = score(batch, baseline, embedder)
                    (summary,) = result.summaries
                    assert summary.tests is not None and summary.tests.get("test") == "conditional", summary.tests
                    assert summary.p_value is not None
                    flags[label][size].append(summary.verdict == "out_of_bounds")
                    p_values[label][size].append(float(summary.p_value))
                    for name, p in summary.tests["p_values"].items():
                        per_stat[label][size][name].append(p <= ALPHA)
                    per_output[label][size] += [v.verdict == "out_of_bounds" for v in result.verdicts]
                    if args.peer_batches and (source, size) in (("arena-bench-v1", 50), ("arena-hard-v0.1", 100)):
                        peer["x"].append(embedder.embed([r.output for r in batch]).pooled().astype(np.float32))
                        peer["ref"].append(np.asarray(baseline.batch_reference_outputs, dtype=np.float32))
                        peer["label"].append(np.array(f"{label} [{size}]"))
                        peer["conformance_conditional"].append(np.array(summary.p_value))
                print(f"{source} {approved_model} size {size} split {split}: "
                      + ", ".join(f"{lbl.split(': ', 1)[1]} {np.mean(flags[lbl][size]):.2f}"
                                  for lbl in flags if lbl.startswith(f"{source}: {approved_model} ")
                                  and size in flags[lbl])
                      + f" [{n_built} baselines, {time.time() - t0:.0f} s]", flush=True)
    results: dict[str, object] = {"splits": args.splits, "alpha": ALPHA, "sizes": list(args.sizes),
                                  "seconds": time.time() - t0, "baselines": n_built}
    for label, by_size in flags.items():
        results[label] = {str(size): {"batch": rate(f), "per_statistic_at_alpha": {
            name: float(np.mean(v)) for name, v in per_stat[label][size].items()},
            "per_output": rate(per_output[label][size]), "p_values": p_values[label][size]}
            for size, f in by_size.items()}
    null = [f for label, by_size in flags.items() if "(null" in label for fs in by_size.values() for f in fs]
    results["null_pooled"] = rate(null)
    lo, hi = results["null_pooled"]["ci95"]  # type: ignore[index]
    print(f"null batches pooled: {np.mean(null):.4f} ({lo:.4f}-{hi:.4f}, n={len(null)})", flush=True)
    write(args, "swaps", results)
    if args.peer_batches:
        path = os.path.join(args.out, "peer_batches_arena" + ("" if args.tag is None else f"_{args.tag}") + ".npz")
        np.savez_compressed(path, **{f"{k}_{i}": v for k, vs in peer.items()  # type: ignore[arg-type]
                                     for i, v in enumerate(vs)}, n=np.array(len(peer["x"])))
        print(f"wrote {path}: {len(peer['x'])} batches for benchmarks.validation_peers", flush=True)


def _changed(r: dict, kind: str, pool: list[dict], rng: np.random.Generator) -> dict:
    """Row ``r`` with its output replaced: another class's answer (of the same model), a refusal, or injected
    off-policy sentences (``inject_<where>_<n>``)."""
    if kind == "other_class":
        return {**r, "output": pool[int(rng.integers(len(pool)))]["output"]}
    if kind == "refusal":
        return {**r, "output": REFUSALS[int(rng.integers(len(REFUSALS)))]}
    return perturb(r, kind, {}, rng)  # inject_<where>_<n>, as the MT-bench study injects them


def part_cells(args: argparse.Namespace, rows: list[dict], embedder: CachedEmbedder) -> None:
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["source"] == "arena-hard-v2.0" and r["model"] in CELL_MODELS and r["output"].strip():
            cells[(r["model"], r["input_class"])].append(r)
    flags: dict[str, list[bool]] = defaultdict(list)
    by_cell: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    scores: dict[str, list[float]] = defaultdict(list)
    level_by_baseline: list[float] = []
    n_cal: list[int] = []
    t0 = time.time()
    for (model, cls), cell_rows in sorted(cells.items()):
        pool = [r for (m, c), rs in cells.items() if m == model and c != cls for r in rs]
        cell_rows = sorted(cell_rows, key=lambda r: r["prompt_id"])
        for split in range(args.splits):
            rng = np.random.default_rng([3000 + split, len(cls)])
            order = rng.permutation(len(cell_rows))
            test = [cell_rows[i] for i in order[: args.held_out]]
            approved = records_of([cell_rows[i] for i in order[args.held_out:]], model, cls)
            baseline = build(approved, split, embedder)
            n_cal.append(baseline.n_calibration_prompts)
            kinds = ["null", "other_class", "refusal"] + (list(INJECTIONS) if split < args.injection_splits else [])
            for kind in kinds:
                base = test[: args.injection_prompts] if kind.startswith("inject") else test
                changed = base if kind == "null" else [_changed(r, kind, pool, rng) for r in base]
                result = score(records_of(changed, model, cls, prefix=f"{kind}:"), baseline, embedder)
                got = [v.verdict == "out_of_bounds" for v in result.verdicts]
                flags[kind] += got
                by_cell[kind][f"{model}/{cls}"] += got
                scores[kind] += [float(v.score) for v in result.verdicts if v.score is not None]
                if kind == "null":
                    level_by_baseline.append(float(np.mean(got)))
            print(f"{model}/{cls} split {split}: " + ", ".join(f"{k} {np.mean(by_cell[k][f'{model}/{cls}']):.2f}"
                                                                for k in kinds)
                  + f" [{time.time() - t0:.0f} s]", flush=True)
    null = np.array(scores["null"])
    results: dict[str, object] = {"splits": args.splits, "held_out": args.held_out, "alpha": ALPHA,
                                  "n_calibration_prompts": sorted(set(n_cal)), "seconds": time.time() - t0,
                                  "level_by_baseline_mean": float(np.mean(level_by_baseline))}
    for kind, f in flags.items():
        results[kind] = {"detect": rate(f), "by_cell": {c: float(np.mean(v)) for c, v in by_cell[kind].items()},
                         "auroc": None if kind == "null" else auroc(np.array(scores[kind]), null)}
        got = results[kind]["detect"]  # type: ignore[index]
        print(f"{kind}: {got['rate']:.3f} ({got['ci95'][0]:.3f}-{got['ci95'][1]:.3f}, n={got['n']})", flush=True)
    write(args, "cells", results)


def write(args: argparse.Namespace, part: str, results: dict[str, object]) -> None:
    name = f"arena_{part}" + ("" if args.tag is None else f"_{args.tag}") + ".json"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, name), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    print(f"wrote {os.path.join(args.out, name)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation_arena", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("swaps", "cells"), required=True)
    parser.add_argument("--splits", type=int, default=40, help="splits per batch size or cell (default 40)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50, 100, 200],
                        help="batch sizes of part swaps (default 10 25 50 100 200)")
    parser.add_argument("--base-model-sizes", type=int, nargs="*", default=[50],
                        help="batch sizes at which llama-13b replaces every other chat model of arena-bench-v1 "
                             "(default 50; none to skip)")
    parser.add_argument("--sets", nargs="+", default=["arena-bench-v1", "arena-hard-v0.1"],
                        help="the sets of part swaps (default both)")
    parser.add_argument("--peer-batches", action="store_true", help="keep batches for benchmarks.validation_peers")
    parser.add_argument("--confirm", action="store_true",
                        help="part swaps on the confirmation pairs (CONFIRM_SWAPS, seeds 7000 + split) instead")
    parser.add_argument("--held-out", type=int, default=50, help="held-out prompts per cell in part cells")
    parser.add_argument("--injection-splits", type=int, default=1,
                        help="splits of part cells whose held-out answers also get injected sentences (default 1)")
    parser.add_argument("--injection-prompts", type=int, default=20,
                        help="held-out answers per cell that get injected sentences (default 20)")
    parser.add_argument("--cache", type=Path, default=Path("results/embedding_cache"))
    parser.add_argument("--out", default="results/arena")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args()
    rows = arena_rows()
    embedder = CachedEmbedder(EmbeddingCache(args.cache))
    for part in args.parts:
        {"swaps": part_swaps, "cells": part_cells}[part](args, rows, embedder)


if __name__ == "__main__":
    main()
