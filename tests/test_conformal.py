"""The split-conformal guarantee, measured rather than assumed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from conformance.build import split_by_prompt
from conformance.conformal import calibration_support, conformal_p_values, min_calibration_size
from conformance.records import Record
from conformance.scores import knn_cosine_distances


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
