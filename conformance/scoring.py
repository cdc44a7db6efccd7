"""Scoring audited records against approved baselines: verdicts and batch tests."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from conformance._version import __version__
from conformance.baseline import Baseline
from conformance.batch import DEFAULT_PERMUTATIONS, DEFAULT_SEED, batch_tests
from conformance.build import embed_inputs
from conformance.combined import FACET_WORDS, CombinedScorer, chunked_text_scores
from conformance.conformal import benjamini_hochberg, check_fdr
from conformance.descriptors import DESCRIPTORS, describe
from conformance.embedder import EmbeddedTexts, Embedder, fingerprint_digest, get_embedder
from conformance.records import InvalidRow, Record, RecordSet, prompt_key_of
from conformance.scores import chunked_knn_scores
from conformance.verdict import INVALID, NO_BASELINE, OUT, VERDICTS, WITHIN, GroupSummary, Verdict

if TYPE_CHECKING:
    from conformance.ledger.store import AppendReport

N_NEAREST = 3


@dataclass(frozen=True)
class ScoringResult:
    """Verdicts in input order, group summaries, and what the ledger recorded (``None`` if not recorded)."""

    verdicts: list[Verdict]
    summaries: list[GroupSummary]
    ledger: AppendReport | None = None

    @property
    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in VERDICTS}
        for v in self.verdicts:
            out[v.verdict] += 1
        return out

    @property
    def all_within_bounds(self) -> bool:
        return all(v.verdict == WITHIN for v in self.verdicts)


def test_name(baseline: Baseline) -> str:
    scorer = baseline.scorer
    kind = {"prompt_weighted": "prompt-weighted split-conformal p-value",
            "prompt_sample": "split-conformal p-value (one calibration output per prompt)"}.get(
        str(scorer.get("calibration_method")), "split-conformal p-value")
    if scorer["name"] == "combined":
        return f"{kind} on the input-conditional combined score (k={scorer.get('k')})"
    return f"{kind} on {scorer['name']} (k={scorer.get('k')}) score"


def _input_sentence(baseline: Baseline, input_p_value: float) -> str:
    if input_p_value <= baseline.alpha:
        return (f" Its input itself lies outside the approved inputs of this class (input novelty p-value "
                f"{input_p_value:.4f}): the output may be unusual because the question is.")
    return (f" Its input is like the approved inputs of this class (input novelty p-value {input_p_value:.4f}), "
            "so the score measures how unusual the output is for its input.")


def _facet_sentence(baseline: Baseline, facet: str, value: float) -> str:
    said = f" What stands out most is {FACET_WORDS.get(facet, facet)}: a standardised value of {value:.1f}"
    reference = (baseline.scorer.get("facet_calibration") or {}).get(facet)
    if reference is None:  # baselines built before the calibration part's facet spread was kept
        return said + ", where 2.3 to 2.6 marks the most unusual 1% of the approved outputs the score was fitted on."
    n, prompts = int(reference["n"]), baseline.n_calibration_prompts
    drawn = baseline.scorer.get("calibration_method") == "prompt_sample" and n != prompts
    # With one drawn output per prompt the p-value compared with `prompts` outputs; the spread is over them all.
    whose = f" (every answer to those {prompts} prompts)" if drawn else ""
    return (said + f", where the {n} approved calibration outputs{whose} reach at most {reference['max']:.1f} "
            f"(median {reference['median']:.1f}).")


def _reason(
    baseline: Baseline, uri: str, score: float, p_value: float, input_p_value: float | None = None,
    top_facet: tuple[str, float] | None = None,
) -> str:
    method = baseline.scorer.get("calibration_method")
    if method == "prompt_weighted":
        keys = baseline.calibration_prompt_keys or []
        n_out, n_prompts = len(keys), baseline.n_calibration_prompts
        # The share of calibration prompts (each weighing the same) this output is more unusual than.
        share = 100.0 * (1.0 - (p_value * (n_prompts + 1) - 1.0) / n_prompts)
        compared = n_out
        held = f"answers to {n_prompts} prompts held out for calibration, each prompt weighing the same; "
        like = "an output like the approved ones, for a prompt like the approved ones,"
    else:
        n = baseline.n_calibration
        share = 100.0 * int(np.searchsorted(baseline.calibration_scores, score, side="left")) / n
        per_prompt = method == "prompt_sample"
        compared, held = n, (f"one answer drawn at random for each of {n} prompts held out for calibration, the "
                              "draw fixed when the baseline was built; " if per_prompt else "")
        like = "an output like the approved ones" + (", for a prompt like the approved ones," if per_prompt else "")
    lead = (
        f"Compared with {compared} approved outputs of model {baseline.model_version} for input class "
        f"'{baseline.input_class}' ({held}baseline {uri}), this output was more unusual than {share:.1f}% of them "
        f"(p-value {p_value:.4f}; alpha {baseline.alpha:g}, so {like} is flagged at most "
        f"{100 * baseline.alpha:g}% of the time)."
    )
    if input_p_value is not None:
        lead += _input_sentence(baseline, input_p_value)
    if top_facet is not None:
        lead += _facet_sentence(baseline, *top_facet)
    cut = flag_threshold(baseline)
    if cut < baseline.alpha:
        delta = float(baseline.scorer["delta"])
        lead += (
            f" This baseline also carries the calibration-conditional guarantee: with probability at least "
            f"{100 * (1 - delta):g}% over the approved sample it was built from, its false-alarm rate is at most "
            f"{100 * baseline.alpha:g}%; for that, outputs are flagged at p-values at or below {cut:.4g}."
        )
        if p_value <= cut:
            return lead + " The p-value is at or below that cut-off: out of bounds."
        return lead + " The p-value is above that cut-off: within bounds."
    if p_value <= baseline.alpha:
        return lead + " The p-value is at or below alpha: out of bounds."
    return lead + " The p-value is above alpha: within bounds."


def flag_threshold(baseline: Baseline) -> float:
    """The p-value at or below which an output is out of bounds: alpha, or the
    calibration-conditional cut-off when the baseline was built with ``delta``."""
    conditional = baseline.scorer.get("conditional_threshold")
    return float(conditional) if conditional is not None else baseline.alpha


def judge(
    baseline: Baseline,
    uri: str,
    records: Sequence[Record],
    embedded: EmbeddedTexts,
    *,
    scored_at: str,
    inputs: np.ndarray | None = None,
    batch_scores: dict[int, float] | None = None,
    batch_residuals: dict[int, np.ndarray] | None = None,
) -> list[Verdict]:
    """Verdicts for records of the baseline's cell, given their embeddings (and, for the
    combined score, one pooled embedding per record's input). For a baseline that carries
    batch calibration scores, each record's score under the batch tests' rule goes into
    ``batch_scores`` (by row), if given; for one that carries calibration residuals, each
    record's residual embedding goes into ``batch_residuals``."""
    k = int(baseline.scorer["k"])
    scores, nearest_idx = chunked_knn_scores(embedded.chunks, embedded.owner, embedded.n_texts, baseline.reference, k)
    input_p: list[float | None] = [None] * len(records)
    top_facets: Sequence[tuple[str, float] | None] = [None] * len(records)
    if baseline.scorer["name"] == "combined":
        if inputs is None:
            raise ValueError("a baseline with the combined score needs the records' input embeddings")
        model = CombinedScorer.from_state(
            {name: baseline.scorer[name] for name in CombinedScorer.PARAM_NAMES if name in baseline.scorer},
            baseline.scorer_state)
        window = int(baseline.embedder["chunking"]["window"])
        # The descriptors the baseline was fitted with, in its order (a baseline built before a descriptor
        # was added does not know it).
        names = [c for c in baseline.scorer["components"] if c in DESCRIPTORS]
        desc = describe([r.output for r in records], embedded.n_tokens.tolist(), window=window, names=names)
        text = chunked_text_scores(model, embedded.chunks, embedded.owner, inputs, desc)
        scores = text.score
        if text.top_facet is not None:  # baselines built before the facets say what they said then
            top_facets = text.top_facet
        if batch_scores is not None and baseline.batch_calibration_scores_by_record is not None:
            batch_scores.update(zip((r.row for r in records), text.batch_score.tolist()))
        if batch_residuals is not None and baseline.calibration_residuals is not None:
            batch_residuals.update(zip((r.row for r in records), model.residual_embeddings(embedded.pooled(), inputs)))
        input_p = [float(p) for p in model.input_p_values(inputs)]
    p_values = baseline.p_values(scores)
    embedder_digest = fingerprint_digest(baseline.embedder)
    verdicts = []
    for record, score, p_value, idx, in_p, top in zip(records, scores, p_values, nearest_idx, input_p, top_facets):
        owners: list[int] = []
        for chunk in idx:
            owner = int(baseline.reference_owner[chunk])
            if owner not in owners:
                owners.append(owner)
        verdicts.append(
            Verdict(
                row=record.row,
                record_id=record.record_id,
                model_version=record.model_version,
                input_class=record.input_class,
                verdict=OUT if p_value <= flag_threshold(baseline) else WITHIN,
                reason=_reason(baseline, uri, float(score), float(p_value), in_p, top),
                p_value=float(p_value),
                score=float(score),
                alpha=baseline.alpha,
                baseline=uri,
                baseline_digest=baseline.digest,
                test=test_name(baseline),
                nearest=tuple(baseline.reference_records[o]["record_id"] for o in owners[:N_NEAREST]),
                embedder=embedder_digest,
                code_version=__version__,
                scored_at=scored_at,
                record=record.to_dict(),
            )
        )
    return verdicts


