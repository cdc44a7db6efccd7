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

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def check_alpha(alpha: float) -> float:
    """Validate alpha; returns it as a float."""
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


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
