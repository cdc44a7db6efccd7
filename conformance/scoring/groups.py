"""Batch verdicts: each (model_version, input_class) group of a scored batch tested against its baseline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from conformance.baseline.format import Baseline
from conformance.defaults import BATCH_SEED, PERMUTATIONS
from conformance.records import prompt_key_of
from conformance.stats.two_sample import batch_tests
from conformance.verdict import INVALID, NO_BASELINE, OUT, VERDICTS, WITHIN, GroupSummary, Verdict


def summarise(
    verdicts: Sequence[Verdict],
    resolved: dict[tuple[str, str], tuple[str, Baseline] | str],
    *,
    embeddings: dict[int, np.ndarray] | None = None,
    batch_scores: dict[int, float] | None = None,
    residuals: dict[int, np.ndarray] | None = None,
    n_permutations: int = PERMUTATIONS,
    seed: int = BATCH_SEED,
) -> list[GroupSummary]:
    """One summary per (model_version, input_class) group, in order of first appearance.

    Each group with scored outputs gets the batch tests of
    :func:`conformance.stats.two_sample.batch_tests` (rank tests on the scores; MMD and
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
        spec = baseline.spec
        if (spec.batch_embedding == "residual" and baseline.calibration_residuals is not None and residuals is not None
                and all(v.row in residuals for v in scored_members)):
            batch_embeddings = np.stack([residuals[v.row] for v in scored_members])
            cal_embeddings = baseline.calibration_residuals
            embedding_kind = "residual embeddings (pooled output embedding minus what its input predicts)"
            embedding_note = ("; MMD and energy compare what each output says beyond what its input predicts, "
                              "so that a batch about other topics is not a difference in itself")
        batch_groups: list[str] | None = None
        cal_groups: list[str] | None = None
        if (spec.batch_unit == "prompt" and baseline.calibration_prompt_keys is not None
                and baseline.calibration_scores_by_record is not None):
            # Every output on both sides; the permutation tests move whole prompts (conversations), since
            # outputs of one prompt are not independent: see batch_tests(groups=...).
            batch_groups = [_prompt_key(v) for v in scored_members]
            cal_groups = list(baseline.calibration_prompt_keys)
            cal_scores = np.asarray(baseline.calibration_scores_by_record, dtype=np.float64)
            if (spec.batch_score == "batch_rule" and baseline.batch_calibration_scores_by_record is not None
                    and batch_scores is not None
                    and all(v.row in batch_scores for v in scored_members)):
                # The rank tests' own rule (conformance.stats.combined.BATCH_COMBINATION), on both sides.
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
