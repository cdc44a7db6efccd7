"""Batch tests: exact permutation p-values, level on null draws, power, invariances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from conformance.stats.combined import CombinedScorer
from conformance.stats.two_sample import (
    TESTS,
    batch_tests,
    embedding_permutation_p_values,
    ks_p_value,
    mann_whitney_p_value,
)

B = 1000


def _upper(k: int, n: int, level: float = 0.99) -> float:
    """Upper end of the two-sided Clopper-Pearson interval for k successes in n."""
    return 1.0 if k == n else float(stats.beta.ppf(1 - (1 - level) / 2, k + 1, n - k))


def _lower(k: int, n: int, level: float = 0.99) -> float:
    return 0.0 if k == 0 else float(stats.beta.ppf((1 - level) / 2, k, n - k + 1))


def test_permutation_p_value_counts_the_observed_labelling() -> None:
    # Completely separated samples: no permutation beats the observed one, so
    # p is exactly 1/(B+1) -- never 0, which is what dropping the +1 gives.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(15, 4)) + 20.0
    y = rng.normal(size=(40, 4))
    p = embedding_permutation_p_values(x, y, n_permutations=B, seed=1)
    assert p == {"mmd": 1 / (B + 1), "energy": 1 / (B + 1)}


def test_identical_samples_give_p_one() -> None:
    # Every permutation ties with the observed statistic; ties count as >=.
    x = np.ones((5, 3))
    y = np.ones((12, 3))
    assert embedding_permutation_p_values(x, y, n_permutations=B) == {"mmd": 1.0, "energy": 1.0}


def test_seed_is_recorded_and_reproduces() -> None:
    rng = np.random.default_rng(3)
    args = (rng.normal(size=20), rng.normal(size=80), rng.normal(size=(20, 8)), rng.normal(size=(80, 8)))
    first, again = batch_tests(*args, seed=7), batch_tests(*args, seed=7)
    assert first == again and first.seed == 7 and first.n_permutations == B
    assert first.to_dict()["combination"] == "bonferroni"


def test_bonferroni_combination() -> None:
    rng = np.random.default_rng(4)
    result = batch_tests(rng.normal(size=20), rng.normal(size=80), rng.normal(size=(20, 8)), rng.normal(size=(80, 8)))
    assert set(result.p_values) == set(TESTS)
    assert result.p_value == min(1.0, 4 * min(result.p_values.values()))
    only_ranks = batch_tests(rng.normal(size=20), rng.normal(size=80))
    assert set(only_ranks.p_values) == {"mann_whitney", "kolmogorov_smirnov"}
    assert only_ranks.p_value == min(1.0, 2 * min(only_ranks.p_values.values()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_permutations": 999}, "n_permutations must be an integer >= 1000, got 999"),
        ({"max_batch": 1}, "max_batch must be an integer >= 2, got 1"),
    ],
)
def test_parameter_errors_name_the_range(kwargs: dict, message: str) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=message):
        batch_tests(rng.normal(size=5), rng.normal(size=9), rng.normal(size=(5, 2)), rng.normal(size=(9, 2)), **kwargs)


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="scores must be a non-empty 1-D array"):
        batch_tests(np.array([]), np.ones(3))
    with pytest.raises(ValueError, match="same dimension"):
        embedding_permutation_p_values(np.ones((3, 2)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="one row per score"):
        batch_tests(np.ones(3), np.ones(4), np.ones((2, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        batch_tests(np.array([1.0, np.nan]), np.ones(4))


@pytest.mark.slow
def test_level_on_null_draws() -> None:
    """Under the null every test rejects at rate <= alpha (within a 99 % binomial interval),
    and the permutation tests are exact, so their rate is not far below alpha either."""
    rng = np.random.default_rng(2024)
    draws, alpha = 400, 0.1
    rejections = dict.fromkeys((*TESTS, "combined"), 0)
    for _ in range(draws):
        pool = rng.standard_t(df=4, size=(20 + 60, 6))  # heavy tails: no Gaussian luck
        x, y = pool[:20], pool[20:]
        s_x, s_y = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
        result = batch_tests(s_x, s_y, x, y, seed=int(rng.integers(1 << 30)))
        for name, p in result.p_values.items():
            rejections[name] += p <= alpha
        rejections["combined"] += result.p_value <= alpha
    for name, k in rejections.items():  # no test rejects significantly more often than alpha
        assert _lower(k, draws) <= alpha, (name, k / draws)
    for name in ("mann_whitney", "mmd", "energy"):  # exact tests: not far below alpha either
        assert alpha <= _upper(rejections[name], draws), (name, rejections[name] / draws)


def test_power_against_shifts() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(size=(100, 10))
    shifted = rng.normal(size=(30, 10)) + 1.0 * np.eye(10)[0]
    assert embedding_permutation_p_values(shifted, y, seed=0)["energy"] < 0.01
    # Mode collapse: scores more alike than the calibration ones; only the two-sided KS catches it.
    cal = rng.normal(size=200)
    collapsed = rng.normal(scale=0.1, size=40)
    assert ks_p_value(collapsed, cal) < 0.001
    assert mann_whitney_p_value(collapsed, cal) > 0.05


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 25),
    m=st.integers(2, 40),
    seed=st.integers(0, 2**31 - 1),
    data_seed=st.integers(0, 2**31 - 1),
)
def test_p_values_in_unit_interval_and_shuffle_invariant(n: int, m: int, seed: int, data_seed: int) -> None:
    rng = np.random.default_rng(data_seed)
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    s_x, s_y = rng.normal(size=n), rng.normal(size=m)
    result = batch_tests(s_x, s_y, x, y, seed=seed)
    assert all(0.0 < p <= 1.0 for p in (*result.p_values.values(), result.p_value))
    order = rng.permutation(n)
    shuffled = batch_tests(s_x[order], s_y, x[order], y, seed=seed)
    assert shuffled.p_values == result.p_values


def test_large_batch_is_subsampled_reproducibly() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(50, 4))
    result = batch_tests(np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1), x, y, max_batch=10)
    assert any("subsample of 10" in note for note in result.notes)
    assert result == batch_tests(np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1), x, y, max_batch=10)


def _conversations(rng: np.random.Generator, n_conv: int, shift: float = 0.0) -> tuple:
    """Two turns per conversation, far more alike than turns of different conversations."""
    topic = rng.standard_t(df=4, size=(n_conv, 6))
    emb = np.repeat(topic, 2, axis=0) + 0.3 * rng.normal(size=(2 * n_conv, 6)) + shift
    scores = np.linalg.norm(emb, axis=1)
    return scores, emb, [f"conv{i}" for i in np.repeat(np.arange(n_conv), 2)]


@pytest.mark.slow
def test_block_permutation_holds_the_level_where_output_permutation_does_not() -> None:
    """Both turns of 20 conversations against both turns of 30: permuting single outputs splits
    conversations and rejects far too often; permuting whole conversations stays exact."""
    rng = np.random.default_rng(77)
    draws, alpha = 300, 0.1
    block = dict.fromkeys((*TESTS, "combined"), 0)
    naive = 0
    for i in range(draws):
        s_x, x, g_x = _conversations(rng, 20)
        s_y, y, g_y = _conversations(rng, 30)
        result = batch_tests(s_x, s_y, x, y, groups=g_x, calibration_groups=g_y, seed=i)
        for name, p in result.p_values.items():
            block[name] += p <= alpha
        block["combined"] += result.p_value <= alpha
        naive += batch_tests(s_x, s_y, x, y, seed=i).p_values["mmd"] <= alpha
    for name, k in block.items():
        assert _lower(k, draws) <= alpha, (name, k / draws)
    for name in ("mann_whitney", "mmd", "energy"):  # exact: not far below alpha either
        assert alpha <= _upper(block[name], draws), (name, block[name] / draws)
    assert _lower(naive, draws) > 2 * alpha, naive / draws  # what the grouping is for
    # And it still sees a real difference.
    s_x, x, g_x = _conversations(rng, 25, shift=1.5)
    s_y, y, g_y = _conversations(rng, 25)
    assert batch_tests(s_x, s_y, x, y, groups=g_x, calibration_groups=g_y).p_value < 0.01


def test_block_permutation_is_order_invariant_and_checks_its_groups() -> None:
    rng = np.random.default_rng(8)
    s_x, x, g_x = _conversations(rng, 12)
    s_y, y, g_y = _conversations(rng, 15)
    first = batch_tests(s_x, s_y, x, y, groups=g_x, calibration_groups=g_y, seed=3)
    order = rng.permutation(len(s_x))
    again = batch_tests(s_x[order], s_y, x[order], y, groups=[g_x[i] for i in order], calibration_groups=g_y, seed=3)
    assert first.p_values == again.p_values and first.n_batch == 24 and first.n_calibration == 30
    assert "whole groups permuted: 12 batch groups (24 outputs) against 15 calibration groups" in first.notes[-1]
    with pytest.raises(ValueError, match="give both groups and calibration_groups"):
        batch_tests(s_x, s_y, groups=g_x)
    with pytest.raises(ValueError, match="groups must name the group of every score"):
        batch_tests(s_x, s_y, groups=g_x[:-1], calibration_groups=g_y)
    small = batch_tests(s_x, s_y, x, y, groups=g_x, calibration_groups=g_y, max_batch=10)
    assert small.n_batch == 24 and "whole groups (10 of the batch's 24 outputs)" in small.notes[0]
    assert first.permutation_unit == "group" and "permutations of whole prompts" in first.description


def test_block_permutation_subsamples_a_large_calibration_part_by_whole_groups(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import conformance.stats.two_sample as batch

    monkeypatch.setattr(batch, "MAX_PERMUTATION_CALIBRATION", 40)
    rng = np.random.default_rng(9)
    s_x, x, g_x = _conversations(rng, 10)
    s_y, y, g_y = _conversations(rng, 50)
    result = batch_tests(s_x, s_y, x, y, groups=g_x, calibration_groups=g_y, seed=1)
    assert result.n_calibration == 100 and "whole calibration groups (40 of 100 outputs)" in result.notes[0]
    assert result == batch_tests(s_x, s_y, x, y, groups=g_x, calibration_groups=g_y, seed=1)


def _linear_outputs(x: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x @ weights + 0.3 * rng.normal(size=(x.shape[0], weights.shape[1]))


def test_residual_embeddings_ignore_a_change_of_topic_and_catch_a_change_of_answers() -> None:
    """Why the batch MMD and energy tests run on residual embeddings: a batch whose inputs are about
    other topics (its outputs follow, as approved) is a difference of the pooled embeddings but not of the
    residuals; a batch whose answers to the same kind of input changed is a difference of both."""
    rng = np.random.default_rng(7)
    dim = 16
    weights, other = rng.normal(size=(dim, dim)) / 4, rng.normal(size=(dim, dim)) / 4
    fit_x, cal_x = rng.normal(size=(300, dim)), rng.normal(size=(120, dim))
    model = CombinedScorer(k=5, seed=0).fit(_linear_outputs(fit_x, weights, rng), fit_x, None,
                                            groups=list(range(300)))
    cal = model.residual_embeddings(_linear_outputs(cal_x, weights, rng), cal_x)
    cal_pooled = _linear_outputs(cal_x, weights, rng)
    topic_x = rng.normal(size=(50, dim)) + 1.5 * np.eye(dim)[0]  # the batch asks about something else
    topic_y = _linear_outputs(topic_x, weights, rng)
    changed_x = rng.normal(size=(50, dim))
    changed_y = _linear_outputs(changed_x, other, rng)  # same kind of input, other answers
    scores, cal_scores = np.zeros(50), np.zeros(120)
    p_topic_pooled = batch_tests(scores, cal_scores, topic_y, cal_pooled).p_values
    p_topic_residual = batch_tests(scores, cal_scores, model.residual_embeddings(topic_y, topic_x), cal).p_values
    p_changed_residual = batch_tests(scores, cal_scores, model.residual_embeddings(changed_y, changed_x), cal).p_values
    assert p_topic_pooled["mmd"] < 0.01 and p_topic_pooled["energy"] < 0.01
    assert p_topic_residual["mmd"] > 0.05 and p_topic_residual["energy"] > 0.05
    assert p_changed_residual["mmd"] < 0.01 and p_changed_residual["energy"] < 0.01
