"""The split-conformal guarantee, measured rather than assumed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from conformance.baseline.fit import split_by_prompt
from conformance.stats.conformal import (
    calibration_support,
    conformal_p_values,
    min_calibration_size,
    prompt_weighted_p_values,
)
from conformance.records import Record
from conformance.stats.knn import knn_cosine_distances


def test_p_value_formula_pinned() -> None:
    cal = np.array([0.1, 0.2, 0.2, 0.4])
    # (1 + #{cal >= s}) / (n + 1)
    assert conformal_p_values(np.array([0.05, 0.2, 0.3, 0.5]), cal).tolist() == [1.0, 0.8, 0.4, 0.2]


def test_ties_count_against_the_output() -> None:
    # Every calibration score ties with the new one: p must be 1, never small.
    assert conformal_p_values(np.array([0.3]), np.full(50, 0.3)).tolist() == [1.0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=30),
)
def test_p_values_lie_in_unit_interval_and_shuffling_changes_nothing(cal: list[float], batch: list[float]) -> None:
    cal_sorted = np.sort(np.array(cal))
    p = conformal_p_values(np.array(batch), cal_sorted)
    assert np.all(p > 0) and np.all(p <= 1)
    assert p.min() >= 1 / (len(cal) + 1)
    order = np.random.default_rng(0).permutation(len(batch))
    assert np.array_equal(conformal_p_values(np.array(batch)[order], cal_sorted), p[order])


def test_unsorted_calibration_is_refused() -> None:
    with pytest.raises(ValueError, match="sorted"):
        conformal_p_values(np.array([0.1]), np.array([0.3, 0.1]))


@pytest.mark.parametrize("alpha, n", [(0.05, 19), (0.1, 9), (0.01, 99), (0.2, 4)])
def test_min_calibration_size(alpha: float, n: int) -> None:
    assert min_calibration_size(alpha) == n
    assert calibration_support(n, alpha).can_flag and not calibration_support(n - 1, alpha).can_flag


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5, -0.1])
def test_alpha_out_of_range_names_itself(alpha: float) -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        min_calibration_size(alpha)


def _cell(rng: np.random.Generator, n_prompts: int, per_prompt: int, dim: int = 16) -> tuple[list[Record], np.ndarray]:
    """Unit vectors around one centre per prompt: outputs of a prompt are alike."""
    centres = rng.normal(size=(n_prompts, dim))
    vectors, records = [], []
    for p in range(n_prompts):
        for j in range(per_prompt):
            v = centres[p] + 0.35 * rng.normal(size=dim)
            vectors.append(v / np.linalg.norm(v))
            records.append(Record(row=len(records) + 1, record_id=f"r{p}-{j}", model_version="m", input_class="c",
                                  input=f"prompt {p}", output=f"o{p}-{j}", extras={"prompt_id": f"p{p}"}))
    return records, np.array(vectors)


def _flag_rate(draws: int, *, alpha: float, n_prompts: int, per_prompt: int, by_prompt: bool, seed: int) -> float:
    rng = np.random.default_rng(seed)
    flagged = 0
    for d in range(draws):
        records, vectors = _cell(rng, n_prompts + 1, per_prompt)
        test_index = len(records) - 1  # one output of a fresh prompt, as an audited output would be
        records, test_vec = records[: -per_prompt], vectors[test_index : test_index + 1]
        if by_prompt:
            split = split_by_prompt(records, calibration_fraction=0.5, seed=d)
            fit = [r.row - 1 for r in split.fit]
            cal = [r.row - 1 for r in split.calibration]
        else:  # the mistake the prompt split exists to prevent
            order = rng.permutation(len(records))
            fit, cal = list(order[: len(order) // 2]), list(order[len(order) // 2 :])
        k = 3
        cal_scores = np.sort(knn_cosine_distances(vectors[cal], vectors[fit], k)[0])
        score = knn_cosine_distances(test_vec, vectors[fit], k)[0]
        flagged += int(conformal_p_values(score, cal_scores)[0] <= alpha)
    return flagged / draws


def _ci(rate: float, draws: int, level: float = 0.99) -> tuple[float, float]:
    k = round(rate * draws)
    lo = stats.beta.ppf((1 - level) / 2, k, draws - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(1 - (1 - level) / 2, k + 1, draws - k)
    return lo, hi


@pytest.mark.slow
def test_false_alarm_rate_matches_alpha_exactly_with_the_plus_ones() -> None:
    # 38 single-output prompts -> 19 calibration scores. At alpha = 0.05 the exact
    # flag rate is floor(0.05 * 20) / 20 = 0.05. Dropping the "+1" in the
    # numerator would double it to 0.10; dropping it in the denominator would
    # flag with p = 1/19 > 0.05 never. The 99% interval separates all three.
    draws = 3000
    rate = _flag_rate(draws, alpha=0.05, n_prompts=38, per_prompt=1, by_prompt=True, seed=1)
    lo, hi = _ci(rate, draws)
    assert lo <= 0.05 <= hi, (rate, lo, hi)
    assert hi < 0.08 and lo > 0.03


@pytest.mark.slow
def test_prompt_split_is_what_keeps_the_level() -> None:
    # Several outputs per prompt: splitting by prompt keeps the rate at alpha;
    # a record-level split puts near-duplicates of calibration outputs in the
    # fit bank, calibration scores become too small and the rate explodes.
    draws = 800
    good = _flag_rate(draws, alpha=0.1, n_prompts=30, per_prompt=4, by_prompt=True, seed=2)
    lo, hi = _ci(good, draws)
    assert lo <= 0.1 and hi >= floor_rate(0.1, 60), good
    bad = _flag_rate(draws, alpha=0.1, n_prompts=30, per_prompt=4, by_prompt=False, seed=2)
    assert _ci(bad, draws)[0] > 1.5 * 0.1, bad  # measured: 0.26 with this seed


def floor_rate(alpha: float, n: int) -> float:
    return np.floor(alpha * (n + 1)) / (n + 1) * 0.8  # allow for the spread of n_cal across splits


# -- prompt-level calibration ------------------------------------------------------------------


def _clustered_flag_rates(
    draws: int, *, alpha: float, n_prompts: int, per_prompt: int, seed: int, within: float = 1.0
) -> tuple[float, float]:
    """False-alarm rates of a new prompt's output: every output as a unit, and prompt-weighted.

    Each prompt has its own difficulty (a random offset twice the spread within it), as real
    prompts do: the outputs of one prompt score alike."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{k}" for k in range(n_prompts)], per_prompt).tolist()
    per_output = weighted = 0
    for _ in range(draws):
        cal = np.repeat(2.0 * rng.normal(size=n_prompts), per_prompt) + within * rng.normal(size=n_prompts * per_prompt)
        new = 2.0 * rng.normal(size=1) + within * rng.normal(size=1)  # one output of a fresh prompt
        per_output += int(conformal_p_values(new, np.sort(cal))[0] <= alpha)
        weighted += int(prompt_weighted_p_values(new, cal, groups)[0] <= alpha)
    return per_output / draws, weighted / draws


