"""Batch tests on outputs that come several to a prompt: one output per prompt keeps the level."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from conformance.stats.conformal import one_per_prompt
from conformance.stats.two_sample import batch_tests


def _clustered(rng: np.random.Generator, n_prompts: int, per_prompt: int, prefix: str):
    centres = rng.normal(size=(n_prompts, 8))
    emb = np.repeat(centres, per_prompt, axis=0) + 0.3 * rng.normal(size=(n_prompts * per_prompt, 8))
    scores = np.linalg.norm(emb, axis=1)  # any fixed function of the output
    keys = [f"{prefix}{p}" for p in range(n_prompts) for _ in range(per_prompt)]
    ids = [f"{prefix}{i}" for i in range(n_prompts * per_prompt)]
    return scores, emb, keys, ids


def _rejection_rate(draws: int, *, per_prompt_only: bool, alpha: float = 0.05) -> float:
    rng = np.random.default_rng(7)
    rejected = 0
    for d in range(draws):
        s, e, k, i = _clustered(rng, 12, 3, "b")   # the audited batch: 12 prompts x 3 outputs
        cs, ce, ck, ci = _clustered(rng, 40, 3, "c")  # the calibration part: 40 prompts x 3 outputs
        if per_prompt_only:
            keep, keep_cal = one_per_prompt(k, i, d), one_per_prompt(ck, ci, d)
            s, e, cs, ce = s[keep], e[keep], cs[keep_cal], ce[keep_cal]
        result = batch_tests(s, np.sort(cs), e, ce, n_permutations=1000, seed=d)
        rejected += result.p_value <= alpha
    return rejected / draws


@pytest.mark.slow
def test_one_output_per_prompt_keeps_the_batch_tests_at_their_level() -> None:
    draws = 150
    rate = _rejection_rate(draws, per_prompt_only=True)
    k = round(rate * draws)
    lower = stats.beta.ppf(0.005, k, draws - k + 1) if k else 0.0
    assert lower <= 0.05, rate  # consistent with a level of at most alpha (99 % Clopper-Pearson)
    assert rate <= 0.08, rate  # measured: 0.033 (Bonferroni over the 4 tests is conservative)


@pytest.mark.slow
def test_treating_a_prompt_s_outputs_as_independent_breaks_the_level() -> None:
    # The same data without the per-prompt selection: the test the selection guards against.
    rate = _rejection_rate(150, per_prompt_only=False)
    assert rate > 0.15, rate  # measured: 0.89


def test_selection_ignores_row_order() -> None:
    keys = ["a", "a", "b", "c", "b"]
    ids = ["r1", "r2", "r3", "r4", "r5"]
    chosen = {ids[j] for j in one_per_prompt(keys, ids, 3)}
    order = [4, 2, 0, 3, 1]
    again = {[ids[o] for o in order][j] for j in one_per_prompt([keys[o] for o in order], [ids[o] for o in order], 3)}
    assert chosen == again and len(chosen) == 3