Resolver = Callable[[str, str], "tuple[str, Baseline] | str"]


def score_record_set(
    record_set: RecordSet,
    resolve: Resolver,
    *,
    embedder: Embedder | None = None,
    progress: bool | None = None,
    fdr: float | None = None,
) -> ScoringResult:
    """Score every row of ``record_set``; ``resolve(model_version, input_class)``
    returns ``(registry_uri, baseline)`` or a reason why there is no baseline.

    With ``fdr`` (a target false discovery rate q in (0, 1)), Benjamini-Hochberg
    runs over the conformal p-values of *every* scored record of the batch, all
    groups together: each such verdict gets ``bh_flag`` and each group summary
    the batch-wide threshold and its number of flagged records. The ``verdict``
    itself stays ``p_value <= alpha``: a BH flag depends on the rest of the
    batch, a verdict only on its record and baseline.
    """
    if fdr is not None:
        fdr = check_fdr(fdr)
    scored_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    by_cell: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in record_set.records:
        by_cell[record.cell].append(record)
    resolved: dict[tuple[str, str], tuple[str, Baseline] | str] = {cell: resolve(*cell) for cell in by_cell}
    embedder = embedder or get_embedder()
    have = [cell for cell, r in resolved.items() if not isinstance(r, str)]
    if have:
        fingerprint = embedder.fingerprint
        for cell in have:
            uri_baseline = resolved[cell]
            assert not isinstance(uri_baseline, str)
            uri_baseline[1].check_embedder(fingerprint)  # refuse before anything is written
    to_embed = [r for cell in have for r in by_cell[cell]]
    embedded = embedder.embed([r.output for r in to_embed], progress=progress, desc="embedding audited outputs")
    by_row: dict[int, Verdict] = {}
    pooled: dict[int, np.ndarray] = {}
    batch_scores: dict[int, float] = {}
    residuals: dict[int, np.ndarray] = {}
    start = 0
    for cell in have:
        found = resolved[cell]
        assert not isinstance(found, str)  # `have` holds only resolved cells
        uri, baseline = found
        records = by_cell[cell]
        part = _slice(embedded, start, start + len(records))
        start += len(records)
        pooled.update(zip((r.row for r in records), part.pooled()))
        inputs = embed_inputs(embedder, [r.input for r in records]) if baseline.scorer["name"] == "combined" else None
        for verdict in judge(baseline, uri, records, part, scored_at=scored_at, inputs=inputs,
                             batch_scores=batch_scores, batch_residuals=residuals):
            by_row[verdict.row] = verdict
    for cell, result in resolved.items():
        if isinstance(result, str):
            for record in by_cell[cell]:
                by_row[record.row] = Verdict(
                    row=record.row, record_id=record.record_id, model_version=record.model_version,
                    input_class=record.input_class, verdict=NO_BASELINE, reason=result,
                    code_version=__version__, scored_at=scored_at, record=record.to_dict(),
                )
    for bad in record_set.invalid:
        by_row[bad.row] = _invalid_verdict(bad, scored_at)
    verdicts = [by_row[row.row] for row in record_set.rows]
    summaries = summarise(verdicts, resolved, embeddings=pooled, batch_scores=batch_scores, residuals=residuals)
    if fdr is not None:
        verdicts, summaries = apply_fdr(verdicts, summaries, fdr)
    return ScoringResult(verdicts=verdicts, summaries=summaries)