def test_few_prompts_inflate_per_output_p_values_and_prompt_weighting_refuses_to_flag() -> None:
    # 3 calibration prompts x 64 outputs, as in a class cell of MT-bench pooling 32 models: the
    # 192 outputs treated as exchangeable with a new prompt's output flag 0.136 at alpha 0.05
    # (measured; docs/validation.md measured 0.104 on the real cells). Weighing prompts, the
    # smallest p-value is 1/4: nothing is flagged, which is why `build` refuses such a cell.
    per_output, weighted = _clustered_flag_rates(2000, alpha=0.05, n_prompts=3, per_prompt=64, seed=3)
    assert _ci(per_output, 2000)[0] > 0.1, per_output
    assert weighted == 0.0


@pytest.mark.slow
def test_prompt_weighted_level_is_exact_for_identical_outputs_and_conservative_otherwise() -> None:
    draws = 4000
    # Outputs of a prompt all alike: the new output's own prompt really does count as one whole
    # prompt at or above it, and the rate is exactly 1/21 (measured 0.0465).
    _, exact = _clustered_flag_rates(draws, alpha=0.05, n_prompts=20, per_prompt=10, seed=3, within=0.0)
    lo, hi = _ci(exact, draws)
    assert lo <= 1 / 21 <= hi, (exact, lo, hi)
    # Outputs of a prompt spread as much as half the prompts' spread: still at most alpha, and
    # conservative with few prompts (measured 0.015 with 20 prompts, 0.038 with 60), since the
    # new output's prompt counts whole although the output sits inside it.
    for n_prompts, measured_max in ((20, 0.03), (60, 0.05)):
        per_output, weighted = _clustered_flag_rates(draws, alpha=0.05, n_prompts=n_prompts, per_prompt=10,
                                                     seed=3, within=1.0)
        lo, hi = _ci(weighted, draws)
        assert hi < measured_max and weighted < per_output, (n_prompts, weighted, per_output)


def test_prompt_weighted_equals_split_conformal_with_one_output_per_prompt() -> None:
    rng = np.random.default_rng(4)
    cal, new = rng.normal(size=40), rng.normal(size=25)
    assert np.allclose(prompt_weighted_p_values(new, cal, [f"p{i}" for i in range(40)]),
                       conformal_p_values(new, np.sort(cal)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.integers(0, 6)), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20),
)
def test_prompt_weighted_p_values_lie_in_their_range(cal: list[tuple[float, int]], batch: list[float]) -> None:
    scores = np.array([c for c, _ in cal])
    groups = [f"g{g}" for _, g in cal]
    k = len(set(groups))
    p = prompt_weighted_p_values(np.array(batch), scores, groups)
    assert np.all(p >= 1 / (k + 1) - 1e-12) and np.all(p <= 1)
    # An output tied with or below every calibration score gets p = 1.
    assert prompt_weighted_p_values(np.array([scores.min()]), scores, groups)[0] == 1.0


