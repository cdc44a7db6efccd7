"""Batch verdicts: each (model_version, input_class) group of a scored batch tested against its baseline."""

from __future__ import annotations

from collections.abc import Sequence
from array import array
from dataclasses import dataclass

import numpy as np

from conformance.baseline.format import Baseline
from conformance.defaults import BATCH_SEED, PERMUTATIONS
from conformance.records import prompt_key_of
from conformance.scoring.reasons import batch_conclusion, conditional_conclusion, score_shift
from conformance.scoring.reservoir import PromptReservoir, priority
from conformance.stats.block_ranks import streamed_batch_tests
from conformance.stats.conditional_batch import STYLE_STATISTICS, conditional_batch_test
from conformance.stats.style import style_matrix
from conformance.stats.two_sample import MAX_PERMUTATION_BATCH, batch_tests
from conformance.verdict import INVALID, NO_BASELINE, OUT, VERDICTS, WITHIN, GroupSummary, Verdict


@dataclass
class _Item:
    """What the batch tests need of one scored output."""

    score: float
    batch_score: float | None
    embedding: np.ndarray | None
    residual: np.ndarray | None
    #: The input's pooled embedding and the output's descriptors, one row (the conditional batch test's).
    features: np.ndarray | None = None
    #: The output's style counts, a ``(2, nnz)`` array of columns and values
    #: (:func:`~conformance.stats.style.style_rows`), for a conditional batch test whose baseline keeps its reference's.
    style: np.ndarray | None = None