def apply_fdr(
    verdicts: Sequence[Verdict], summaries: Sequence[GroupSummary], q: float
) -> tuple[list[Verdict], list[GroupSummary]]:
    """Benjamini-Hochberg at ``q`` over every verdict that has a p-value (the whole batch)."""
    tested = [i for i, v in enumerate(verdicts) if v.p_value is not None]
    result = benjamini_hochberg(np.array([verdicts[i].p_value for i in tested], dtype=np.float64), q)
    out = list(verdicts)
    for i, flag in zip(tested, result.flags):
        out[i] = replace(out[i], bh_flag=bool(flag))
    batch = result.to_dict() | {"scope": "whole batch (all groups)", "procedure": "benjamini-hochberg"}
    groups = []
    for summary in summaries:
        members = [v for v in out if (v.model_version, v.input_class) == (summary.model_version, summary.input_class)]
        groups.append(replace(summary, fdr=batch | {"n_flagged_in_group": sum(1 for v in members if v.bh_flag)}))
    return out, groups


def _invalid_verdict(bad: InvalidRow, scored_at: str) -> Verdict:
    def text(name: str) -> str | None:
        value = bad.raw.get(name)
        return value if isinstance(value, str) and value.strip() else None

    return Verdict(
        row=bad.row, record_id=bad.record_id, model_version=text("model_version"),
        input_class=text("input_class"), verdict=INVALID,
        reason=f"The record could not be judged: {bad.reason}. Fix the record and score it again.",
        code_version=__version__, scored_at=scored_at,
        record={k: v for k, v in bad.raw.items() if isinstance(k, str)},
    )