def _sampled_and_weighted_rates(
    draws: int, *, alpha: float, n_prompts: int, per_prompt: int, shift: float, seed: int
) -> tuple[float, float]:
    """Flag rates of a fresh prompt's output (moved up by ``shift``) under the two p-value rules of
    ``build --calibration-method``: one calibration output per prompt, drawn as ``build`` draws it
    (:func:`one_per_prompt`, a seeded hash of the record id), and every output with prompts weighing the same."""
    from conformance.stats.conformal import one_per_prompt

    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{k}" for k in range(n_prompts)], per_prompt).tolist()
    ids = [f"r{i}" for i in range(len(groups))]
    sampled = weighted = 0
    for draw in range(draws):
        cal = np.repeat(2.0 * rng.normal(size=n_prompts), per_prompt) + rng.normal(size=n_prompts * per_prompt)
        new = 2.0 * rng.normal(size=1) + rng.normal(size=1) + shift
        used = one_per_prompt(groups, ids, seed=draw)
        sampled += int(conformal_p_values(new, np.sort(cal[used]))[0] <= alpha)
        weighted += int(prompt_weighted_p_values(new, cal, groups)[0] <= alpha)
    return sampled / draws, weighted / draws


@pytest.mark.slow
def test_one_output_per_prompt_is_exact_and_beats_weighting_with_few_prompts() -> None:
    # 25 calibration prompts of two outputs each, as a one-model MT-bench cell. One drawn output per
    # prompt gives the usual split-conformal p-value over 25 exchangeable units: the rate is exactly
    # floor(alpha * 26) / 26 = 1/26 (measured 0.043 on 4,000 draws). Weighting every output counts the new
    # output's own prompt whole, so it must beat all 50, not 25: conservative (measured 0.025; 0.022 on
    # MT-bench) and less powerful against the same shift (measured 0.23 against 0.29 at a shift of 3 spreads).
    draws = 4000
    sampled, weighted = _sampled_and_weighted_rates(draws, alpha=0.05, n_prompts=25, per_prompt=2, shift=0.0, seed=5)
    lo, hi = _ci(sampled, draws)
    assert lo <= 1 / 26 <= hi, (sampled, lo, hi)
    assert _ci(weighted, draws)[1] < 1 / 26, weighted
    shifted_sampled, shifted_weighted = _sampled_and_weighted_rates(
        draws, alpha=0.05, n_prompts=25, per_prompt=2, shift=3.0, seed=6)
    assert _ci(shifted_sampled, draws)[0] > _ci(shifted_weighted, draws)[1], (shifted_sampled, shifted_weighted)


def test_reference_levels_are_the_rates_on_iid_scores() -> None:
    # What `build --calibration-method auto` compares: each rule's rate when outputs of one prompt are no
    # more alike than any two. Measured on i.i.d. scores, for unequal prompt sizes (the Monte Carlo branch).
    from conformance.stats.conformal import choose_calibration_method, sampled_level, weighted_reference_level

    rng = np.random.default_rng(7)
    sizes = [1, 2, 2, 3, 5] * 6  # 30 prompts, 78 outputs
    groups = [f"p{k}" for k, n in enumerate(sizes) for _ in range(n)]
    draws, alpha = 6000, 0.1
    hits = 0
    for _ in range(draws):
        cal = rng.normal(size=len(groups))
        hits += int(prompt_weighted_p_values(rng.normal(size=1), cal, groups)[0] <= alpha)
    reference = weighted_reference_level(sizes, alpha)
    lo, hi = _ci(hits / draws, draws)
    assert lo <= reference <= hi, (hits / draws, reference)
    method, levels = choose_calibration_method(sizes, alpha)
    assert levels["sample"] == sampled_level(30, alpha) == 3 / 31
    assert method == ("weighted" if reference >= 3 / 31 else "sample")
    assert choose_calibration_method([1] * 30, alpha)[0] == "sample"  # one output per prompt: the same p-value


@pytest.mark.parametrize("alpha", [pytest.param(0.01, marks=pytest.mark.slow),
                                   pytest.param(0.03, marks=pytest.mark.slow), 0.05, 0.1, 0.2])