class GroupAccumulator:
    """One (model_version, input_class) group of a scored batch, fed verdict by verdict in bounded memory.

    Counts every verdict; keeps, of the scored outputs, a seeded reservoir of whole prompts
    (:class:`~conformance.scoring.reservoir.PromptReservoir`, at most ``max_outputs`` outputs) with each
    output's score, batch-rule score and embeddings, and, for a baseline without calibration prompt keys,
    every score (a float per output) for the rank tests. :meth:`summary` runs the batch tests on them. A
    batch of at most ``max_outputs`` outputs is kept whole, so its tests are those of the whole batch.
    """

    def __init__(self, model_version: str | None, input_class: str | None, *,
                 max_outputs: int = MAX_PERMUTATION_BATCH, seed: int = BATCH_SEED) -> None:
        self.model_version, self.input_class = model_version, input_class
        self.n = 0
        self.counts = {name: 0 for name in VERDICTS}
        #: Per scored output, for the rank tests: its score under the batch tests' own rule when it has one,
        #: else its score (12 bytes with its prompt's code, the top 32 bits of its reservoir priority).
        self.scores = array("d")
        self.keys = array("I")
        self.reservoir = PromptReservoir(max_outputs=max_outputs, seed=seed)
        self.missing = {"embedding": 0, "batch_score": 0, "residual": 0, "features": 0, "style": 0}

    def add(self, verdict: Verdict, *, embedding: np.ndarray | None = None, batch_score: float | None = None,
            residual: np.ndarray | None = None, features: np.ndarray | None = None,
            style: np.ndarray | None = None) -> None:
        self.n += 1
        self.counts[verdict.verdict] += 1
        if verdict.score is None:
            return
        self.scores.append(float(verdict.score if batch_score is None else batch_score))
        key = _prompt_key(verdict)
        self.keys.append(priority(self.reservoir.seed, key) >> 32)
        for name, value in (("embedding", embedding), ("batch_score", batch_score), ("residual", residual),
                            ("features", features), ("style", style)):
            self.missing[name] += value is None
        # Copies: a row of a chunk's array would keep the whole array alive while the row is in the reservoir.
        self.reservoir.add(key, _Item(
            float(verdict.score), batch_score, None if embedding is None else np.array(embedding, copy=True),
            None if residual is None else np.array(residual, copy=True),
            None if features is None else np.array(features, copy=True),
            None if style is None else np.array(style, copy=True)))

    def merge(self, other: GroupAccumulator) -> None:
        """Add the verdicts ``other`` was fed (the same group, rows that come after this one's): the result
        is the accumulator of both, as if fed in one pass (see :meth:`PromptReservoir.merge`)."""
        if (other.model_version, other.input_class) != (self.model_version, self.input_class):
            raise ValueError(f"cannot merge group ({other.model_version}, {other.input_class}) into "
                             f"({self.model_version}, {self.input_class})")
        self.n += other.n
        for name, count in other.counts.items():
            self.counts[name] += count
        self.scores.extend(other.scores)
        self.keys.extend(other.keys)
        for name, count in other.missing.items():
            self.missing[name] += count
        self.reservoir.merge(other.reservoir)

    def summary(self, found: tuple[str, Baseline] | str | None, *, n_permutations: int = PERMUTATIONS,
                seed: int = BATCH_SEED) -> GroupSummary:
        mv, ic, counts = self.model_version, self.input_class, dict(self.counts)
        if found is None or isinstance(found, str):
            reason = found if isinstance(found, str) else "no record of this group could be read"
            return GroupSummary(mv, ic, self.n, counts, None, NO_BASELINE if found else INVALID, None, None, None,
                                reason)
        uri, baseline = found
        if not self.scores:
            return GroupSummary(mv, ic, self.n, counts, None, INVALID, None, uri, baseline.alpha,
                                "no record of this group could be scored")
        if (baseline.spec.batch_test == "conditional" and baseline.batch_reference_inputs is not None
                and self.missing["features"] == 0 and self.missing["embedding"] == 0):
            return self._conditional_summary(uri, baseline, n_permutations=n_permutations, seed=seed)
        kept = self.reservoir.kept()
        items = [item for _, item in kept]
        n_scored = len(self.scores)
        spec = baseline.spec
        cal_scores, cal_embeddings = baseline.calibration_scores, baseline.calibration_embeddings
        batch_embeddings = None
        if self.missing["embedding"] == 0:
            batch_embeddings = np.stack([i.embedding for i in items])
        unit_note = rule_note = embedding_note = reservoir_note = ""
        embedding_kind = "pooled output embeddings"
        if (spec.batch_embedding == "residual" and baseline.calibration_residuals is not None
                and self.missing["residual"] == 0):
            batch_embeddings = np.stack([i.residual for i in items])
            cal_embeddings = baseline.calibration_residuals
            embedding_kind = "residual embeddings (pooled output embedding minus what its input predicts)"
            embedding_note = ("; MMD and energy compare what each output says beyond what its input predicts, "
                              "so that a batch about other topics is not a difference in itself")
        if not self.reservoir.complete:
            ranked = ("every output" if n_scored <= RANK_OUTPUTS else
                      f"a seeded sample of whole prompts of at most {RANK_OUTPUTS:,} outputs")
            reservoir_note = (f"; the rank tests used {ranked}, MMD and energy a seeded sample of whole "
                              f"prompts ({self.reservoir.n_kept} of the {n_scored} outputs)")
        if (spec.batch_unit == "prompt" and baseline.calibration_prompt_keys is not None
                and baseline.calibration_scores_by_record is not None):
            # Every kept output on both sides; the permutation tests move whole prompts (conversations), since
            # outputs of one prompt are not independent: see batch_tests(groups=...).
            batch_groups = [key for key, _ in kept]
            cal_groups = list(baseline.calibration_prompt_keys)
            batch_values = np.array([i.score for i in items], dtype=np.float64)
            cal_scores = np.asarray(baseline.calibration_scores_by_record, dtype=np.float64)
            if (spec.batch_score == "batch_rule" and baseline.batch_calibration_scores_by_record is not None
                    and self.missing["batch_score"] == 0):
                # The rank tests' own rule (conformance.stats.combined.BATCH_COMBINATION), on both sides.
                batch_values = np.array([i.batch_score for i in items], dtype=np.float64)
                cal_scores = np.asarray(baseline.batch_calibration_scores_by_record, dtype=np.float64)
                rule_note = ("; the two rank tests use a score that adds up small differences in every measured "
                             "property, which suits a batch better than the per-output score")
            tested = (f"{len(set(batch_groups))} of the batch's prompts, {len(batch_groups)} outputs"
                      if self.reservoir.complete else f"{n_scored} outputs")
            unit_note = (f" (all outputs, those of one prompt kept together when the tests shuffle them: "
                         f"{tested}, against {len(set(cal_groups))} approved calibration prompts, "
                         f"{len(cal_groups)} outputs{rule_note}{reservoir_note})")
            if self.reservoir.complete or 0 < self.missing["batch_score"] < n_scored:
                result = batch_tests(batch_values, cal_scores, batch_embeddings,
                                     cal_embeddings if batch_embeddings is not None else None,
                                     n_permutations=n_permutations, seed=seed, groups=batch_groups,
                                     calibration_groups=cal_groups, max_batch=max(2, self.reservoir.n_kept))
                shift = score_shift(batch_values, cal_scores)
            else:
                # Larger than the reservoir: the rank tests on every output (up to RANK_OUTPUTS, whole prompts
                # in the reservoir's order beyond), MMD and energy on the reservoir.
                every, codes = _rank_sample(np.frombuffer(self.scores, dtype=np.float64),
                                            np.frombuffer(self.keys, dtype=np.uint32))
                result = streamed_batch_tests(
                    every, codes, cal_scores, cal_groups,
                    sample_values=batch_values, sample_groups=batch_groups, sample_embeddings=batch_embeddings,
                    calibration_sample_values=cal_scores,
                    calibration_embeddings=cal_embeddings if batch_embeddings is not None else None,
                    n_permutations=n_permutations, seed=seed)
                shift = score_shift(every, cal_scores)
        else:
            # A baseline without calibration prompt keys (format 1): the rank tests on every score, the
            # embedding tests on the reservoir.
            result = batch_tests(np.asarray(self.scores, dtype=np.float64), cal_scores, batch_embeddings,
                                 cal_embeddings if batch_embeddings is not None else None,
                                 n_permutations=n_permutations, seed=seed, embedding_sample=True)
            shift = score_shift(np.asarray(self.scores, dtype=np.float64), cal_scores)
        p = result.p_value
        verdict = OUT if p <= baseline.alpha else WITHIN
        each = ", ".join(f"{name.replace('_', ' ')} {value:.4g}" for name, value in result.p_values.items())
        reason = (
            f"The {n_scored} scored outputs were compared as a batch with "
            f"approved calibration outputs{unit_note} by {len(result.p_values)} tests ({each}; permutation tests with "
            f"B={result.n_permutations}, seed {result.seed}{embedding_note}), combined by Bonferroni: p-value {p:.4g} "
            + ("<= alpha: " if verdict == OUT else f"> alpha {baseline.alpha:g}: ")
            + batch_conclusion(result.p_values, baseline.alpha, shift=shift)
        )
        tests = result.to_dict() | {"n_batch": n_scored, "reservoir": self.reservoir.to_dict()}
        if batch_embeddings is not None:
            tests["embeddings"] = embedding_kind
        return GroupSummary(mv, ic, self.n, counts, p, verdict, result.description, uri, baseline.alpha, reason,
                            tests=tests)


    def _conditional_summary(self, uri: str, baseline: Baseline, *, n_permutations: int, seed: int) -> GroupSummary:
        """The batch verdict of the conditional test (:mod:`conformance.stats.conditional_batch`): the reservoir's
        whole prompts against every approved output the baseline keeps."""
        assert (baseline.batch_reference_inputs is not None and baseline.batch_reference_outputs is not None
                and baseline.batch_reference_descriptors is not None
                and baseline.batch_reference_prompt_keys is not None)
        kept = self.reservoir.kept()
        keys = [key for key, _ in kept]
        dim = int(baseline.batch_reference_inputs.shape[1])
        features = np.stack([item.features for _, item in kept])  # type: ignore[misc]
        outputs = np.stack([item.embedding for _, item in kept])  # type: ignore[misc]
        reference_style = baseline.batch_reference_style
        style = None
        if reference_style is not None and self.missing.get("style", 0) == 0:
            style = style_matrix([item.style for _, item in kept])  # type: ignore[misc]
        else:
            reference_style = None
        spec = baseline.spec
        statistics = [name for name in spec.batch_statistics if name not in STYLE_STATISTICS or style is not None]
        result = conditional_batch_test(
            features[:, :dim], outputs, features[:, dim:], keys, baseline.batch_reference_inputs,
            baseline.batch_reference_outputs, baseline.batch_reference_descriptors,
            baseline.batch_reference_prompt_keys, n_permutations=n_permutations, seed=seed,
            descriptor_names=spec.batch_descriptors, style=style, reference_style=reference_style,
            statistics=statistics, combination=spec.batch_combination)
        n_stat = len(result.p_values)
        counted = f"{n_stat} statistics" if n_stat > 1 else "one statistic"
        combined_by = f", combined by {_COMBINATION_WORDS[result.combination]}" if n_stat > 1 else ""
        p, alpha, n_scored = result.p_value, baseline.alpha, len(self.scores)
        verdict = OUT if p <= alpha else WITHIN
        each = ", ".join(f"{name.replace('_', ' ')} {value:.4g}" for name, value in result.p_values.items())
        sampled = ("" if self.reservoir.complete else
                   f" (a seeded sample of whole prompts: {self.reservoir.n_kept} of the {n_scored} outputs)")
        reason = (
            f"The {n_scored} scored outputs{sampled}, {result.n_batch_prompts} prompts, were compared as a batch "
            f"with every approved output the baseline keeps ({result.n_reference_prompts} prompts, "
            f"{result.n_reference} outputs), each reduced to what it says and how it is written beyond what its "
            f"input predicts, by {counted} ({each}; permutations of whole prompts, "
            f"B={result.n_permutations}, seed {result.seed}){combined_by}: p-value {p:.4g} "
            + ("<= alpha: " if verdict == OUT else f"> alpha {alpha:g}: ")
            + conditional_conclusion(p, result.p_values, result.shifts, alpha))
        tests = result.to_dict() | {"test": "conditional", "n_batch": n_scored, "n_tested": result.n_batch,
                                    "reservoir": self.reservoir.to_dict()}
        description = (f"{n_stat} MMD permutation test{'s' if n_stat > 1 else ''} on input-conditional features ("
                       + "; ".join(_STATISTIC_VIEWS[name] for name in result.p_values)
                       + f") against every approved output the baseline keeps, whole prompts permuted{combined_by}")
        return GroupSummary(self.model_version, self.input_class, self.n, dict(self.counts), p, verdict, description,
                            uri, alpha, reason, tests=tests)