def _slice(embedded: EmbeddedTexts, start: int, stop: int) -> EmbeddedTexts:
    mask = (embedded.owner >= start) & (embedded.owner < stop)
    return EmbeddedTexts(chunks=embedded.chunks[mask], owner=embedded.owner[mask] - start,
                         n_tokens=embedded.n_tokens[start:stop])


def summarise(
    verdicts: Sequence[Verdict],
    resolved: dict[tuple[str, str], tuple[str, Baseline] | str],
    *,
    embeddings: dict[int, np.ndarray] | None = None,
    batch_scores: dict[int, float] | None = None,
    residuals: dict[int, np.ndarray] | None = None,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = DEFAULT_SEED,
) -> list[GroupSummary]:
    """One summary per (model_version, input_class) group, in order of first appearance.

    Each group with scored outputs gets the batch tests of
    :func:`conformance.batch.batch_tests` (rank tests on the scores; MMD and
    energy permutation tests when ``embeddings``, pooled embeddings by verdict
    row, are given), combined by Bonferroni; the group's ``p_value`` is the
    combined one and ``tests`` holds each test's p-value, B and the seed.
    For a baseline that carries calibration residuals, the MMD and energy
    tests compare ``residuals`` (residual embeddings by verdict row, from
    :func:`judge`) with them instead of the pooled embeddings.
    """
    groups: dict[tuple[str | None, str | None], list[Verdict]] = {}
    for v in verdicts:
        groups.setdefault((v.model_version, v.input_class), []).append(v)
    out = []
    for (mv, ic), members in groups.items():
        counts = {name: sum(1 for v in members if v.verdict == name) for name in VERDICTS}
        found = resolved.get((mv, ic)) if mv is not None and ic is not None else None
        scored = [v.score for v in members if v.score is not None]
        if found is None or isinstance(found, str):
            reason = found if isinstance(found, str) else "no record of this group could be read"
            out.append(GroupSummary(mv, ic, len(members), counts, None, NO_BASELINE if found else INVALID,
                                    None, None, None, reason))
            continue
        uri, baseline = found
        if not scored:
            out.append(GroupSummary(mv, ic, len(members), counts, None, INVALID, None, uri, baseline.alpha,
                                    "no record of this group could be scored"))
            continue
        scored_members = [v for v in members if v.score is not None]
        batch_embeddings = None
        if embeddings is not None and all(v.row in embeddings for v in scored_members):
            batch_embeddings = np.stack([embeddings[v.row] for v in scored_members])
        batch_values = np.asarray(scored, dtype=np.float64)
        cal_scores, cal_embeddings = baseline.calibration_scores, baseline.calibration_embeddings
        unit_note = rule_note = embedding_note = ""
        embedding_kind = "pooled output embeddings"
        if (baseline.calibration_residuals is not None and residuals is not None
                and all(v.row in residuals for v in scored_members)):
            batch_embeddings = np.stack([residuals[v.row] for v in scored_members])
            cal_embeddings = baseline.calibration_residuals
            embedding_kind = "residual embeddings (pooled output embedding minus what its input predicts)"
            embedding_note = ("; MMD and energy compare what each output says beyond what its input predicts, "
                              "so that a batch about other topics is not a difference in itself")
        batch_groups: list[str] | None = None
        cal_groups: list[str] | None = None
        if baseline.calibration_prompt_keys is not None and baseline.calibration_scores_by_record is not None:
            # Every output on both sides; the permutation tests move whole prompts (conversations), since
            # outputs of one prompt are not independent: see batch_tests(groups=...).
            batch_groups = [_prompt_key(v) for v in scored_members]
            cal_groups = list(baseline.calibration_prompt_keys)
            cal_scores = np.asarray(baseline.calibration_scores_by_record, dtype=np.float64)
            if (baseline.batch_calibration_scores_by_record is not None and batch_scores is not None
                    and all(v.row in batch_scores for v in scored_members)):
                # The rank tests' own rule (conformance.combined.BATCH_COMBINATION), on both sides.
                batch_values = np.array([batch_scores[v.row] for v in scored_members], dtype=np.float64)
                cal_scores = np.asarray(baseline.batch_calibration_scores_by_record, dtype=np.float64)
                rule_note = ("; the two rank tests use a score that adds up small differences in every measured "
                             "property, which suits a batch better than the per-output score")
            unit_note = (f" (all outputs, those of one prompt kept together when the tests shuffle them: "
                         f"{len(set(batch_groups))} of the batch's prompts, "
                         f"{len(batch_groups)} outputs, against {len(set(cal_groups))} approved calibration prompts, "
                         f"{len(cal_groups)} outputs{rule_note})")
        result = batch_tests(batch_values, cal_scores, batch_embeddings,
                             cal_embeddings if batch_embeddings is not None else None,
                             n_permutations=n_permutations, seed=seed, groups=batch_groups,
                             calibration_groups=cal_groups)
        p = result.p_value
        verdict = OUT if p <= baseline.alpha else WITHIN
        each = ", ".join(f"{name.replace('_', ' ')} {value:.4g}" for name, value in result.p_values.items())
        reason = (
            f"The {len(scored)} scored outputs were compared as a batch with "
            f"approved calibration outputs{unit_note} by {len(result.p_values)} tests ({each}; permutation tests with "
            f"B={result.n_permutations}, seed {result.seed}{embedding_note}), combined by Bonferroni: p-value {p:.4g} "
            + ("<= alpha: as a batch, they are more unusual than approved outputs." if verdict == OUT
               else f"> alpha {baseline.alpha:g}: as a batch, no evidence they differ from approved outputs.")
        )
        tests = result.to_dict()
        if batch_embeddings is not None:
            tests["embeddings"] = embedding_kind
        out.append(GroupSummary(mv, ic, len(members), counts, p, verdict, result.description, uri, baseline.alpha,
                                reason, tests=tests))
    return out


def _prompt_key(verdict: Verdict) -> str:
    return prompt_key_of(verdict.record.get("prompt_id"), verdict.record.get("input", ""),
                         verdict.record.get("conversation_id"))