def test_attainable_calibration_size_is_the_largest_count_with_the_best_level(alpha: float) -> None:
    from conformance.stats.conformal import attainable_calibration_size, sampled_level

    lowest = min_calibration_size(alpha)
    small = {m: calibration_support(m, alpha).is_small for m in range(1, 260)}
    for n in range(1, 260):
        k = attainable_calibration_size(n, alpha)
        if n < lowest:
            assert k == n  # nothing to round: build refuses the cell anyway
            continue
        # Rounding may not make a cell that needed no small-calibration warning need one.
        allowed = [m for m in range(lowest, n + 1) if small[n] or not small[m]]
        best = max(sampled_level(m, alpha) for m in allowed)
        assert k in allowed and sampled_level(k, alpha) == pytest.approx(best, abs=1e-12), (alpha, n, k)
        assert all(sampled_level(m, alpha) < best - 1e-12 for m in allowed if m > k), (alpha, n, k)
    # Pinned: MT-bench's 25 calibration conversations at 0.05 (1/26, already warned of) become 19 (1/20); the
    # quickstart's 32 (not warned of: 95th percentile 0.089) become 29, the fewest without the warning.
    assert [attainable_calibration_size(n, 0.05) for n in (18, 19, 25, 32, 39, 45)] == [18, 19, 19, 29, 39, 39]


def test_plan_rounds_the_calibration_part_only_where_it_raises_the_level() -> None:
    from conformance.baseline.fit import plan_cell

    records, _ = _cell(np.random.default_rng(3), 55, 2)
    plan = lambda **kw: plan_cell(records, alpha=kw.pop("alpha", 0.05), calibration_fraction=25 / 55,  # noqa: E731
                                  seed=4, delta=kw.pop("delta", None), **kw)
    prompts = lambda part: {r.prompt_key for r in part}  # noqa: E731
    whole = plan(round_calibration=False)
    rounded = plan()
    assert len(prompts(whole.split.calibration)) == 25 and whole.rounded_from is None
    assert len(prompts(rounded.split.calibration)) == 19 and rounded.rounded_from == 25
    assert rounded.support.expected_false_alarm_rate == pytest.approx(0.05)
    # Nothing is lost: the six prompts moved went to the fit part, and the 19 kept are the split's own.
    assert prompts(rounded.split.calibration) < prompts(whole.split.calibration)
    assert sorted(r.row for r in rounded.split.fit + rounded.split.calibration) == [r.row for r in records]
    assert len(rounded.calibration_used) == 19
    # The conditional guarantee gains from every prompt: no rounding with delta (at 0.2, 25 -> 24 without).
    assert len(prompts(plan(alpha=0.2).split.calibration)) == 24
    assert len(prompts(plan(alpha=0.2, delta=0.2).split.calibration)) == 25
    # At 0.10, 25 prompts need no warning and 22 is the fewest that keep it so: `weighted` reaches 4/51 with 25
    # prompts of two outputs and 3/45 with 22, so it keeps 25; `auto` rounds to 22, where `sample` reaches 2/23.
    assert plan(alpha=0.1, calibration_method="weighted").rounded_from is None
    assert len(prompts(plan(alpha=0.1, calibration_method="auto").split.calibration)) == 22


@pytest.mark.slow
def test_rounded_calibration_reaches_alpha_where_the_fraction_reaches_only_one_in_26() -> None:
    # 55 prompts of two outputs split as `build` splits them (fraction 25/55), a fresh prompt's output scored with
    # one drawn calibration output per prompt; new data every draw, the split fixed (any fixed split keeps the
    # exchangeability). Unrounded the rate is 1/26 = 0.038; rounded to 19 prompts it is 0.05 exactly. Rounding to
    # a count between 20 and 38 would give 1/(K+1) < 0.05 and fail the first assertion.
    from conformance.baseline.fit import plan_cell

    records, _ = _cell(np.random.default_rng(0), 55, 2)
    draws = 4000
    rates = {}
    for round_calibration in (True, False):
        cell = plan_cell(records, alpha=0.05, calibration_fraction=25 / 55, seed=2, delta=None,
                         round_calibration=round_calibration)
        fit = [r.row - 1 for r in cell.split.fit]
        cal = [cell.split.calibration[i].row - 1 for i in cell.calibration_used]
        rng = np.random.default_rng(11)
        flagged = 0
        for _ in range(draws):
            centres = rng.normal(size=(56, 16))
            vectors = np.repeat(centres, 2, axis=0) + 0.35 * rng.normal(size=(112, 16))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            cal_scores = np.sort(knn_cosine_distances(vectors[cal], vectors[fit], 3)[0])
            score = knn_cosine_distances(vectors[-1:], vectors[fit], 3)[0]
            flagged += int(conformal_p_values(score, cal_scores)[0] <= 0.05)
        rates[round_calibration] = flagged / draws
    lo, hi = _ci(rates[True], draws)
    assert lo <= 0.05 <= hi and lo > 1 / 26, rates
    lo, hi = _ci(rates[False], draws)
    assert lo <= 1 / 26 <= hi and hi < 0.05, rates