#: How the conditional test's combinations and statistics are named in a group's reason and description.
_COMBINATION_WORDS = {"minP": "minP", "fisher": "Fisher's method"}
_STATISTIC_VIEWS = {"residual_mmd": "residual embeddings", "descriptor_mmd": "descriptor residuals",
                    "joint_mmd": "residual embeddings and descriptor residuals together",
                    "style_mmd": "style residuals", "shape_mmd": "shape residuals"}

#: The rank tests of a large group use every output up to this many; beyond, the whole prompts of smallest
#: reservoir priority up to this many outputs (so that their working memory stays bounded).
RANK_OUTPUTS = 100_000


def _rank_sample(values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.size <= RANK_OUTPUTS:
        return values, codes
    unique, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)  # in priority order
    take = np.cumsum(counts) <= RANK_OUTPUTS
    take[0] = True
    keep = take[inverse]
    return values[keep], codes[keep]


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
    """One summary per (model_version, input_class) group, in order of first appearance, from verdicts alone.

    Verdicts carry no input-conditional features, so a baseline's conditional batch test cannot run here:
    :func:`conformance.scoring.score_record_set` (and ``score``) gives it; this function gives every group the
    calibration-part tests, as baselines built before 0.6.0 have them. Each group with scored outputs gets the
    batch tests of
    :func:`conformance.stats.two_sample.batch_tests` (rank tests on the scores; MMD and
    energy permutation tests when ``embeddings``, pooled embeddings by verdict
    row, are given), combined by Bonferroni; the group's ``p_value`` is the
    combined one and ``tests`` holds each test's p-value, B, the seed and the reservoir of
    whole prompts tested (:class:`GroupAccumulator`).
    For a baseline that carries calibration residuals, the MMD and energy
    tests compare ``residuals`` (residual embeddings by verdict row, from
    :func:`judge`) with them instead of the pooled embeddings.
    """
    groups: dict[tuple[str | None, str | None], GroupAccumulator] = {}
    for v in verdicts:
        cell = (v.model_version, v.input_class)
        acc = groups.get(cell)
        if acc is None:
            acc = groups[cell] = GroupAccumulator(*cell, seed=seed)
        acc.add(v, embedding=None if embeddings is None else embeddings.get(v.row),
                batch_score=None if batch_scores is None else batch_scores.get(v.row),
                residual=None if residuals is None else residuals.get(v.row))
    return [acc.summary(resolved.get(cell) if cell[0] is not None and cell[1] is not None else None,  # type: ignore[arg-type]
                        n_permutations=n_permutations, seed=seed)
            for cell, acc in groups.items()]


def _prompt_key(verdict: Verdict) -> str:
    return prompt_key_of(verdict.record.get("prompt_id"), verdict.record.get("input", ""),
                         verdict.record.get("conversation_id"))
