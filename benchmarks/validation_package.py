"""The validation study through the package itself: level and power of the verdicts and batch tests on
real model outputs, with ``build_baseline`` and ``score_record_set`` as a user runs them.

Data: the MT-bench answers (32 chat models, 80 questions, two turns; ``python -m benchmarks.data`` says
where they are looked for). Every split is by MT-bench question (a conversation): both turns stay on one
side. Embeddings come from the study's cache (``--cache``, see ``benchmarks.validation_cache``) through an
embedder that carries the packaged embedder's fingerprint; nothing else of the package is replaced.
Figures and their discussion: docs/validation.md.

Parts (``--parts``; each writes a JSON file to ``--out``: ``package_blockswaps[_pooled][_N].json`` for
``swaps``, ``package_<part>[_TAG].json`` for the others):

``swaps``       each model swap of ``benchmarks.study.SWAPS`` as a batch: a baseline of the approved model on
                55 conversations (both turns, 25 for calibration before ``build`` rounds them), scoring the
                other model's answers to the other 25 (``--batch-conversations``; test conversations of seed
                ``300 + split``); the approved model's own held-out answers give the null. Reads the batch
                verdict and every output's. ``--peer-batches`` also writes ``<out>/peer_batches.npz`` for
                ``benchmarks.validation_peers``.
``power``       per-output changes (refusal, another class's answer, six injected off-policy sentences at
                the start, middle or end, truncation to half) in one-model cells (seed ``600 + split``),
                with both p-value rules of ``build --calibration-method`` on the same scores.
``batchpower``  batches of 10-100 outputs in which every output carries one change.
``unseenclass`` an answer of an input class the baseline was not built on.
``language``    gpt-4's answers translated into other languages (``--language-files``, MT-Bench-X, not shipped).
``classcell``   cells of one input class with the model as the unit: another class's answer, a refusal,
                ``--injections``, ``--language-files``; flag rates at every alpha from 0.01 to 0.30.

Cost on two cores with a warm cache: ``swaps`` about 6 min at ``--splits 100``, ``power`` 2 min at 30,
``classcell`` 7-10 min at 30; each new kind of changed text is embedded once (minutes). ``--splits 1``
runs any part in well under a minute once the cache is warm.

    python -m benchmarks.validation_package --parts swaps --splits 100 --out results/validation
    python -m benchmarks.validation_package --parts power --splits 30 --tag main --out results/validation
    python -m benchmarks.validation_package --parts classcell --splits 30 --out results/validation \\
        --cache results/embedding_cache
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from conformance.baseline.format import Baseline
from conformance.baseline.fit import SmallCalibrationWarning, build_baseline
from conformance.embedder import EmbeddedTexts, embed_inputs
from conformance.stats.chunked import chunked_text_scores
from conformance.stats.combined import CombinedScorer
from conformance.stats.conformal import conformal_p_values, prompt_weighted_p_values
from conformance.stats.descriptors import KNOWN_DESCRIPTORS, describe
from conformance.records import Record, RecordSet
from conformance.scoring import ScoringResult, score_record_set

from benchmarks.data import mt_bench_rows, question
from benchmarks.study import LANGUAGE_MODEL, POWER_MODELS, SWAPS, auroc, load_translations, perturb, rate
from benchmarks.validation_cache import EmbeddingCache

N_QUESTIONS, N_TEST, N_CALIBRATION, MIN_FIT = 80, 25, 25, 11


class CachedEmbedder:
    """The packaged embedder's fingerprint, embeddings from the validation cache."""

    def __init__(self, cache: EmbeddingCache) -> None:
        self.cache = cache
        self.fingerprint = cache.embedder.fingerprint

    def embed(self, texts: Sequence[str], **_: object) -> EmbeddedTexts:
        return self.cache.embed(list(texts))


def _records(rows: list[dict], model_version: str) -> list[Record]:
    return [Record(row=i + 1, record_id=f"{r['model']}:{r['prompt_id']}", model_version=model_version,
                   input_class="mt-bench", input=r["input"], output=r["output"],
                   extras={"prompt_id": r["prompt_id"], "conversation_id": question(r["prompt_id"])})
            for i, r in enumerate(rows)]


def held_out_questions(questions: list[str], seed: int, n: int = N_TEST) -> set[str]:
    """The last 25 questions of the permutation drawn with this seed (the first 30 and the next 25 were the fit
    and calibration questions of the study's earlier runs), or the first ``n`` of those; with ``n`` > 25, the
    last ``n`` of that permutation (the approved set shrinks to the other 80 - ``n``)."""
    order = np.random.default_rng(seed).permutation(len(questions))
    start = N_QUESTIONS - max(n, N_TEST)
    return {questions[i] for i in order[start : start + n]}


def build(
    approved: list[Record], split: int, embedder: CachedEmbedder, alpha: float, calibration_method: str = "auto",
    n_calibration: int = N_CALIBRATION,
) -> Baseline:
    """The baseline of the approved records, as ``conformance build`` makes it from a calibration fraction of
    25 conversations, or of as many as leave 11 for the fit part when fewer than 36 are approved; ``build``
    then keeps as many of them as reach alpha most nearly (19 at alpha 0.05) unless ``--no-round-calibration``
    (the eighth and earlier runs, whose figures used the 25)."""
    n_conv = len({r.prompt_key for r in approved})
    n_cal = min(n_calibration, n_conv - MIN_FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallCalibrationWarning)
        return build_baseline(approved, alpha=alpha, calibration_fraction=n_cal / n_conv, seed=split,
                              embedder=embedder, calibration_method=calibration_method,  # type: ignore[arg-type]
                              round_calibration=ROUND_CALIBRATION[0])


#: Whether ``build`` rounds the calibration part (the package's default; ``--no-round-calibration`` clears it).
ROUND_CALIBRATION = [True]


def score(records: list[Record], baseline: Baseline, embedder: CachedEmbedder) -> ScoringResult:
    def resolve(model_version: str, input_class: str) -> tuple[str, Baseline]:
        return "benchmark", baseline

    return score_record_set(RecordSet(path="<benchmark>", rows=tuple(records)), resolve,
                            embedder=embedder, progress=False)  # type: ignore[arg-type]


