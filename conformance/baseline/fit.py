"""Building baselines from approved evaluation outputs.

One baseline per (model_version, input_class) cell. The cell's records are
split *by prompt* into a fit part (the reference bank) and a disjoint
calibration part (whose scores turn a new score into a p-value): outputs that
answer the same prompt are never split between the two, since they are far
more alike than outputs for different prompts and would make the calibration
scores too small.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from conformance import defaults
from conformance.baseline.format import Baseline, with_digest
from conformance.stats.conformal import (
    CalibrationSupport,
    attainable_calibration_size,
    calibration_conditional_threshold,
    calibration_support,
    check_alpha,
    choose_calibration_method,
    one_per_prompt,
)
from conformance.embedder import EmbeddedTexts, Embedder, embed_inputs, get_embedder
from conformance.errors import BaselineError
from conformance.params import check_calibration_method
from conformance.records import Record
from conformance.stats.knn import DEFAULT_K, chunked_knn_scores
from conformance.stats.chunked import chunked_text_scores
from conformance.stats.combined import EMBEDDING_COMPONENTS, FACETS, CombinedScorer
from conformance.stats.conditional_batch import VERDICT_COMBINATION, VERDICT_STATISTICS
from conformance.stats.descriptors import (
    DESCRIPTOR_UNITS,
    DESCRIPTORS,
    SCORE_DESCRIPTORS,
    describe,
)
from conformance.stats.style import style_counts
from conformance.stats.two_sample import _whole_groups_up_to

#: Scores a baseline can be built with: the plain kNN distance, or the input-conditional combination.
SCORERS = defaults.SCORERS
DEFAULT_SCORER = defaults.SCORER  # input-conditional: see docs/method.md for why

DEFAULT_CALIBRATION_FRACTION = defaults.CALIBRATION_FRACTION
DEFAULT_SEED = defaults.SEED

#: How a baseline turns scores into p-values (``build --calibration-method``): ``sample`` compares with one
#: calibration output per prompt (drawn by a seeded hash of its record id, fixed when the baseline is built), the
#: usual split-conformal p-value over ``K`` exchangeable prompts; ``weighted`` compares with every calibration
#: output, each prompt weighing the same (:func:`~conformance.stats.conformal.prompt_weighted_p_values`). Both hold
#: the level; ``weighted`` counts the new output's own prompt as wholly at or above it, which costs power at
#: some alphas and not at others (docs/method.md, "The p-value"; measured in docs/validation.md, section 1).
#: ``auto`` (the default) picks by
#: :func:`~conformance.stats.conformal.choose_calibration_method`, from the prompt counts and alpha alone.
CALIBRATION_METHODS = {"sample": "prompt_sample", "weighted": "prompt_weighted"}
DEFAULT_CALIBRATION_METHOD = defaults.CALIBRATION_METHOD


class SmallCalibrationWarning(UserWarning):
    """A baseline was built, but its calibration set is small for its alpha."""


@dataclass(frozen=True)
class Split:
    fit: list[Record]
    calibration: list[Record]


def split_by_prompt(
    records: Sequence[Record], *, calibration_fraction: float, seed: int, max_calibration_prompts: int | None = None
) -> Split:
    """Split records into fit and calibration parts, keeping each prompt's outputs together.

    Prompts are taken in a seeded random order; the calibration part gets them until it holds
    ``calibration_fraction`` of the outputs, or ``max_calibration_prompts`` prompts; the rest is the fit part.
    """
    if not 0.0 < calibration_fraction < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction!r}")
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.prompt_key].append(record)
    keys = sorted(groups)
    if len(keys) < 2:
        raise BaselineError(
            f"cell ({records[0].model_version}, {records[0].input_class}) has outputs for only "
            f"{len(keys)} distinct prompt(s); a baseline needs outputs for several prompts, split "
            "between a fit part and a calibration part"
        )
    order = np.random.default_rng(seed).permutation(len(keys))
    target = calibration_fraction * len(records)
    calibration: list[Record] = []
    fit: list[Record] = []
    n_calibration_prompts = 0
    for position in order:
        group = groups[keys[position]]
        full = len(calibration) >= target or (max_calibration_prompts is not None
                                              and n_calibration_prompts >= max_calibration_prompts)
        (fit if full else calibration).extend(group)
        n_calibration_prompts += not full
    if not fit:  # one huge last group; move the last calibration group back
        raise BaselineError("the split left no prompt for the fit part; add approved outputs for more prompts")
    by_row = lambda r: r.row  # noqa: E731 - file order inside each part
    return Split(fit=sorted(fit, key=by_row), calibration=sorted(calibration, key=by_row))


@dataclass(frozen=True)
class CellPlan:
    """How a cell's approved records will be used, decided before anything is embedded.

    The guarantee treats a new output as exchangeable with the approved ones,
    and that holds prompt by prompt, not output by output: the outputs of one
    prompt are far more alike than outputs of different prompts, so a
    calibration set of many outputs for few prompts says little about a new
    prompt (docs/method.md, "Units: prompts, not outputs").
    So the calibration prompts are what count: what the calibration part
    supports is that of ``K`` prompts, not of its outputs.

    ``calibration_used`` indexes ``split.calibration``: one output per distinct
    prompt, drawn by a seeded hash of its record id (without regard to any
    score). P-values compare with these ``K`` outputs (``calibration_method=
    "sample"``, and always under the calibration-conditional guarantee, whose
    Beta law needs ``K`` exchangeable scores), or with every calibration
    output, each prompt weighing the same (``"weighted"``,
    :func:`~conformance.stats.conformal.prompt_weighted_p_values`).

    ``rounded_from`` is the number of calibration prompts the fraction gave when ``round_calibration`` moved
    some of them to the fit part so that alpha is attained more nearly
    (:func:`~conformance.stats.conformal.attainable_calibration_size`), else ``None``.
    """

    split: Split
    calibration_used: np.ndarray
    support: CalibrationSupport
    conditional: float | None
    rounded_from: int | None = None


def _reference_level(split: Split, alpha: float, calibration_method: str) -> float:
    """The level the calibration method would reach on this split, judged on prompt counts alone."""
    _, levels = choose_calibration_method(list(Counter(r.prompt_key for r in split.calibration).values()), alpha)
    if calibration_method == "auto":
        return max(levels.values())
    return levels[calibration_method]


def plan_cell(
    records: Sequence[Record], *, alpha: float, calibration_fraction: float, seed: int, delta: float | None,
    round_calibration: bool = True, calibration_method: str = DEFAULT_CALIBRATION_METHOD,
) -> CellPlan:
    """Split a cell, choose its calibration outputs and check what they can support.

    With ``round_calibration`` (and no ``delta``, whose guarantee grows with every calibration prompt), the
    calibration part keeps only as many prompts as attain alpha most nearly, the largest such number not above
    what the fraction gives and not so small that it would draw the small-calibration warning where the
    fraction's number does not (:func:`~conformance.stats.conformal.attainable_calibration_size`: 25 -> 19 at alpha
    0.05, level 0.05 instead of 1/26; 32 -> 29), and only where that raises the level ``calibration_method``
    reaches; the other prompts go to the fit part. Like the split itself this
    sees prompt counts only, never a score, so the guarantee holds.

    Raises
    ------
    BaselineError
        If the records span several cells, have too few prompts to split, or
        the calibration part answers too few distinct prompts to ever flag an
        output at ``alpha`` (or to give the conditional guarantee at ``delta``);
        the message says how many more prompts are needed.
    """
    alpha = check_alpha(alpha)
    if not records:
        raise BaselineError("no approved records to build a baseline from")
    cells = {r.cell for r in records}
    if len(cells) != 1:
        raise BaselineError(f"records span {len(cells)} cells; build one baseline per (model_version, input_class)")
    (model_version, input_class) = cells.pop()
    where = f"cell ({model_version}, {input_class})"
    split = split_by_prompt(records, calibration_fraction=calibration_fraction, seed=seed)
    rounded_from = None
    if round_calibration and delta is None:
        n_requested = len({r.prompt_key for r in split.calibration})
        n_attainable = attainable_calibration_size(n_requested, alpha)
        if n_attainable < n_requested:
            rounded = split_by_prompt(records, calibration_fraction=calibration_fraction, seed=seed,
                                      max_calibration_prompts=n_attainable)
            if (_reference_level(rounded, alpha, calibration_method)
                    > _reference_level(split, alpha, calibration_method) + 1e-12):
                split, rounded_from = rounded, n_requested
    used = one_per_prompt([r.prompt_key for r in split.calibration], [r.record_id for r in split.calibration], seed)
    n_prompts = len({r.prompt_key for r in records})
    support = calibration_support(len(used), alpha)
    counted = (f"{len(used)} distinct prompts ({len(split.calibration)} outputs; outputs of one prompt are "
               "not independent, so what a calibration part supports is counted in prompts)")
    if not support.can_flag:
        needed = int(np.ceil(support.min_n / calibration_fraction))
        raise BaselineError(
            f"{where}: the calibration part answers {counted}, which cannot flag anything at alpha={alpha} "
            f"(the smallest possible p-value is 1/{len(used) + 1} = {support.smallest_alpha:.3f}). It needs "
            f"at least {support.min_n} calibration prompts, i.e. approved outputs for about {needed} distinct "
            f"prompts in the cell instead of {n_prompts}, or a larger alpha (>= {support.smallest_alpha:.3f})"
        )
    conditional = None if delta is None else calibration_conditional_threshold(len(used), alpha, delta)
    if delta is not None and conditional is None:
        raise BaselineError(
            f"{where}: the calibration part answers {counted}, too few for the calibration-conditional "
            f"guarantee at alpha={alpha}, delta={delta}; add approved outputs for more prompts, or build "
            "without --delta"
        )
    return CellPlan(split=split, calibration_used=used, support=support, conditional=conditional,
                    rounded_from=rounded_from)


def _lineage(records: Sequence[Record], source: str) -> dict[str, object]:
    def values(name: str) -> list[str]:
        return sorted({str(r.extras[name]) for r in records if r.extras.get(name) not in (None, "")})

    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.record_id):
        digest.update(json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        digest.update(b"\n")
    return {
        "source_file": source,
        "dataset_digest": "sha256:" + digest.hexdigest(),
        "n_records": len(records),
        "eval_run_ids": values("eval_run_id"),
        "training_data_versions": values("training_data_version"),
        "policy_ids": values("policy_id"),
        "policy_versions": values("policy_version"),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_baseline(
    records: Sequence[Record],
    *,
    alpha: float = 0.05,
    k: int = DEFAULT_K,
    calibration_fraction: float = DEFAULT_CALIBRATION_FRACTION,
    seed: int = DEFAULT_SEED,
    embedder: Embedder | None = None,
    source: str = "",
    delta: float | None = None,
    scorer: str = DEFAULT_SCORER,
    calibration_method: str = DEFAULT_CALIBRATION_METHOD,
    round_calibration: bool = True,
    progress: bool | None = None,
) -> Baseline:
    """Build the baseline of one (model_version, input_class) cell.

    With ``delta``, the baseline also carries the calibration-conditional
    guarantee (Bates et al. 2023): its verdicts flag at ``p <= t`` with ``t``
    from :func:`~conformance.stats.conformal.calibration_conditional_threshold`, so
    that with probability at least ``1 - delta`` over the approved sample this
    baseline's false-alarm rate is at most ``alpha``.

    P-values compare with one calibration output per prompt
    (``calibration_method="sample"``, the only choice with ``delta``) or with
    every calibration output, each prompt weighing the same (``"weighted"``);
    ``"auto"`` (the default) picks whichever reaches nearer alpha for this
    cell's prompt counts; see :data:`CALIBRATION_METHODS` and :class:`CellPlan`.
    With ``round_calibration`` (the default) the calibration part keeps only as many prompts as attain alpha
    most nearly (:func:`plan_cell`). The scorer metadata records what was asked for, what was chosen and why.
    Every calibration output's score is kept in ``calibration_scores_by_record``
    (the batch tests use them all).

    Raises
    ------
    BaselineError
        As :func:`plan_cell`.

    Warns
    -----
    SmallCalibrationWarning
        If the calibration prompts can flag at ``alpha`` but are few enough that
        the realised false-alarm rate may well exceed twice alpha.
    """
    alpha = check_alpha(alpha)
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
    check_calibration_method(calibration_method, delta)
    plan = plan_cell(records, alpha=alpha, calibration_fraction=calibration_fraction, seed=seed, delta=delta,
                     round_calibration=round_calibration, calibration_method=calibration_method)
    split, used, support, conditional = plan.split, plan.calibration_used, plan.support, plan.conditional
    # The rule auto would take, and both reference levels, are recorded whatever was asked for.
    auto, levels = choose_calibration_method(list(Counter(r.prompt_key for r in split.calibration).values()), alpha)
    if delta is not None:
        chosen = "sample"  # the Beta law behind delta needs K exchangeable scores
    else:
        chosen = auto if calibration_method == "auto" else calibration_method
    (model_version, input_class) = records[0].cell
    where = f"cell ({model_version}, {input_class})"
    embedder = embedder or get_embedder()
    fit_emb = embedder.embed([r.output for r in split.fit], desc=f"embedding fit {model_version}/{input_class}",
                             progress=progress)
    cal_emb = embedder.embed([r.output for r in split.calibration], desc="embedding calibration", progress=progress)
    k_used = min(k, fit_emb.chunks.shape[0])
    scorer_meta: dict[str, object] = {"name": "knn_cosine", "k": int(k_used)}
    state: dict[str, np.ndarray] = {}
    batch_cal_scores: np.ndarray | None = None
    cal_residuals: np.ndarray | None = None
    conditional_reference: dict[str, object] = {}
    if scorer == "combined":
        cal_scores, batch_cal_scores, cal_residuals, scorer_meta, state, conditional_reference = _fit_combined(
            split, used, fit_emb, cal_emb, embedder, k=int(k_used), seed=seed, sampled=chosen == "sample",
            progress=progress)
    else:
        cal_scores, _ = chunked_knn_scores(cal_emb.chunks, cal_emb.owner, cal_emb.n_texts, fit_emb.chunks, k_used)
    if support.is_small:
        warnings.warn(
            f"{where}: the calibration part answers only {support.n} distinct prompts; at alpha={alpha} the "
            f"realised false-alarm rate may be as high as {support.false_alarm_rate_95th:.3f} (95th percentile), "
            "more than twice alpha. Add approved outputs for more prompts for a tighter guarantee."
            + ("" if plan.rounded_from is None else
               f" (The split gave {plan.rounded_from} calibration prompts; {support.n} of them were kept so that "
               f"the false-alarm rate is {support.expected_false_alarm_rate:.3f} instead of "
               f"{calibration_support(plan.rounded_from, alpha).expected_false_alarm_rate:.3f}, the others moved to "
               "the fit part; build --no-round-calibration keeps them all.)"),
            SmallCalibrationWarning,
            stacklevel=2,
        )
    all_tokens = np.concatenate([fit_emb.n_tokens, cal_emb.n_tokens])
    descriptors = {
        "n_tokens_quantiles": {str(q): float(np.quantile(all_tokens, q)) for q in (0.01, 0.05, 0.5, 0.95, 0.99)},
        "calibration_support": support.to_dict(),
    }
    baseline = Baseline(
        model_version=model_version,
        input_class=input_class,
        alpha=alpha,
        scorer=scorer_meta | {"chunk_pooling": "max", "seed": seed, "calibration_fraction": calibration_fraction,
                              "n_calibration_outputs": len(split.calibration),
                              "calibration_method": CALIBRATION_METHODS[chosen],
                              "calibration_method_choice": {
                                  "requested": calibration_method, "chosen": chosen,
                                  "reference_level_sample": levels["sample"],
                                  "reference_level_weighted": levels["weighted"]},
                              "calibration_rounding": {
                                  "requested": bool(round_calibration), "prompts_from_fraction": plan.rounded_from},
                              "delta": None if delta is None else float(delta), "conditional_threshold": conditional,
                              "batch_unit": "prompt",
                              "batch_score": "score" if batch_cal_scores is None else "batch_rule",
                              "batch_embedding": "pooled" if cal_residuals is None else "residual",
                              "batch_test": "conditional" if conditional_reference else "calibration",
                              **({"batch_descriptors": list(DESCRIPTORS),
                                  "batch_statistics": list(VERDICT_STATISTICS),
                                  "batch_combination": VERDICT_COMBINATION} if conditional_reference else {})},
        reference=fit_emb.chunks,
        reference_owner=fit_emb.owner,
        calibration_scores=np.sort(cal_scores[used] if chosen == "sample" else cal_scores),
        calibration_embeddings=cal_emb.pooled(),
        reference_records=[{"record_id": r.record_id, "input": r.input, "output": r.output} for r in split.fit],
        calibration_record_ids=[r.record_id for r in split.calibration],
        calibration_prompt_keys=[r.prompt_key for r in split.calibration],
        calibration_scores_by_record=[float(s) for s in cal_scores],
        calibration_used=[int(i) for i in used],
        batch_calibration_scores_by_record=None if batch_cal_scores is None else [float(s) for s in batch_cal_scores],
        descriptors=descriptors,
        embedder=embedder.fingerprint,
        lineage=_lineage(records, source),
        scorer_state=state,
        calibration_residuals=cal_residuals,
        **conditional_reference,  # type: ignore[arg-type]
    )
    return with_digest(baseline)


def _fit_combined(
    split: Split, used: np.ndarray, fit_emb: EmbeddedTexts, cal_emb: EmbeddedTexts, embedder: Embedder, *,
    k: int, seed: int, sampled: bool, progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, object], dict[str, np.ndarray], dict[str, object]]:
    """Fit the input-conditional combined score on the fit part; score the calibration part with it (and
    with the batch tests' rule, :data:`conformance.stats.combined.BATCH_COMBINATION`) and give its residual
    embeddings, and the reference of the conditional batch test: every approved output's pooled input and
    output embedding, descriptors and prompt key (:func:`conditional_reference`)."""
    window = int(embedder.fingerprint["chunking"]["window"])
    fit_in = embed_inputs(embedder, [r.input for r in split.fit], progress=progress)
    cal_in = embed_inputs(embedder, [r.input for r in split.calibration], progress=progress)
    # Described once: the score takes SCORE_DESCRIPTORS, the conditional batch test the DESCRIPTORS among them.
    fit_desc = describe([r.output for r in split.fit], fit_emb.n_tokens.tolist(), window=window,
                        names=SCORE_DESCRIPTORS, inputs=[r.input for r in split.fit])
    cal_desc = describe([r.output for r in split.calibration], cal_emb.n_tokens.tolist(), window=window,
                        names=SCORE_DESCRIPTORS, inputs=[r.input for r in split.calibration])
    batch_cols = [SCORE_DESCRIPTORS.index(n) for n in DESCRIPTORS]
    fit_batch_desc, cal_batch_desc = fit_desc[:, batch_cols], cal_desc[:, batch_cols]
    units = [DESCRIPTOR_UNITS[name] for name in SCORE_DESCRIPTORS]
    model = CombinedScorer(k=k, seed=seed, descriptor_names=SCORE_DESCRIPTORS).fit(
        fit_emb.pooled(), fit_in, fit_desc, groups=[r.prompt_key for r in split.fit], descriptor_units=units)
    # Input novelty is calibrated on the same one-output-per-prompt set (one input per prompt).
    model.conformalize(cal_emb.pooled()[used], cal_in[used], cal_desc[used])
    text = chunked_text_scores(model, cal_emb.chunks, cal_emb.owner, cal_in, cal_desc)
    cal_scores, batch_cal_scores = text.score, text.batch_score
    # The chunk-max scores are the ones p-values use: the drawn ones, or all (calibration method "weighted").
    model.calibration_scores_ = np.sort(cal_scores[used] if sampled else cal_scores)
    cal_residuals = model.residual_embeddings(cal_emb.pooled(), cal_in)
    meta = {"name": "combined", **model.params(), "components": [*EMBEDDING_COMPONENTS, *SCORE_DESCRIPTORS],
            "descriptor_units": units,
            "facets": [{"facet": name, "how": how, "components": list(members)} for name, how, members in FACETS],
            "batch_rule": "the batch rank tests use the smooth maximum log(sum(exp(asinh(z)))) over every "
                          "component, without facets (small differences in many components add up over a batch)",
            "rule": "smooth maximum log(sum(exp(asinh(f)))) over facets f (components averaged within a facet, "
                    "format counts on a log scale) of components standardised by median and "
                    "max(MAD, 99th-percentile spread, descriptor unit / 2.576) of two-fold cross-fitted "
                    "fit-part values; relevance relative to the outputs of the 10 nearest fit inputs; input "
                    "novelty reported apart"}
    meta["facet_calibration"] = None
    if text.facets is not None and text.facet_names is not None:
        # What a verdict's "what stands out most" is compared with: each facet's spread over the approved
        # calibration outputs, taken on the chunk that set each one's score (as for an audited output).
        meta["facet_calibration"] = {
            name: {"median": float(np.median(text.facets[:, j])), "max": float(np.max(text.facets[:, j])),
                   "n": int(text.facets.shape[0])}
            for j, name in enumerate(text.facet_names)}
    meta["batch_embeddings"] = ("the batch MMD and energy tests compare residual embeddings: each pooled output "
                                "embedding minus what the ridge regression predicts from its input")
    reference = conditional_reference(
        [r.prompt_key for r in [*split.fit, *split.calibration]], np.vstack([fit_in, cal_in]),
        np.vstack([fit_emb.pooled(), cal_emb.pooled()]), np.vstack([fit_batch_desc, cal_batch_desc]), seed=seed,
        outputs_text=[r.output for r in [*split.fit, *split.calibration]])
    return cal_scores, batch_cal_scores, cal_residuals, meta, model.to_state(), reference


#: The conditional batch test's reference holds at most this many approved outputs (whole prompts, a seeded
#: choice that sees no content), so that a baseline and the test's pooled matrices stay bounded.
MAX_CONDITIONAL_REFERENCE = 2000


def conditional_reference(
    prompt_keys: Sequence[str], inputs: np.ndarray, outputs: np.ndarray, descriptors: np.ndarray, *, seed: int,
    outputs_text: Sequence[str] | None = None,
) -> dict[str, object]:
    """The arrays a baseline keeps for the conditional batch test
    (:mod:`conformance.stats.conditional_batch`): every approved output, fit and calibration parts alike, up to
    :data:`MAX_CONDITIONAL_REFERENCE` outputs of whole prompts taken in a seeded order; with ``outputs_text``,
    their style counts (:func:`conformance.stats.style.style_counts`; the reference keeps the counts, not the texts)."""
    keys = np.array([str(k) for k in prompt_keys], dtype=object)
    keep = _whole_groups_up_to(keys, MAX_CONDITIONAL_REFERENCE, [seed, 3])
    out: dict[str, object] = {
        "batch_reference_prompt_keys": [str(k) for k in keys[keep]],
        "batch_reference_inputs": np.asarray(inputs, dtype=np.float32)[keep],
        "batch_reference_outputs": np.asarray(outputs, dtype=np.float32)[keep],
        "batch_reference_descriptors": np.asarray(descriptors, dtype=np.float64)[keep]}
    if outputs_text is not None:
        style = style_counts([outputs_text[int(i)] for i in np.flatnonzero(keep)])
        out |= {"batch_reference_style_values": style.data, "batch_reference_style_columns": style.indices,
                "batch_reference_style_rows": style.indptr}
    return out
