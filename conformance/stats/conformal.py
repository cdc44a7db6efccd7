"""Split-conformal p-values and what a calibration set of a given size can support.

For a nonconformity score ``s`` and ``n`` calibration scores drawn from the
approved distribution, the split-conformal p-value is

    p = (1 + #{calibration scores >= s}) / (n + 1).

If ``s`` comes from the same (exchangeable) distribution as the calibration
scores, ``P(p <= alpha) <= alpha`` for every alpha: an approved-distribution
output is flagged with probability at most alpha (Vovk, Gammerman, Shafer,
*Algorithmic Learning in a Random World*, 2005; Bates et al., *Testing for
outliers with conformal p-values*, Ann. Statist. 2023).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from conformance import defaults
from conformance.params import check_alpha, check_fdr


def conformal_p_values(scores: np.ndarray, calibration_sorted: np.ndarray) -> np.ndarray:
    """Split-conformal p-values of ``scores`` against ascending ``calibration_sorted``.

    >>> conformal_p_values(np.array([0.5, 2.0, 9.0]), np.array([1.0, 2.0, 3.0]))
    array([1.  , 0.75, 0.25])
    """
    cal = np.asarray(calibration_sorted, dtype=np.float64)
    if cal.ndim != 1 or cal.size == 0:
        raise ValueError("calibration scores must be a non-empty 1-D array")
    if np.any(np.diff(cal) < 0):
        raise ValueError("calibration scores must be sorted ascending")
    s = np.asarray(scores, dtype=np.float64)
    n_at_least = cal.size - np.searchsorted(cal, s, side="left")
    return (1.0 + n_at_least) / (cal.size + 1.0)


def prompt_weighted_p_values(
    scores: np.ndarray, calibration_scores: np.ndarray, calibration_groups: Sequence[str]
) -> np.ndarray:
    """Conformal p-values with the *prompt* as the exchangeable unit.

    Outputs for one prompt are far more alike than outputs for different
    prompts, so a new output is exchangeable with the approved ones prompt by
    prompt, not output by output. With ``K`` calibration prompts, prompt ``k``
    holding ``n_k`` calibration scores,

        p = (1 + sum_k #{j: s_kj >= s} / n_k) / (K + 1):

    every prompt weighs the same, and the new output's own (unseen) prompt
    counts as one whole prompt at or above it. If the prompts are exchangeable
    and the new output is a random output of a new prompt, the new output is a
    draw from the prompt-weighted distribution of all K + 1 prompts' outputs,
    so ``P(p <= alpha) <= alpha`` exactly (the hierarchical conformal
    prediction of Lee, Barber & Willett, "Distribution-free inference with
    hierarchical data", 2023; the "CDF pooling" of Dunn, Wasserman & Ramdas,
    JASA 2023). With one output per prompt it is the usual split-conformal
    p-value.

    >>> prompt_weighted_p_values(np.array([2.5]), np.array([1.0, 2.0, 3.0, 4.0]), ["a", "a", "b", "b"])
    array([0.66666667])
    """
    cal = np.asarray(calibration_scores, dtype=np.float64)
    if cal.ndim != 1 or cal.size == 0:
        raise ValueError("calibration scores must be a non-empty 1-D array")
    if len(calibration_groups) != cal.size:
        raise ValueError(f"got {cal.size} calibration scores but {len(calibration_groups)} group keys")
    keys, group, counts = np.unique(np.asarray(calibration_groups, dtype=object).astype(str), return_inverse=True,
                                    return_counts=True)
    order = np.argsort(cal, kind="stable")
    sorted_cal = cal[order]
    weights = (1.0 / counts[group])[order]
    # mass_at_or_above[i] = total weight of calibration scores sorted_cal[i:]
    mass_at_or_above = np.round(np.concatenate([np.cumsum(weights[::-1])[::-1], [0.0]]), 12)  # no float dust
    s = np.asarray(scores, dtype=np.float64)
    first = np.searchsorted(sorted_cal, s, side="left")
    return np.minimum(1.0, np.round((1.0 + mass_at_or_above[first]) / (keys.size + 1.0), 12))


def sampled_level(n_prompts: int, alpha: float) -> float:
    """The false-alarm rate of ``p <= alpha`` for the split-conformal p-value over ``n_prompts`` exchangeable
    calibration units (one output per prompt): exactly ``floor(alpha (K + 1)) / (K + 1)`` for continuous scores.

    >>> round(sampled_level(25, 0.05), 4), round(sampled_level(25, 0.10), 4)
    (0.0385, 0.0769)
    """
    alpha = check_alpha(alpha)
    return math.floor(alpha * (n_prompts + 1) + 1e-12) / (n_prompts + 1)


def attainable_calibration_size(n_prompts: int, alpha: float) -> int:
    """The number of calibration prompts, at most ``n_prompts``, whose split-conformal level comes nearest alpha.

    The level of ``p <= alpha`` over ``K`` prompts is ``floor(alpha (K + 1)) / (K + 1)``
    (:func:`sampled_level`): exactly alpha when ``alpha (K + 1)`` is a whole number, below it in between (at
    0.05: 1/26 = 0.038 for K = 25, 0.05 for K = 19). This is the largest ``K`` in ``[min_n, n_prompts]`` with the
    highest level, among those that keep the spread of a baseline's own false-alarm rate below the warning
    threshold (:attr:`CalibrationSupport.is_small`) when ``n_prompts`` itself keeps it there: fewer calibration
    prompts spread that rate more (its 95th percentile is 0.146 for K = 19, 0.113 for 25, 0.089 for 32 at
    0.05), and rounding must not turn a cell that needed no warning into one that does. ``n_prompts`` itself
    when it cannot flag at all. ``build`` moves the prompts beyond it to the fit part (``round_calibration``;
    what that costs and gains in power: docs/validation.md, section 1).

    >>> [attainable_calibration_size(n, 0.05) for n in (18, 25, 32, 39)], attainable_calibration_size(25, 0.1)
    ([18, 19, 29, 39], 22)
    """
    alpha = check_alpha(alpha)
    lowest = min_calibration_size(alpha)
    if n_prompts <= lowest:
        return n_prompts
    keep_spread = not calibration_support(n_prompts, alpha).is_small
    by_level = sorted(range(lowest, n_prompts + 1), key=lambda k: (-round(sampled_level(k, alpha), 12), -k))
    # n_prompts itself always qualifies, so there is a first.
    return next(k for k in by_level if not keep_spread or not calibration_support(k, alpha).is_small)


def weighted_reference_level(
    prompt_sizes: Sequence[int], alpha: float, *, draws: int = 2000, seed: int = 0
) -> float:
    """The false-alarm rate of ``p <= alpha`` for :func:`prompt_weighted_p_values` over calibration prompts of
    ``prompt_sizes`` outputs, **if outputs of one prompt were no more alike than any two outputs** (all scores
    i.i.d. and continuous): a reference computed from the prompt sizes alone, never from a score.

    Then the number ``A`` of calibration outputs scoring above a new one is uniform on ``0..N``, and those
    ``A`` are a random subset; the output is flagged when their prompt weights ``1/n_k`` sum to at most
    ``alpha (K + 1) - 1``. Estimated over ``draws`` seeded random orders (exact for equal sizes). Outputs of one
    prompt that are more alike bring the weighted rule's level nearer alpha (identical outputs make it exact).

    >>> round(weighted_reference_level([2] * 25, 0.05), 4), round(weighted_reference_level([2] * 25, 0.10), 4)
    (0.0196, 0.0784)
    """
    alpha = check_alpha(alpha)
    sizes = np.asarray(prompt_sizes, dtype=np.float64)
    if sizes.ndim != 1 or sizes.size == 0 or np.any(sizes < 1):
        raise ValueError("prompt_sizes must be a non-empty list of positive counts")
    budget = alpha * (sizes.size + 1) - 1.0
    if budget < 0:
        return 0.0
    weights = np.repeat(1.0 / sizes, sizes.astype(np.int64))
    n = weights.size
    if np.all(sizes == sizes[0]):  # every order is the same: floor(budget * n_k) + 1 values of A qualify
        return min(n + 1, math.floor(budget * sizes[0] + 1e-9) + 1) / (n + 1)
    rng = np.random.default_rng(seed)
    counts = np.empty(draws)
    for d in range(draws):
        cum = np.cumsum(weights[rng.permutation(n)])
        counts[d] = 1 + np.searchsorted(cum, budget + 1e-9, side="right")  # A = 0 and every prefix within budget
    return float(counts.mean() / (n + 1))


#: ``build --calibration-method``: ``auto`` picks, from the calibration part's prompt counts and alpha alone,
#: whichever of ``sample`` and ``weighted`` has the larger reference level (:func:`choose_calibration_method`).
CALIBRATION_CHOICES = defaults.CALIBRATION_METHODS


def choose_calibration_method(prompt_sizes: Sequence[int], alpha: float) -> tuple[str, dict[str, float]]:
    """``"sample"`` or ``"weighted"``, whichever flags approved-like outputs at the rate nearer alpha (so
    with more power), judged on the prompt sizes alone: :func:`sampled_level` against
    :func:`weighted_reference_level`. With one output per prompt the two are the same p-value (``"sample"``).

    Both rules hold the level whatever is chosen, and the choice sees no score, so choosing keeps the
    guarantee. Which wins depends on where alpha falls on the grid of attainable levels: with 25 prompts of
    two outputs, ``sample`` at alpha 0.05 (1/26 against 1/51), ``weighted`` at 0.10 (4/51 against 2/26)
    (measured: docs/validation.md, section 1).

    >>> choose_calibration_method([2] * 25, 0.05)[0], choose_calibration_method([2] * 25, 0.10)[0]
    ('sample', 'weighted')
    """
    sizes = [int(n) for n in prompt_sizes]
    levels = {"sample": sampled_level(len(sizes), alpha), "weighted": weighted_reference_level(sizes, alpha)}
    if all(n == 1 for n in sizes):
        return "sample", levels
    return ("weighted" if levels["weighted"] >= levels["sample"] else "sample"), levels


def min_calibration_size(alpha: float) -> int:
    """Smallest n for which the smallest possible p-value, 1/(n+1), is <= alpha."""
    alpha = check_alpha(alpha)
    return max(1, math.ceil(1.0 / alpha - 1.0 - 1e-9))


@dataclass(frozen=True)
class CalibrationSupport:
    """What a calibration set of ``n`` scores can promise at ``alpha``.

    Conditional on the calibration set, the false-alarm rate of the rule
    ``p <= alpha`` is Beta(l, n + 1 - l) distributed with l = floor(alpha (n+1))
    (Vovk 2012; Bates et al. 2023, sec. 2): its mean is at most alpha, but a
    small calibration set spreads it widely.
    """

    n: int
    alpha: float
    min_n: int
    smallest_alpha: float
    expected_false_alarm_rate: float
    false_alarm_rate_95th: float

    @property
    def can_flag(self) -> bool:
        return self.n >= self.min_n

    @property
    def is_small(self) -> bool:
        """True when the realised false-alarm rate may well exceed twice alpha."""
        return self.false_alarm_rate_95th > 2 * self.alpha

    def to_dict(self) -> dict[str, float | int]:
        return {
            "n_calibration": self.n,
            "alpha": self.alpha,
            "min_n_calibration": self.min_n,
            "smallest_alpha": self.smallest_alpha,
            "expected_false_alarm_rate": self.expected_false_alarm_rate,
            "false_alarm_rate_95th": self.false_alarm_rate_95th,
        }


def calibration_support(n: int, alpha: float) -> CalibrationSupport:
    """Describe what ``n`` calibration scores support at ``alpha``."""
    alpha = check_alpha(alpha)
    ell = math.floor(alpha * (n + 1) + 1e-12)
    if ell >= 1:
        dist = stats.beta(ell, n + 1 - ell)
        mean, q95 = float(dist.mean()), float(dist.ppf(0.95))
    else:
        mean, q95 = 0.0, 0.0
    return CalibrationSupport(
        n=n,
        alpha=alpha,
        min_n=min_calibration_size(alpha),
        smallest_alpha=1.0 / (n + 1),
        expected_false_alarm_rate=mean,
        false_alarm_rate_95th=q95,
    )


@dataclass(frozen=True)
class FDRResult:
    """Benjamini-Hochberg over a set of p-values.

    ``flags[i]`` is True when p-value ``i`` is rejected at false discovery
    rate ``q``; ``threshold`` is the BH cut-off ``k q / m`` (every p-value at or
    below it is flagged), or ``None`` when nothing is flagged.
    """

    q: float
    n_tested: int
    flags: np.ndarray
    threshold: float | None

    @property
    def n_flagged(self) -> int:
        return int(self.flags.sum())

    def to_dict(self) -> dict[str, float | int | None]:
        return {"q": self.q, "n_tested": self.n_tested, "n_flagged": self.n_flagged, "threshold": self.threshold}


def benjamini_hochberg(p_values: np.ndarray, q: float) -> FDRResult:
    """Flag p-values by the Benjamini-Hochberg step-up procedure at level ``q``.

    With ``m`` p-values sorted ascending, find the largest ``k`` with
    ``p_(k) <= k q / m`` and flag every p-value ``<= k q / m``. The expected
    share of flagged approved-distribution outputs among all flagged ones is at
    most ``q`` when the p-values are independent or positively dependent
    (PRDS). Conformal p-values that share one calibration set are PRDS (Bates
    et al. 2023, Theorem 4), and blocks of them with independent calibration
    sets (one per baseline) are PRDS together, so BH may run over a whole batch.

    >>> r = benjamini_hochberg(np.array([0.001, 0.2, 0.012, 0.9]), 0.05)
    >>> r.flags.tolist(), r.threshold
    ([True, False, True, False], 0.025)
    """
    q = check_fdr(q)
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be a 1-D array, got shape {p.shape}")
    if np.any(~np.isfinite(p)) or np.any(p <= 0) or np.any(p > 1):
        raise ValueError("p_values must lie in (0, 1]")
    m = p.size
    if m == 0:
        return FDRResult(q=q, n_tested=0, flags=np.zeros(0, dtype=bool), threshold=None)
    ranked = np.sort(p)
    below = np.nonzero(ranked <= q * np.arange(1, m + 1) / m)[0]
    if below.size == 0:
        return FDRResult(q=q, n_tested=m, flags=np.zeros(m, dtype=bool), threshold=None)
    threshold = q * (below[-1] + 1) / m
    return FDRResult(q=q, n_tested=m, flags=p <= threshold, threshold=float(threshold))


def calibration_conditional_threshold(n: int, alpha: float, delta: float) -> float | None:
    """The p-value cut-off that holds the false-alarm rate below ``alpha`` with probability ``1 - delta``.

    Conditional on a calibration set of ``n`` scores, the rule ``p <= l/(n+1)``
    has false-alarm rate Beta(l, n + 1 - l). The largest ``l`` whose Beta
    distribution puts at least ``1 - delta`` below ``alpha`` gives a rule whose
    false-alarm rate, *for this baseline*, is at most ``alpha`` except with
    probability ``delta`` over the draw of the approved sample (the
    calibration-conditional guarantee of Bates, Candès, Lei, Romano, Sesia,
    "Testing for outliers with conformal p-values", Ann. Statist. 2023). Returns
    ``None`` when no ``l >= 1`` qualifies: the calibration set is too small.

    >>> calibration_conditional_threshold(1000, 0.05, 0.1)
    0.04095904095904096
    """
    alpha = check_alpha(alpha)
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not 0.0 < float(delta) < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (the number of calibration scores) must be a positive integer, got {n!r}")
    ells = np.arange(1, math.floor(alpha * (n + 1)) + 1)
    if ells.size == 0:
        return None
    ok = stats.beta.cdf(alpha, ells, n + 1 - ells) >= 1.0 - delta
    if not ok.any():
        return None
    return float(ells[ok][-1] / (n + 1))


def one_per_prompt(prompt_keys: Sequence[str], record_ids: Sequence[str], seed: int = 0) -> np.ndarray:
    """Indices of one output per prompt, chosen without regard to row order.

    Outputs for the same prompt are far more alike than outputs for different
    prompts, so a sample with several outputs per prompt is not a sample of
    independent outputs, and a test that treats it as one rejects true nulls
    far too often (docs/validation.md, section 2). One output per prompt makes the
    two samples i.i.d. draws under the null, so the tests are exact again.
    Within a prompt, the output whose seeded SHA-256 of its record id is
    smallest is kept, so shuffling the batch changes nothing.

    >>> one_per_prompt(["a", "b", "a"], ["r1", "r2", "r3"]).tolist() in ([0, 1], [1, 2])
    True
    """
    if len(prompt_keys) != len(record_ids):
        raise ValueError(f"prompt_keys and record_ids must have the same length, got {len(prompt_keys)} "
                         f"and {len(record_ids)}")
    best: dict[str, tuple[str, int]] = {}
    for i, (key, record_id) in enumerate(zip(prompt_keys, record_ids)):
        digest = hashlib.sha256(f"{seed}\0{record_id}".encode()).hexdigest()
        if key not in best or digest < best[key][0]:
            best[key] = (digest, i)
    return np.array(sorted(i for _, i in best.values()), dtype=np.int64)
