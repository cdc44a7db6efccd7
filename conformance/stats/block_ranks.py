"""Rank tests of a batch of any size, whole prompts permuted, in memory that grows by a few bytes per output.

:func:`conformance.stats.two_sample.batch_tests` with ``groups`` builds one label vector per permutation
over every output: ``(B + 1) x n`` floats, 8 GB for a million outputs. The two rank tests need less. A
labelling puts whole groups on one side, so the Mann-Whitney statistic (mean rank of the batch minus mean
rank of the calibration part) needs only each group's rank sum and size; the Kolmogorov-Smirnov statistic
needs one pass over the sorted values per labelling. :func:`block_rank_p_values` evaluates them a few
labellings at a time: the same tests, the same exactness (each labelling puts as many groups on the batch's
side as the observed one, every member with its group), for a batch of any size.

:func:`streamed_batch_tests` is what ``score`` runs for a group larger than its reservoir: these rank tests
on every output, and MMD and energy on the reservoir's whole prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from conformance.stats.two_sample import BatchTestResult, _block_batch_tests, _permutation_p_value

#: Labellings evaluated at once, at most; fewer for a large batch, so that the transient arrays stay near
#: ``OUTPUTS_AT_ONCE`` floats (8 MB) each.
LABELLINGS_AT_ONCE = 8
OUTPUTS_AT_ONCE = 1 << 20


def block_rank_p_values(
    values: np.ndarray, groups: np.ndarray, calibration_values: np.ndarray, calibration_groups: Sequence[str], *,
    n_permutations: int, seed: int,
) -> tuple[dict[str, float], int, int]:
    """Mann-Whitney (one-sided: batch larger) and Kolmogorov-Smirnov permutation p-values of ``values``
    against ``calibration_values``, whole groups permuted.

    ``groups`` holds an integer code per batch value (outputs of one prompt share it), ``calibration_groups``
    a key per calibration value; groups are named per side. Returns the p-values and the numbers of batch
    and calibration groups.
    """
    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(calibration_values, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.size == 0 or y.size == 0 or len(groups) != x.size \
            or len(calibration_groups) != y.size:
        raise ValueError("values and calibration_values must be non-empty 1-D arrays with a group for each value")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("values must be finite")
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1000:
        raise ValueError(f"n_permutations must be an integer >= 1000, got {n_permutations!r}")
    _, gx = np.unique(np.asarray(groups), return_inverse=True)
    _, gy = np.unique(np.asarray([str(k) for k in calibration_groups], dtype=object), return_inverse=True)
    k_x = int(gx.max()) + 1
    n_groups = k_x + int(gy.max()) + 1
    member = np.concatenate([gx, gy + k_x])
    pooled = np.concatenate([x, y])
    sizes = np.bincount(member, minlength=n_groups).astype(np.float64)
    rank_sums = np.bincount(member, weights=stats.rankdata(pooled), minlength=n_groups)
    total_n, total_rank = float(pooled.size), float(rank_sums.sum())
    order = np.argsort(pooled, kind="stable")
    ordered = pooled[order]
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])  # the CDFs compared at the end of each tie run
    member_sorted = member[order]
    rng = np.random.default_rng(seed)
    mw = np.empty(n_permutations + 1)
    ks = np.empty(n_permutations + 1)
    done = 0
    at_once = max(1, min(LABELLINGS_AT_ONCE, OUTPUTS_AT_ONCE // pooled.size))
    while done < n_permutations + 1:
        count = min(at_once, n_permutations + 1 - done)
        on_x = np.zeros((count, n_groups), dtype=bool)
        first = 0
        if done == 0:
            on_x[0, :k_x] = True  # the observed labelling
            first = 1
        if count > first:
            keys = rng.random((count - first, n_groups))
            picks = np.argpartition(keys, k_x - 1, axis=1)[:, :k_x] if k_x < n_groups else None
            if picks is None:
                on_x[first:] = True
            else:
                np.put_along_axis(on_x[first:], picks, True, axis=1)
        n_x = on_x.astype(np.float64) @ sizes
        r_x = on_x.astype(np.float64) @ rank_sums
        mw[done:done + count] = r_x / n_x - (total_rank - r_x) / (total_n - n_x)
        signs = np.where(on_x[:, member_sorted], (1.0 / n_x)[:, None], (-1.0 / (total_n - n_x))[:, None])
        np.cumsum(signs, axis=1, out=signs)
        gaps = signs[:, ends]
        ks[done:done + count] = np.abs(gaps, out=gaps).max(axis=1)
        done += count
    return ({"mann_whitney": _permutation_p_value(mw), "kolmogorov_smirnov": _permutation_p_value(ks)},
            k_x, n_groups - k_x)


def streamed_batch_tests(
    values: np.ndarray, groups: np.ndarray, calibration_values: np.ndarray, calibration_groups: Sequence[str], *,
    sample_values: np.ndarray, sample_groups: Sequence[str], sample_embeddings: np.ndarray | None,
    calibration_sample_values: np.ndarray, calibration_embeddings: np.ndarray | None,
    n_permutations: int, seed: int,
) -> BatchTestResult:
    """The four batch tests of a group larger than its reservoir, combined by Bonferroni: the rank tests on
    every output (``values``, ``groups``), MMD and energy on the reservoir's whole prompts (``sample_*``)."""
    p_values, n_groups_x, n_groups_y = block_rank_p_values(
        values, groups, calibration_values, calibration_groups, n_permutations=n_permutations, seed=seed)
    notes = [f"the two rank tests used {len(values)} outputs, whole groups permuted: {n_groups_x} batch groups "
             f"against {n_groups_y} calibration groups ({len(calibration_values)} outputs)"]
    if sample_embeddings is not None and calibration_embeddings is not None:
        sampled = _block_batch_tests(sample_values, calibration_sample_values, sample_embeddings,
                                     calibration_embeddings, sample_groups, calibration_groups,
                                     n_permutations=n_permutations, seed=seed, max_batch=max(2, len(sample_values)))
        p_values.update({name: sampled.p_values[name] for name in ("mmd", "energy")})
        notes.append(f"MMD and energy used a seeded sample of whole prompts ({len(sample_values)} of the "
                     f"{len(values)} outputs)")
    else:
        notes.append("no embeddings given: only the two rank tests ran")
    combined = min(1.0, len(p_values) * min(p_values.values()))
    return BatchTestResult(p_value=float(combined), p_values=p_values, n_batch=len(values),
                           n_calibration=len(calibration_values), n_permutations=int(n_permutations), seed=int(seed),
                           notes=tuple(notes), permutation_unit="group")