def half_width(rates: Sequence[float]) -> float:
    """Half the width of a normal 95 % interval for the mean of independent units' rates (0 for one unit)."""
    return 1.96 * float(np.std(rates, ddof=1)) / np.sqrt(len(rates)) if len(rates) > 1 else 0.0


def part_swaps(args: argparse.Namespace, by_model: dict[str, list[dict]], embedder: CachedEmbedder) -> None:
    """Each swap's 50-output batch against the approved model's baseline, and the approved model's own."""
    results: dict[str, Any] = {"splits": args.splits, "alpha": args.alpha,
                                  "batch_conversations": args.batch_conversations,
                                  "embeddings": "pooled" if args.pooled_embeddings else "residual"}
    peer: dict[str, list[np.ndarray]] = defaultdict(list)
    for a, b in SWAPS + [(a, a) for a, _ in SWAPS]:
        label = f"{a} -> {b}" if a != b else f"{a} (null: own held-out outputs)"
        questions = sorted({question(r["prompt_id"]) for r in by_model[a]})
        assert len(questions) == N_QUESTIONS, (a, len(questions))
        batch_flags, batch_p, per_test, output_flags, seconds = [], [], defaultdict(list), [], []
        for split in range(args.splits):
            test_q = held_out_questions(questions, 300 + split, args.batch_conversations)
            held = held_out_questions(questions, 300 + split, max(args.batch_conversations, N_TEST))
            approved = _records([r for r in by_model[a] if question(r["prompt_id"]) not in held], a)
            batch = _records([r for r in by_model[b] if question(r["prompt_id"]) in test_q], a)
            t0 = time.time()
            baseline = build(approved, split, embedder, args.alpha)
            if args.pooled_embeddings:
                baseline = replace(baseline, calibration_residuals=None)
            result = score(batch, baseline, embedder)
            seconds.append(time.time() - t0)
            (summary,) = result.summaries
            if args.peer_batches:
                peer_batch(peer, label, batch, approved, baseline, summary.p_value, embedder)
            kind = "pooled" if args.pooled_embeddings else "residual"
            assert summary.tests is not None and str(summary.tests.get("embeddings", "")).startswith(kind)
            batch_flags.append(summary.verdict == "out_of_bounds")
            batch_p.append(summary.p_value)
            for name, p in summary.tests["p_values"].items():
                per_test[name].append(p <= args.alpha)
            output_flags += [v.verdict == "out_of_bounds" for v in result.verdicts]
        results[label] = {
            "batch": rate(batch_flags),
            "per_test_at_alpha": {name: float(np.mean(flags)) for name, flags in per_test.items()},
            "per_output": rate(output_flags),
            "n_calibration_conversations": baseline.n_calibration_prompts,
            "seconds_per_split": float(np.mean(seconds)),
            "batch_p_by_split": batch_p,
        }
        r = results[label]
        assert isinstance(r, dict)
        lo, hi = r["batch"]["ci95"]
        print(f"{label}: batch {r['batch']['rate']:.2f} ({lo:.2f}-{hi:.2f}, n={r['batch']['n']}); "
              f"per output {r['per_output']['rate']:.3f} (n={r['per_output']['n']}); "
              f"{r['seconds_per_split']:.1f} s per split", flush=True)
    name = (f"package_blockswaps{'_pooled' if args.pooled_embeddings else ''}"
            f"{'' if args.batch_conversations == N_TEST else f'_{args.batch_conversations}'}.json")
    with open(os.path.join(args.out, name), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    if args.peer_batches:
        path = os.path.join(args.out, "peer_batches.npz")
        np.savez_compressed(path, **{f"{k}_{i}": v for k, vs in peer.items()  # type: ignore[arg-type]
                                     for i, v in enumerate(vs)}, n=np.array(len(peer["x"])))
        print(f"wrote {path}: {len(peer['x'])} batches for benchmarks.validation_peers", flush=True)


def peer_batch(peer: dict[str, list[np.ndarray]], label: str, batch: list[Record], approved: list[Record],
               baseline: Baseline, p_value: float | None, embedder: CachedEmbedder) -> None:
    """Keep one batch for the peers: its pooled output embeddings, those of the baseline's calibration outputs
    (every one, as the package's batch tests use them) and the package's batch p-value."""
    wanted = set(baseline.calibration_record_ids)
    calibration = [r.output for r in approved if r.record_id in wanted]
    peer["x"].append(embedder.embed([r.output for r in batch]).pooled().astype(np.float32))
    peer["ref"].append(embedder.embed(calibration).pooled().astype(np.float32))
    peer["label"].append(np.array(label))
    peer[f"conformance_{baseline.scorer['name']}"].append(np.array(np.nan if p_value is None else p_value))


#: The levels at which part ``classcell`` reports each group's flag rate from the verdicts' p-values.
ALPHA_GRID = tuple(round(a, 3) for a in np.arange(0.01, 0.301, 0.01))

#: The per-output changes of part ``power`` (a subset of ``benchmarks.study.perturb``'s kinds: the three targets of
#: issue 4 that need no translated answers, and the longest injection and a truncation for contrast).
POWER_KINDS = ("refusal", "other_class", "inject_start_6", "inject_middle_6", "inject_end_6", "truncate_50")


def _another_class_answer(r: dict, pool: list[dict], rng: np.random.Generator) -> dict:
    """``r`` with the same model's answer to a question of ``pool`` of another class, same turn (as
    the test part: a fit-part answer would sit in the reference bank)."""
    others = [o for o in pool if o["input_class"] != r["input_class"] and o["prompt_id"][-5:] == r["prompt_id"][-5:]]
    return {**r, "output": others[int(rng.integers(len(others)))]["output"]}


def _other_class(test: list[dict], rng: np.random.Generator) -> list[dict]:
    """Each test row with the same model's answer to another test question of another class, same turn."""
    return [_another_class_answer(r, test, rng) for r in test]


def facet_values(baseline: Baseline, records: list[Record], embedder: CachedEmbedder) -> tuple[np.ndarray, list[str]]:
    """Each record's facet values under the baseline's combined score (on the chunk that sets its score)."""
    model = CombinedScorer.from_state({n: baseline.scorer[n] for n in CombinedScorer.PARAM_NAMES},
                                      baseline.scorer_state)
    embedded = embedder.embed([r.output for r in records])
    names = [c for c in baseline.scorer["components"] if c in KNOWN_DESCRIPTORS]
    descriptors = describe([r.output for r in records], embedded.n_tokens.tolist(), inputs=[r.input for r in records],
                           window=int(baseline.embedder["chunking"]["window"]), names=names)
    text = chunked_text_scores(model, embedded.chunks, embedded.owner,
                               embed_inputs(embedder, [r.input for r in records]), descriptors)  # type: ignore[arg-type]
    assert text.facets is not None and text.facet_names is not None
    return text.facets, text.facet_names


def part_power(args: argparse.Namespace, by_model: dict[str, list[dict]], embedder: CachedEmbedder) -> None:
    """Per-output detection at alpha of each change in POWER_KINDS, on the test conversations of
    seed ``600 + split``, with the package's baseline and verdicts."""
    rng = np.random.default_rng(50)
    by_model_class: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for model, rows in by_model.items():
        for r in rows:
            by_model_class[model][r["input_class"]].append(r)
    kinds = tuple(args.kinds)
    # Each baseline's own false-alarm rate on its 50 held-out approved outputs: their spread gives an interval
    # for the level that respects the dependence of outputs scored against one calibration set.
    per_baseline: list[float] = []
    flags: dict[str, dict[str, list[bool]]] = {k: defaultdict(list) for k in ("null", *kinds)}
    scores: dict[str, list[float]] = defaultdict(list)
    null_scores: list[float] = []
    # Above the 95th percentile of the split's approved held-out scores (its 50 calibration and 50 test
    # outputs): what alpha 0.05 would flag if the approved set were large enough to pin that percentile
    # down, with the same score. Separates "the score does not see it" from "25 conversations are few".
    beyond_q95: dict[str, list[bool]] = defaultdict(list)
    turn1: dict[str, list[bool]] = defaultdict(list)  # per kind, whether each output is a first turn
    # The same, facet by facet: is a change visible in one facet but lost in the maximum over all of them?
    facet_beyond: dict[str, dict[str, list[bool]]] = {k: defaultdict(list) for k in kinds}
    # The same verdicts' scores under both p-value rules of ``build --calibration-method`` (one calibration output
    # per conversation, the baseline's ``calibration_used``; or every calibration output, each conversation
    # weighing the same), whichever the baseline chose: which construction has more power.
    by_method: dict[str, dict[str, dict[str, list[bool]]]] = {
        method: {k: defaultdict(list) for k in ("null", *kinds)} for method in ("sample", "weighted")}
    chosen: list[str] = []
    for model in args.models:
        questions = sorted({question(r["prompt_id"]) for r in by_model[model]})
        t0 = time.time()
        for split in range(args.splits):
            test_q = held_out_questions(questions, 600 + split)
            approved = _records([r for r in by_model[model] if question(r["prompt_id"]) not in test_q], model)
            test = [r for r in by_model[model] if question(r["prompt_id"]) in test_q]
            baseline = build(approved, split, embedder, args.alpha, args.calibration_method,
                             args.calibration_conversations)
            null = score(_records(test, model), baseline, embedder).verdicts
            flags["null"][model] += [v.verdict == "out_of_bounds" for v in null]
            per_baseline.append(float(np.mean([v.verdict == "out_of_bounds" for v in null])))
            assert baseline.calibration_scores_by_record is not None and baseline.calibration_used is not None
            by_record = np.asarray(baseline.calibration_scores_by_record)
            one_each = np.sort(by_record[baseline.calibration_used])
            keys = list(baseline.calibration_prompt_keys or [])

            chosen.append(str(baseline.scorer["calibration_method"]))

            def flag_both(kind: str, verdicts: list, one_each: np.ndarray = one_each,  # type: ignore[type-arg]
                          by_record: np.ndarray = by_record, keys: list[str] = keys, model: str = model) -> None:
                s = np.array([np.inf if v.score is None else v.score for v in verdicts], dtype=np.float64)
                for method, p in (("sample", conformal_p_values(s, one_each)),
                                  ("weighted", prompt_weighted_p_values(s, by_record, keys))):
                    by_method[method][kind][model] += (p <= args.alpha).tolist()

            flag_both("null", null)
            null_scores += [float(v.score) for v in null if v.score is not None]
            assert baseline.calibration_scores_by_record is not None
            q95 = float(np.quantile([*baseline.calibration_scores_by_record, *(v.score for v in null)], 0.95))
            wanted = set(baseline.calibration_record_ids)
            approved_facets, facet_names = facet_values(
                baseline, [r for r in approved if r.record_id in wanted] + _records(test, model), embedder)
            facet_q95 = np.quantile(approved_facets, 0.95, axis=0)
            for kind in kinds:
                alt = (_other_class(test, rng) if kind == "other_class"
                       else [perturb(r, kind, by_model_class, rng) for r in test])
                verdicts = score(_records(alt, model), baseline, embedder).verdicts
                flags[kind][model] += [v.verdict == "out_of_bounds" for v in verdicts]
                flag_both(kind, verdicts)
                scores[kind] += [float(v.score) for v in verdicts if v.score is not None]
                beyond_q95[kind] += [v.score is not None and v.score > q95 for v in verdicts]
                turn1[kind] += [r["prompt_id"].endswith("turn1") for r in test]
                altered_facets, _ = facet_values(baseline, _records(alt, model), embedder)
                for j, name in enumerate(facet_names):
                    facet_beyond[kind][name] += (altered_facets[:, j] > facet_q95[j]).tolist()
        print(f"power {model}: {time.time() - t0:.0f} s", flush=True)
    results: dict[str, Any] = {"splits": args.splits, "alpha": args.alpha, "models": list(args.models),
                                  "calibration_method": args.calibration_method,
                                  "calibration_conversations": args.calibration_conversations,
                                  "round_calibration": ROUND_CALIBRATION[0],
                                  "chosen": {m: chosen.count(m) for m in sorted(set(chosen))}}
    spread = float(np.std(per_baseline, ddof=1)) if len(per_baseline) > 1 else float("nan")
    half = half_width(per_baseline)
    results["null_by_baseline"] = {"n_baselines": len(per_baseline), "mean": float(np.mean(per_baseline)),
                                   "ci95": [float(np.mean(per_baseline) - half), float(np.mean(per_baseline) + half)],
                                   "sd": spread}
    level = float(np.mean(per_baseline))
    print(f"calibration method {args.calibration_method}: chosen {results['chosen']}; level by baseline "
          f"{level:.4f} (95 % CI {level - half:.4f}-{level + half:.4f}, {len(per_baseline)} baselines, "
          f"sd {spread:.3f})", flush=True)
    for kind, by in flags.items():
        pooled = [f for fs in by.values() for f in fs]
        results[kind] = {"detect": rate(pooled), "per_model": {m: float(np.mean(fs)) for m, fs in by.items()},
                         "auroc": None if kind == "null" else auroc(np.array(scores[kind]), np.array(null_scores)),
                         "beyond_approved_q95": None if kind == "null" else float(np.mean(beyond_q95[kind])),
                         "by_calibration_method": {
                             method: {"detect": rate([f for fs in got[kind].values() for f in fs]),
                                      "per_model": {m: float(np.mean(fs)) for m, fs in got[kind].items()}}
                             for method, got in by_method.items()}}
        if kind != "null":
            first = np.array(turn1[kind])
            hit, beyond = np.array(pooled), np.array(beyond_q95[kind])
            results[kind]["facet_beyond_approved_q95"] = {  # type: ignore[index]
                name: float(np.mean(v)) for name, v in facet_beyond[kind].items()}
            results[kind]["by_turn"] = {  # type: ignore[index]
                name: {"detect": float(np.mean(hit[mask])), "beyond_approved_q95": float(np.mean(beyond[mask]))}
                for name, mask in (("turn1", first), ("turn2", ~first))}
        r = results[kind]
        assert isinstance(r, dict)
        lo, hi = r["detect"]["ci95"]
        per = ", ".join(f"{m} {v:.2f}" for m, v in r["per_model"].items())
        auc = "" if r["auroc"] is None else (f"; AUROC {r['auroc']:.3f}; beyond the approved 95th percentile "
                                             f"{r['beyond_approved_q95']:.3f}")
        turns = "" if "by_turn" not in r else "; " + ", ".join(
            f"{t} {v['detect']:.2f} / {v['beyond_approved_q95']:.2f}" for t, v in r["by_turn"].items())
        facets = "" if "facet_beyond_approved_q95" not in r else "; facets beyond theirs: " + ", ".join(
            f"{name} {v:.2f}" for name, v in r["facet_beyond_approved_q95"].items())
        print(f"{kind}: {r['detect']['rate']:.3f} ({lo:.3f}-{hi:.3f}, n={r['detect']['n']}){auc}; {per}{turns}{facets}"
              + "".join(f"; {method}: {v['detect']['rate']:.3f} ({v['detect']['ci95'][0]:.3f}-"
                        f"{v['detect']['ci95'][1]:.3f}; " + ", ".join(f"{m} {x:.2f}" for m, x in v["per_model"].items())
                        + ")" for method, v in r["by_calibration_method"].items()), flush=True)
    name = "package_power" + ("" if args.tag is None else f"_{args.tag}")
    with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


#: The per-output changes applied to *every* output of a batch in part ``batchpower``.
BATCH_KINDS = ("truncate_25", "truncate_50", "truncate_75", "inject_middle_1", "inject_middle_3", "inject_middle_6",
               "refusal", "other_class")


def part_batchpower(args: argparse.Namespace, by_model: dict[str, list[dict]], embedder: CachedEmbedder) -> None:
    """Batch detection at alpha when every output of a batch carries one change of BATCH_KINDS, at 5, 12, 25
    and 50 conversations (10, 24, 50, 100 outputs), in the one-model cells of part ``power`` (seeds
    ``600 + split``; at 50 conversations the baseline is built on the other 30, as in part ``swaps``)."""
    rng = np.random.default_rng(51)
    by_model_class: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for model, rows in by_model.items():
        for r in rows:
            by_model_class[model][r["input_class"]].append(r)
    sizes = (5, 12, 25, 50)
    flags: dict[str, dict[int, list[bool]]] = {k: defaultdict(list) for k in ("null", *BATCH_KINDS)}
    for model in POWER_MODELS:
        questions = sorted({question(r["prompt_id"]) for r in by_model[model]})
        t0 = time.time()
        for split in range(args.splits):
            baselines: dict[int, Baseline] = {}
            for n_conv in sizes:
                held = held_out_questions(questions, 600 + split, max(n_conv, N_TEST))
                n_approved = N_QUESTIONS - len(held)
                if n_approved not in baselines:
                    approved = _records([r for r in by_model[model] if question(r["prompt_id"]) not in held], model)
                    baselines[n_approved] = build(approved, split, embedder, args.alpha)
                baseline = baselines[n_approved]
                chosen = held_out_questions(questions, 600 + split, n_conv)
                pool = [r for r in by_model[model] if question(r["prompt_id"]) in held]
                batch = [r for r in pool if question(r["prompt_id"]) in chosen]
                for kind in ("null", *BATCH_KINDS):
                    if kind == "null":
                        alt = batch
                    elif kind == "other_class":  # answers to held-out questions of another class, same turn
                        alt = [_another_class_answer(r, pool, rng) for r in batch]
                    else:
                        alt = [perturb(r, kind, by_model_class, rng) for r in batch]
                    (summary,) = score(_records(alt, model), baseline, embedder).summaries
                    flags[kind][2 * n_conv].append(summary.verdict == "out_of_bounds")
        print(f"batchpower {model}: {time.time() - t0:.0f} s", flush=True)
    results: dict[str, Any] = {"splits": args.splits, "alpha": args.alpha, "models": list(POWER_MODELS)}
    for kind, by_size in flags.items():
        results[kind] = {str(n): rate(f) for n, f in sorted(by_size.items())}
        print(f"{kind}: " + ", ".join(f"{n} outputs {rate(f)['rate']:.2f}" for n, f in sorted(by_size.items())),
              flush=True)
    with open(os.path.join(args.out, "package_batchpower.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


def part_language(args: argparse.Namespace, by_model: dict[str, list[dict]], embedder: CachedEmbedder) -> None:
    """Per-output detection at alpha of a switch of language, through the package: one baseline of gpt-4 per split
    (55 conversations, both turns, ``--calibration-conversations`` of them for calibration), scoring the other 25
    (seed ``700 + split``) with each first-turn answer that has a translation (``--language-files``, MT-Bench-X's
    translations of gpt-4's own answers) replaced by it. Null: gpt-4's own answers to the same first turns."""
    if not args.language_files:
        raise SystemExit("part language needs --language-files (MT-Bench-X answer files; see docs/validation.md, 3c)")
    translations = load_translations(args.language_files)
    rows = by_model[LANGUAGE_MODEL]
    questions = sorted({question(r["prompt_id"]) for r in rows})
    flags: dict[str, list[bool]] = defaultdict(list)  # "null <lang>" and "<lang>" on the replaced first turns
    scores: dict[str, list[float]] = defaultdict(list)
    by_question: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    per_baseline: list[float] = []  # each baseline's false-alarm rate on all its 50 held-out approved outputs
    chosen: list[str] = []
    t0 = time.time()
    for split in range(args.splits):
        test_q = held_out_questions(questions, 700 + split)
        approved = _records([r for r in rows if question(r["prompt_id"]) not in test_q], LANGUAGE_MODEL)
        test = [r for r in rows if question(r["prompt_id"]) in test_q]
        baseline = build(approved, split, embedder, args.alpha, args.calibration_method, args.calibration_conversations)
        chosen.append(str(baseline.scorer["calibration_method"]))
        null = score(_records(test, LANGUAGE_MODEL), baseline, embedder).verdicts
        per_baseline.append(float(np.mean([v.verdict == "out_of_bounds" for v in null])))
        for lang, answers in translations.items():
            replaced = [r["prompt_id"].endswith("turn1") and question(r["prompt_id"]) in answers for r in test]
            if not any(replaced):
                continue
            alt = [{**r, "output": answers[question(r["prompt_id"])]} if hit else r for r, hit in zip(test, replaced)]
            verdicts = score(_records(alt, LANGUAGE_MODEL), baseline, embedder).verdicts
            for r, v0, v1, hit in zip(test, null, verdicts, replaced):
                if hit:
                    by_question[lang][question(r["prompt_id"])].append(v1.verdict == "out_of_bounds")
                    flags[f"null {lang}"].append(v0.verdict == "out_of_bounds")
                    flags[lang].append(v1.verdict == "out_of_bounds")
                    scores[f"null {lang}"].append(np.inf if v0.score is None else float(v0.score))
                    scores[lang].append(np.inf if v1.score is None else float(v1.score))
    print(f"language {LANGUAGE_MODEL}: {time.time() - t0:.0f} s; rule chosen {sorted(set(chosen))}", flush=True)
    level = float(np.mean(per_baseline))
    half = half_width(per_baseline)
    results: dict[str, Any] = {
        "model": LANGUAGE_MODEL, "splits": args.splits, "alpha": args.alpha, "files": args.language_files,
        "calibration_method": args.calibration_method, "calibration_conversations": args.calibration_conversations,
        "round_calibration": ROUND_CALIBRATION[0],
        "chosen": {m: chosen.count(m) for m in sorted(set(chosen))},
        "null_by_baseline": {"n_baselines": len(per_baseline), "mean": level, "ci95": [level - half, level + half]},
        "languages": {}}
    print(f"level by baseline {level:.4f} (95 % CI {level - half:.4f}-{level + half:.4f})", flush=True)
    for lang in translations:
        if not flags[lang]:
            continue
        got: dict[str, Any] = {
            "questions": len(translations[lang]), "detect": rate(flags[lang]), "null": rate(flags[f"null {lang}"]),
            "auroc": auroc(np.array(scores[lang]), np.array(scores[f"null {lang}"])),
            "by_question": {q: rate(f) for q, f in sorted(by_question[lang].items())}}
        results["languages"][lang] = got  # type: ignore[index]
        d, n = got["detect"], got["null"]
        print(f"{lang}: {d['rate']:.3f} ({d['ci95'][0]:.3f}-{d['ci95'][1]:.3f}, n={d['n']}); own answers to the same "
              f"first turns {n['rate']:.3f}; AUROC {got['auroc']:.3f}; missed: " + ", ".join(
                  f"question {q} {r['n'] - r['k']} of {r['n']}" for q, r in got["by_question"].items()
                  if r["k"] < r["n"]), flush=True)
    name = "package_language" + ("" if args.tag is None else f"_{args.tag}")
    with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


def part_unseenclass(args: argparse.Namespace, by_model: dict[str, list[dict]], embedder: CachedEmbedder) -> None:
    """Per-output detection at alpha of an answer to a question of an input class the baseline never saw (issue 4's
    "math in place of writing"): for each split and each of MT-bench's 8 classes in turn, one baseline of the model
    on 55 conversations of the *other seven* classes (``--calibration-conversations`` of them for calibration), then
    the other 15 conversations of those classes (30 outputs, seed ``800 + split``) scored as they are (null) and
    with each output replaced by the same model's answer to a question of the left-out class, same turn.

    Part ``power``'s ``other_class`` is harder: there every class is approved, so the swapped-in answer is an
    approved kind of output, only for another input."""
    rng = np.random.default_rng(52)
    flags: dict[str, dict[str, list[bool]]] = {k: defaultdict(list) for k in ("null", "unseen_class")}
    by_class: dict[str, list[bool]] = defaultdict(list)
    scores: dict[str, list[float]] = defaultdict(list)
    per_baseline: list[float] = []
    per_split: list[float] = []  # false-alarm rate of a model's 8 baselines of one split together (they overlap)
    beyond_q95: list[bool] = []  # above the 95th percentile of the baseline's approved held-out scores
    facet_beyond: dict[str, list[bool]] = defaultdict(list)
    chosen: list[str] = []
    for model in args.models:
        classes = sorted({r["input_class"] for r in by_model[model]})
        t0 = time.time()
        for split in range(args.splits):
            split_flags: list[bool] = []
            for left_out in classes:
                rows = [r for r in by_model[model] if r["input_class"] != left_out]
                questions = sorted({question(r["prompt_id"]) for r in rows})
                order = np.random.default_rng(800 + split).permutation(len(questions))
                test_q = {questions[i] for i in order[:15]}
                approved = _records([r for r in rows if question(r["prompt_id"]) not in test_q], model)
                test = [r for r in rows if question(r["prompt_id"]) in test_q]
                baseline = build(approved, split, embedder, args.alpha, args.calibration_method,
                                 args.calibration_conversations)
                chosen.append(str(baseline.scorer["calibration_method"]))
                null = score(_records(test, model), baseline, embedder).verdicts
                pool = [r for r in by_model[model] if r["input_class"] == left_out]
                alt = [_another_class_answer(r, pool, rng) for r in test]
                verdicts = score(_records(alt, model), baseline, embedder).verdicts
                hits = [v.verdict == "out_of_bounds" for v in verdicts]
                per_baseline.append(float(np.mean([v.verdict == "out_of_bounds" for v in null])))
                split_flags += [v.verdict == "out_of_bounds" for v in null]
                assert baseline.calibration_scores_by_record is not None
                q95 = float(np.quantile([*baseline.calibration_scores_by_record, *(v.score for v in null)], 0.95))
                beyond_q95 += [v.score is not None and v.score > q95 for v in verdicts]
                wanted = set(baseline.calibration_record_ids)
                approved_facets, facet_names = facet_values(
                    baseline, [r for r in approved if r.record_id in wanted] + _records(test, model), embedder)
                altered_facets, _ = facet_values(baseline, _records(alt, model), embedder)
                facet_q95 = np.quantile(approved_facets, 0.95, axis=0)
                for j, name in enumerate(facet_names):
                    facet_beyond[name] += (altered_facets[:, j] > facet_q95[j]).tolist()
                flags["null"][model] += [v.verdict == "out_of_bounds" for v in null]
                flags["unseen_class"][model] += hits
                by_class[left_out] += hits
                scores["null"] += [np.inf if v.score is None else float(v.score) for v in null]
                scores["unseen_class"] += [np.inf if v.score is None else float(v.score) for v in verdicts]
            per_split.append(float(np.mean(split_flags)))
        print(f"unseenclass {model}: {time.time() - t0:.0f} s", flush=True)
    # The interval comes from the spread of (model, split) units: a split's 8 baselines share most test conversations.
    level = float(np.mean(per_baseline))
    half = half_width(per_split)
    results: dict[str, Any] = {
        "splits": args.splits, "alpha": args.alpha, "models": list(args.models),
        "calibration_method": args.calibration_method, "calibration_conversations": args.calibration_conversations,
        "round_calibration": ROUND_CALIBRATION[0],
        "chosen": {m: chosen.count(m) for m in sorted(set(chosen))},
        "null_by_baseline": {"n_baselines": len(per_baseline), "mean": level, "ci95": [level - half, level + half],
                             "interval_units": len(per_split)},
        "beyond_approved_q95": float(np.mean(beyond_q95)),
        "facet_beyond_approved_q95": {n: float(np.mean(v)) for n, v in facet_beyond.items()},
        "by_left_out_class": {c: rate(f) for c, f in sorted(by_class.items())},
        "auroc": auroc(np.array(scores["unseen_class"]), np.array(scores["null"]))}
    print(f"rule chosen {results['chosen']}; level by baseline {level:.4f} (95 % CI {level - half:.4f}-"
          f"{level + half:.4f}, {len(per_baseline)} baselines, {len(per_split)} model splits); AUROC "
          f"{results['auroc']:.3f}; beyond the approved 95th percentile {results['beyond_approved_q95']:.3f}; facets "
          "beyond theirs: " + ", ".join(f"{n} {v:.2f}" for n, v in results["facet_beyond_approved_q95"].items()),
          flush=True)
    for kind, by in flags.items():
        got: dict[str, Any] = rate([f for fs in by.values() for f in fs])
        results[kind] = {"detect": got, "per_model": {m: float(np.mean(fs)) for m, fs in by.items()}}
        print(f"{kind}: {got['rate']:.3f} ({got['ci95'][0]:.3f}-{got['ci95'][1]:.3f}, n={got['n']}); "
              + ", ".join(f"{m} {float(np.mean(fs)):.2f}" for m, fs in by.items()), flush=True)
    print("by left-out class: " + ", ".join(f"{c} {r['rate']:.2f}" for c, r in results["by_left_out_class"].items()),
          flush=True)
    name = "package_unseenclass" + ("" if args.tag is None else f"_{args.tag}")
    with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


def _model_unit_records(rows: list[tuple[str, dict]], input_class: str) -> list[Record]:
    """Records of one cell of part ``classcell``, each row's model its ``conversation_id`` (the exchangeable unit);
    each row comes with a prefix of its record id, which keeps the altered copies of one answer apart."""
    return [Record(row=i + 1, record_id=f"{prefix}{r['model']}:{r['prompt_id']}", model_version="approved-models",
                   input_class=input_class, input=r["input"], output=r["output"],
                   extras={"prompt_id": r["prompt_id"], "conversation_id": r["model"]})
            for i, (prefix, r) in enumerate(rows)]


def part_classcell(args: argparse.Namespace, by_model: dict[str, list[dict]], embedder: CachedEmbedder) -> None:
    """Per-output detection at alpha in cells of **one input class**, as issue 4 frames a baseline, of an answer to
    a question of another class (its "math in place of writing") and of a refusal.

    MT-bench has 10 questions per class, too few calibration conversations for one model's cell of one class at
    0.05. Here the approved outputs of a class are those of **many models** and the exchangeable unit is the
    model: for each split (seed ``900 + split``) the 32 models are permuted, the first four are the test models
    and the other 28 approved; for each class, ``build_baseline`` makes the cell from the approved models'
    answers to that class's 10 questions (both turns, 20 outputs a model, ``conversation_id`` = the model,
    19 models for calibration and 9 for the fit part), then ``score`` judges the test models' answers to the
    same questions as they are (null) and with each replaced by the same model's answer to a question of each
    other class in turn (same turn), or by a refusal. With ``--language-files``, gpt-4 is always a test model
    and its translated first-turn answers are scored too; with ``--injections``, off-policy sentences injected into
    the test answers are. Unlike the other parts the test outputs answer the
    *same* questions as the approved ones (a recurring prompt), and the approved distribution is "answers of
    these chat models", broader than one model's. The two empty outputs of the data (lima-whole-13b 135 turn 2,
    llama-13b 127 turn 1) are left out: ``build`` and ``score`` refuse an empty output."""
    rng = np.random.default_rng(53)
    rows = [r for rs in by_model.values() for r in rs if r["output"].strip()]
    models = sorted(by_model)
    classes = sorted({r["input_class"] for r in rows})
    by_key: dict[tuple[str, str, str], list[Any]] = {(r["model"], r["input_class"], r["prompt_id"][-5:]): []
                                                      for r in rows}
    for r in rows:
        by_key[(r["model"], r["input_class"], r["prompt_id"][-5:])].append(r)
    # With --language-files, gpt-4 is always one of the four test models and its first-turn answers that have a
    # translation are also scored in each language (the translated questions are of the reasoning, math and coding
    # classes), beside its own English answers to the same turns ("language:original").
    translations = load_translations(args.language_files) if args.language_files else {}
    kinds = [f"class:{c}" for c in classes] + ["refusal"]
    if translations:
        kinds += [f"language:{lang}" for lang in sorted(translations)] + ["language:original"]
    kinds += list(args.injections)

    def group(kind: str) -> str:
        return "other_class" if kind.startswith("class:") else kind

    flags: dict[tuple[str, str], list[bool]] = defaultdict(list)  # (cell class, kind) -> flags
    per_baseline: list[float] = []
    scores: dict[str, list[float]] = defaultdict(list)
    p_values: dict[str, list[float]] = defaultdict(list)  # by group: the verdicts' conformal p-values
    n_cal: list[int] = []
    by_split: dict[str, list[float]] = defaultdict(list)  # each split's rate: the units of the intervals below
    by_question: dict[tuple[str, str], list[bool]] = defaultdict(list)  # (language, question) -> flags
    t0 = time.time()
    for split in range(args.splits):
        order = np.random.default_rng(900 + split).permutation(len(models))
        test_models = {models[i] for i in order[:4]}
        if translations:
            others = [m for m in models if m != LANGUAGE_MODEL]
            test_models = {LANGUAGE_MODEL, *(others[i] for i in np.random.default_rng(900 + split).permutation(
                len(others))[:3])}
        split_flags: dict[str, list[bool]] = defaultdict(list)  # this split's flags, by group
        for cls in classes:
            approved = [r for r in rows if r["input_class"] == cls and r["model"] not in test_models]
            test = [r for r in rows if r["input_class"] == cls and r["model"] in test_models]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SmallCalibrationWarning)
                baseline = build_baseline(_model_unit_records([("", r) for r in approved], cls), alpha=args.alpha,
                                          calibration_fraction=19 / 28, seed=split,
                                          embedder=embedder,  # type: ignore[arg-type]
                                          round_calibration=ROUND_CALIBRATION[0], scorer=args.scorer)
            n_cal.append(int(baseline.n_calibration_prompts))
            altered: list[tuple[str, dict]] = [("null", r) for r in test]
            for kind in kinds:
                for r in test:
                    if kind == "refusal" or kind.startswith("inject_"):
                        altered.append((kind, perturb(r, kind, {}, rng)))
                        continue
                    if kind.startswith("language:"):
                        lang, number = kind.split(":", 1)[1], question(r["prompt_id"])
                        if r["model"] != LANGUAGE_MODEL or not r["prompt_id"].endswith("turn1"):
                            continue
                        if lang == "original" and any(number in answers for answers in translations.values()):
                            altered.append((kind, r))
                        elif number in translations.get(lang, {}):
                            altered.append((kind, {**r, "output": translations[lang][number]}))
                        continue
                    other = kind.split(":", 1)[1]
                    if other == cls:
                        continue
                    pool = by_key.get((r["model"], other, r["prompt_id"][-5:]), [])
                    altered.append((kind, {**r, "output": pool[int(rng.integers(len(pool)))]["output"]}))
            verdicts = score(_model_unit_records([(f"{k}:", r) for k, r in altered], cls), baseline, embedder).verdicts
            null = [v.verdict == "out_of_bounds" for (k, _), v in zip(altered, verdicts) if k == "null"]
            per_baseline.append(float(np.mean(null)))
            for (k, r), v in zip(altered, verdicts):
                flags[(cls, k)].append(v.verdict == "out_of_bounds")
                split_flags[group(k)].append(v.verdict == "out_of_bounds")
                if k.startswith("language:"):
                    by_question[(k.split(":", 1)[1], question(r["prompt_id"]))].append(v.verdict == "out_of_bounds")
                scores[group(k)].append(np.inf if v.score is None else float(v.score))
                assert v.p_value is not None, (k, v.reason)
                p_values[group(k)].append(float(v.p_value))
        for g, got in split_flags.items():
            by_split[g].append(float(np.mean(got)))
        print(f"classcell split {split}: {time.time() - t0:.0f} s", flush=True)
    level = float(np.mean(per_baseline))
    null_by_split = by_split.pop("null")
    half = half_width(null_by_split)
    groups = sorted({group(k) for k in kinds})
    results: dict[str, Any] = {
        "splits": args.splits, "alpha": args.alpha, "round_calibration": ROUND_CALIBRATION[0], "scorer": args.scorer,
        "n_calibration_models": {str(n): n_cal.count(n) for n in sorted(set(n_cal))},
        "null_by_baseline": {"n_baselines": len(per_baseline), "mean": level, "ci95": [level - half, level + half],
                             "interval_units": len(null_by_split)},
        **{g: rate([f for (c, k), fs in flags.items() if group(k) == g for f in fs]) for g in ("null", *groups)},
        "null_by_split": null_by_split,
        # The share of each group's p-values at or below each level: the flag rate had the baselines been asked
        # for that alpha (conformal p-values are valid at every level; docs/img/validation_pvalues.png).
        "rate_by_alpha": {"alphas": list(ALPHA_GRID),
                          **{g: [float(np.mean(np.array(p_values[g]) <= a)) for a in ALPHA_GRID]
                             for g in ("null", *groups)}},
        "by_split_ci95": {kind: [float(np.mean(v)) - half_width(v), float(np.mean(v)) + half_width(v)]
                          for kind, v in by_split.items()},
        "auroc": {g: auroc(np.array(scores[g]), np.array(scores["null"])) for g in groups},
        "language_by_question": {f"{lang} {number}": rate(fs) for (lang, number), fs in sorted(by_question.items())},
        "by_cell_and_kind": {f"{c} <- {k}": rate(fs) for (c, k), fs in sorted(flags.items())},
    }
    print(f"calibration models {results['n_calibration_models']}; level by baseline {level:.4f} (95 % CI "
          f"{level - half:.4f}-{level + half:.4f}, {len(per_baseline)} baselines, {len(null_by_split)} splits)",
          flush=True)
    for kind in ("null", *groups):
        r = results[kind]
        assert isinstance(r, dict)
        split_ci = results["by_split_ci95"].get(kind) if kind != "null" else None  # type: ignore[attr-defined]
        print(f"{kind}: {r['rate']:.3f} ({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}, n={r['n']}"
              + ("" if split_ci is None else f"; by split {split_ci[0]:.3f}-{split_ci[1]:.3f}") + ")", flush=True)
    print("AUROC: " + ", ".join(f"{k} {v:.3f}" for k, v in results["auroc"].items()), flush=True)  # type: ignore[attr-defined]
    if by_question:
        print("language, by question (flagged of scored): " + ", ".join(
            f"{key} {r['k']}/{r['n']}" for key, r in results["language_by_question"].items()), flush=True)  # type: ignore[attr-defined]
    for cls in classes:
        print(f"{cls} cell: " + ", ".join(f"{k.split(':')[-1]} {np.mean(flags[(cls, k)]):.2f}"
                                         for k in ["null", *kinds] if flags.get((cls, k))), flush=True)
    name = "package_classcell" + ("" if args.tag is None else f"_{args.tag}")
    with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


PARTS = {"swaps": part_swaps, "power": part_power, "batchpower": part_batchpower, "language": part_language,
         "unseenclass": part_unseenclass, "classcell": part_classcell}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation_package", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=["swaps"])
    parser.add_argument("--splits", type=int, default=30,
                        help="splits per swap (one 50-output batch each), or per model in part power")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--calibration-method", choices=("auto", "sample", "weighted"), default="auto",
                        help="part power: build's p-value rule for the verdicts; both rules are also measured on "
                             "the same scores beside them (default auto, build's default)")
    parser.add_argument("--calibration-conversations", type=int, default=N_CALIBRATION, metavar="K",
                        help="calibration conversations per baseline from the fraction, the rest of the 55 "
                             "approved ones being the fit part (default %(default)s); build then keeps as many as "
                             "reach alpha most nearly (25 -> 19 at alpha 0.05), unless --no-round-calibration")
    parser.add_argument("--no-round-calibration", action="store_true",
                        help="build keeps every calibration conversation the fraction gives, as before the ninth "
                             "run (the eighth and earlier runs' figures)")
    parser.add_argument("--kinds", nargs="*", choices=POWER_KINDS, default=list(POWER_KINDS),
                        help="part power: the changes to measure besides the null (none: the level alone, which "
                             "needs no new embeddings, so many splits are cheap)")
    parser.add_argument("--tag", help="parts power, language, unseenclass and classcell: suffix of the output file "
                                      "(package_<part>_TAG.json)")
    parser.add_argument("--language-files", nargs="*", default=[], metavar="JSONL",
                        help="parts language and classcell: MT-Bench-X answer files (upstream format; not shipped, see "
                             "docs/validation.md, section 3c)")
    parser.add_argument("--models", nargs="+", default=list(POWER_MODELS),
                        help="part power: the approved models (default: the three the scores were designed on; "
                             "gpt-4 vicuna-33b-v1.3 wizardlm-13b were held out from that)")
    parser.add_argument("--batch-conversations", type=int, default=N_TEST,
                        help="part swaps: conversations per batch (two outputs each); up to 25 the baseline is built "
                             "on the other 55, beyond it on the 80 - N left (calibration 25, or as many as leave 11 "
                             "conversations for the fit part)")
    parser.add_argument("--pooled-embeddings", action="store_true",
                        help="part swaps: drop the baseline's calibration residuals, so that score runs MMD and "
                             "energy on pooled output embeddings, as for a baseline built before they were stored")
    parser.add_argument("--injections", nargs="*", default=[], metavar="KIND",
                        choices=[f"inject_{where}_{n}" for where in ("start", "middle", "end") for n in (1, 3, 6)],
                        help="part classcell: also score the test answers with off-policy sentences injected, e.g. "
                             "inject_middle_3 (1, 3 or 6 sentences at the start, middle or end). Each kind embeds the "
                             "test answers anew: five kinds over 5 splits took about 40 min on 2 cores")
    parser.add_argument("--scorer", choices=("combined", "knn_cosine"), default="combined",
                        help="part classcell: build's --scorer (default %(default)s, build's default)")
    parser.add_argument("--peer-batches", action="store_true",
                        help="part swaps: also write <out>/peer_batches.npz (each batch's and its calibration "
                             "outputs' pooled embeddings, the package's batch p-value) for benchmarks.validation_peers")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder the JSON results are written to")
    parser.add_argument("--cache", metavar="DIR",
                        help="embedding cache folder (default: <out>/embedding_cache); share one between runs, "
                             "see benchmarks.validation_cache")
    args = parser.parse_args()
    ROUND_CALIBRATION[0] = not args.no_round_calibration
    rows = mt_bench_rows()
    os.makedirs(args.out, exist_ok=True)
    embedder = CachedEmbedder(EmbeddingCache(Path(args.cache or os.path.join(args.out, "embedding_cache"))))
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_model[r["model"]].append(r)
    for part in args.parts:
        PARTS[part](args, by_model, embedder)


if __name__ == "__main__":
    main()
