"""Batch tests: is a batch of audited outputs, as a whole, unlike the approved ones?

Per (model_version, input_class) group, four tests of the batch against the
baseline's held-out calibration part, combined by Bonferroni (a correction
fixed in advance):

* a one-sided Mann-Whitney rank test of the batch's scores against the
  calibration scores (are they larger?);
* a two-sided Kolmogorov-Smirnov test of the same (catches mode collapse too:
  outputs more alike than approved ones);
* an MMD permutation test (Gaussian kernel, median-heuristic bandwidth on the
  pooled sample) of the batch's embeddings against the calibration embeddings
  (``conformance score`` passes residual embeddings for a combined-score
  baseline that stores them: what each output says beyond what its input
  predicts; pooled output embeddings otherwise);
* an energy-distance permutation test of the same.

Under the null the batch's outputs and the calibration outputs are exchangeable
(both were scored against the same fit bank and neither entered it), so every
test is valid for any score distribution. Permutation p-values are
``(1 + #{T_b >= T}) / (B + 1)``, exact at every B (the ``+1`` counts the
observed labelling as one of the permutations; alibi-detect issue #960 shows
what goes wrong without it).

Outputs of one prompt (the turns of one conversation) are not independent of
each other; the prompts are the exchangeable units. With ``groups`` every output is
used and every test, the two rank tests included, takes its p-value from
permutations of whole prompts between the two samples; without them the caller
passes one output per prompt (:func:`one_per_prompt`).

The batch's conformal p-values are deliberately *not* tested for uniformity
with a one-sample test: they share one calibration set, so they are dependent
and such a test rejects far too often.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from conformance import defaults

DEFAULT_PERMUTATIONS = defaults.PERMUTATIONS
DEFAULT_SEED = defaults.BATCH_SEED
#: Largest batch the permutation tests use whole; a larger one is subsampled
#: (seeded, independently of the data, so the tests stay exact).
MAX_PERMUTATION_BATCH = 500
#: With whole groups permuted every calibration output takes part; beyond this many, a seeded random
#: subsample of whole calibration groups (the pooled distance matrices grow with the square).
MAX_PERMUTATION_CALIBRATION = 2000
TESTS = ("mann_whitney", "kolmogorov_smirnov", "mmd", "energy")
TEST_DESCRIPTIONS = {
    "mann_whitney": "one-sided Mann-Whitney U test of the batch's scores against the calibration scores",
    "kolmogorov_smirnov": "two-sided Kolmogorov-Smirnov test of the batch's scores against the calibration scores",
    "mmd": "MMD permutation test (Gaussian kernel, median-heuristic bandwidth) of the batch's embeddings "
           "against the calibration embeddings",
    "energy": "energy-distance permutation test of the batch's embeddings against the calibration embeddings",
}


@dataclass(frozen=True)
class BatchTestResult:
    """The batch tests of one group and their Bonferroni combination.

    Attributes
    ----------
    p_value : float
        ``min(1, m * min(p_values))`` over the ``m`` tests that ran.
    p_values : dict
        Each test's own p-value, by name (see :data:`TESTS`).
    n_batch, n_calibration : int
        Sizes of the two samples (before any subsampling).
    n_permutations : int
        B, the number of random permutations of each permutation test.
    seed : int
        Seed of the permutations (and of any subsampling), recorded so the
        result can be reproduced exactly.
    permutation_unit : str
        ``"output"`` (one output per prompt was passed in, outputs permuted) or
        ``"group"`` (every output, whole groups permuted, all four tests by
        permutation).
    """

    p_value: float
    p_values: dict[str, float]
    n_batch: int
    n_calibration: int
    n_permutations: int
    seed: int
    notes: tuple[str, ...] = field(default=())
    permutation_unit: str = "output"

    @property
    def description(self) -> str:
        names = ", ".join(TEST_DESCRIPTIONS[name] for name in self.p_values)
        how = ("; every output used, each test's p-value from permutations of whole prompts (conversations)"
               if self.permutation_unit == "group" else "")
        return f"Bonferroni combination of {len(self.p_values)} tests: {names}{how}"

    def to_dict(self) -> dict[str, object]:
        return {
            "p_value": self.p_value,
            "p_values": dict(self.p_values),
            "n_batch": self.n_batch,
            "n_calibration": self.n_calibration,
            "n_permutations": self.n_permutations,
            "seed": self.seed,
            "combination": "bonferroni",
            "permutation_unit": self.permutation_unit,
            "notes": list(self.notes),
        }


def _check_sample(name: str, values: np.ndarray, ndim: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {int(np.sum(~np.isfinite(arr)))} non-finite value(s)")
    return arr


def mann_whitney_p_value(scores: np.ndarray, calibration_scores: np.ndarray) -> float:
    """One-sided Mann-Whitney p-value: are ``scores`` stochastically larger?

    >>> round(mann_whitney_p_value(np.array([5.0, 6.0]), np.arange(5.0)), 4)
    0.0476
    """
    x = _check_sample("scores", scores, 1)
    y = _check_sample("calibration_scores", calibration_scores, 1)
    return float(stats.mannwhitneyu(x, y, alternative="greater").pvalue)


def ks_p_value(scores: np.ndarray, calibration_scores: np.ndarray) -> float:
    """Two-sided two-sample Kolmogorov-Smirnov p-value (exact for small samples)."""
    x = _check_sample("scores", scores, 1)
    y = _check_sample("calibration_scores", calibration_scores, 1)
    return float(stats.ks_2samp(x, y, alternative="two-sided").pvalue)


def _sign_vectors(n_x: int, n_y: int, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of +1/n_x (sample x) and -1/n_y (sample y): row 0 the observed labels, then B permutations."""
    base = np.concatenate([np.full(n_x, 1.0 / n_x), np.full(n_y, -1.0 / n_y)])
    keys = rng.random((n_permutations, n_x + n_y))
    perms = np.argsort(keys, axis=1)
    return np.vstack([base, base[perms]])


def block_labellings(
    groups_x: Sequence[str], groups_y: Sequence[str], n_permutations: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Row 0 the observed labelling, then ``n_permutations`` random ones, each putting as many of the pooled
    groups on side x as the observed labelling has; every member of a group goes with it. Returns boolean
    ``on_x`` per (labelling, group) and each member's group index.

    Groups are named per side (a key on both sides names two groups), as the two samples were drawn apart."""
    names = sorted({("x", str(g)) for g in groups_x} | {("y", str(g)) for g in groups_y})
    index = {name: i for i, name in enumerate(names)}
    member = np.array([index[("x", str(g))] for g in groups_x] + [index[("y", str(g))] for g in groups_y])
    observed = np.array([name[0] == "x" for name in names])
    k_x = int(observed.sum())
    on_x = np.zeros((n_permutations + 1, len(names)), dtype=bool)
    on_x[0] = observed
    picks = np.argsort(rng.random((n_permutations, len(names))), axis=1)[:, :k_x]
    np.put_along_axis(on_x[1:], picks, True, axis=1)
    return on_x, member


def sign_matrix(on_x: np.ndarray, member: np.ndarray) -> np.ndarray:
    """The label vectors of :func:`block_labellings`' labellings, one row each: ``+1/n_x`` on side x,
    ``-1/n_y`` on side y."""
    labels = on_x[:, member]
    n_x = labels.sum(axis=1, keepdims=True)
    return np.where(labels, 1.0 / n_x, -1.0 / (labels.shape[1] - n_x))


def _block_sign_vectors(
    groups_x: Sequence[str], groups_y: Sequence[str], n_permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """Like :func:`_sign_vectors`, but permuting whole groups (:func:`block_labellings`)."""
    return sign_matrix(*block_labellings(groups_x, groups_y, n_permutations, rng))


def _rank_statistics(values: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mann-Whitney (mean rank of x minus mean rank of y: one-sided, x larger) and Kolmogorov-Smirnov
    (largest gap between the two empirical CDFs) statistics for every labelling in ``signs``."""
    ranks = stats.rankdata(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # The CDFs are compared at the end of each run of tied values only.
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    gaps = np.cumsum(signs[:, order], axis=1)[:, ends]
    return signs @ ranks, np.abs(gaps).max(axis=1)


def quadratic_forms(signs: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``a^T M a`` for every row ``a`` of ``signs`` at once."""
    return np.einsum("bi,bi->b", signs @ matrix, signs)


def _permutation_p_value(stats_: np.ndarray) -> float:
    observed, permuted = stats_[0], stats_[1:]
    # A relative tolerance so that float rounding of an equal statistic does
    # not count as smaller (it must count as a tie, i.e. >=).
    tol = 1e-12 * max(1.0, abs(observed))
    return float((1 + np.sum(permuted >= observed - tol)) / (permuted.size + 1))


def squared_distances(z: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", z, z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def median_gaussian_kernel(d2: np.ndarray) -> np.ndarray:
    """The Gaussian kernel of the squared distances ``d2``, its squared bandwidth their median off the diagonal
    (one where that is zero): a function of the pooled sample only, which no labelling changes."""
    off = d2[np.triu_indices_from(d2, k=1)]
    median = float(np.median(off)) if off.size else 0.0
    return np.exp(-d2 / (2.0 * (median if median > 0 else 1.0)))


def embedding_permutation_p_values(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = DEFAULT_SEED,
) -> dict[str, float]:
    """MMD and energy-distance permutation p-values of sample ``x`` against ``y``.

    Both statistics are quadratic forms ``a^T M a`` in the label vector ``a``
    (``+1/n_x`` on x, ``-1/n_y`` on y): the biased MMD² with ``M`` the Gaussian
    kernel matrix, and minus the energy distance with ``M`` the Euclidean
    distance matrix. So the pooled matrices are computed once and all B
    permutations are evaluated with one matrix product each. The kernel
    bandwidth is the median pairwise distance of the pooled sample, which does
    not depend on the labels, so the test stays exact.

    Parameters
    ----------
    x : ndarray of shape (n_x, dim)
        The batch's embeddings.
    y : ndarray of shape (n_y, dim)
        The approved (calibration) embeddings.
    n_permutations : int, default 1000
        B; must be at least 1000.
    seed : int, default 0
        Seed of the permutations.

    Returns
    -------
    dict
        ``{"mmd": p, "energy": p}``, each ``(1 + #{T_b >= T}) / (B + 1)``.
    """
    x = _check_sample("x (batch embeddings)", x, 2)
    y = _check_sample("y (calibration embeddings)", y, 2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1000:
        raise ValueError(f"n_permutations must be an integer >= 1000, got {n_permutations!r}")
    rng = np.random.default_rng(seed)
    signs = _sign_vectors(x.shape[0], y.shape[0], int(n_permutations), rng)
    return _embedding_p_values(np.vstack([x, y]), signs)


def _embedding_p_values(z: np.ndarray, signs: np.ndarray) -> dict[str, float]:
    """MMD and energy permutation p-values of the pooled sample ``z`` for the labellings in ``signs``."""
    d2 = squared_distances(z)
    kernel = median_gaussian_kernel(d2)
    distances = np.sqrt(d2)
    mmd = quadratic_forms(signs, kernel)
    energy = -quadratic_forms(signs, distances)
    return {"mmd": _permutation_p_value(mmd), "energy": _permutation_p_value(energy)}


def batch_tests(
    scores: np.ndarray,
    calibration_scores: np.ndarray,
    embeddings: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
    *,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = DEFAULT_SEED,
    max_batch: int = MAX_PERMUTATION_BATCH,
    groups: Sequence[str] | None = None,
    calibration_groups: Sequence[str] | None = None,
    embedding_sample: bool = False,
) -> BatchTestResult:
    """Run the batch tests of one group and combine them by Bonferroni.

    Parameters
    ----------
    scores : ndarray of shape (n,)
        The batch's nonconformity scores.
    calibration_scores : ndarray of shape (n_calibration,)
        The baseline's calibration scores.
    embeddings, calibration_embeddings : ndarray of shape (n, dim), optional
        Pooled embeddings of the batch and of the calibration part; when both
        are given the MMD and energy tests run too, otherwise only the two
        rank tests (and the Bonferroni factor is 2).
    n_permutations : int, default 1000
        B for the permutation tests; at least 1000.
    seed : int, default 0
        Seed of the permutations, recorded in the result.
    max_batch : int, default 500
        A larger batch is subsampled to this size (seeded, independently of
        its content) for the permutation tests, to bound memory and time.
    groups, calibration_groups : sequence of str, optional
        The conversation (or prompt) of each batch and calibration output.
        With both, every output is used and all four tests are permutation
        tests that move **whole groups** between the two samples (so the two
        turns of one conversation, which are alike, never count as two
        independent outputs): exact when conversations are exchangeable.
        Without them the caller must pass one output per conversation
        (:func:`one_per_prompt`). ``conformance score`` passes them whenever
        the baseline records its calibration prompts (every baseline built
        since prompt keys were stored).
    embedding_sample : bool, default False
        Without ``groups``: ``embeddings`` are a sample of the batch chosen independently of what the
        outputs say (a seeded reservoir), not one row per score; the rank tests use every score.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> result = batch_tests(rng.normal(size=30), rng.normal(size=200))
    >>> 0 < result.p_value <= 1, sorted(result.p_values)
    (True, ['kolmogorov_smirnov', 'mann_whitney'])
    """
    if not isinstance(max_batch, (int, np.integer)) or max_batch < 2:
        raise ValueError(f"max_batch must be an integer >= 2, got {max_batch!r}")
    if (groups is None) != (calibration_groups is None):
        raise ValueError("give both groups and calibration_groups (block permutation), or neither")
    if groups is not None and calibration_groups is not None:
        return _block_batch_tests(scores, calibration_scores, embeddings, calibration_embeddings, groups,
                                  calibration_groups, n_permutations=n_permutations, seed=seed, max_batch=max_batch)
    s = _check_sample("scores", scores, 1)
    p_values = {
        "mann_whitney": mann_whitney_p_value(s, calibration_scores),
        "kolmogorov_smirnov": ks_p_value(s, calibration_scores),
    }
    notes: list[str] = []
    n_cal = int(np.asarray(calibration_scores).shape[0])
    if embeddings is not None and calibration_embeddings is not None:
        x = _check_sample("embeddings", embeddings, 2)
        if x.shape[0] != s.shape[0] and not embedding_sample:
            raise ValueError(f"embeddings must have one row per score ({s.shape[0]}), got {x.shape[0]}")
        if x.shape[0] != s.shape[0]:
            notes.append(f"permutation tests used a seeded sample of {x.shape[0]} of the batch's {s.shape[0]}")
        # Canonical row order, so that the order of the batch changes no result.
        x = x[np.lexsort(x.T[::-1])]
        if x.shape[0] > max_batch:
            keep = np.sort(np.random.default_rng([seed, 1]).choice(x.shape[0], size=max_batch, replace=False))
            x = x[keep]
            notes.append(f"permutation tests used a seeded random subsample of {max_batch} of the batch's {s.shape[0]}")
        p_values.update(
            embedding_permutation_p_values(x, calibration_embeddings, n_permutations=n_permutations, seed=seed)
        )
    else:
        notes.append("no embeddings given: only the two rank tests ran")
    combined = min(1.0, len(p_values) * min(p_values.values()))
    return BatchTestResult(
        p_value=float(combined), p_values=p_values, n_batch=int(s.shape[0]), n_calibration=n_cal,
        n_permutations=int(n_permutations), seed=int(seed), notes=tuple(notes),
    )


def _whole_groups_up_to(groups: np.ndarray, limit: int, seed: list[int]) -> np.ndarray:
    """Mask of whole groups, taken in a seeded order independent of the data, up to ``limit`` members."""
    sizes = Counter(groups.tolist())
    names = sorted(sizes)
    take: set[str] = set()
    total = 0
    for j in np.random.default_rng(seed).permutation(len(names)):
        if total + sizes[names[j]] > limit and take:
            continue
        take.add(names[j])
        total += sizes[names[j]]
    return np.array([k in take for k in groups])


def _block_batch_tests(
    scores: np.ndarray, calibration_scores: np.ndarray, embeddings: np.ndarray | None,
    calibration_embeddings: np.ndarray | None, groups: Sequence[str], calibration_groups: Sequence[str], *,
    n_permutations: int, seed: int, max_batch: int,
) -> BatchTestResult:
    """:func:`batch_tests` with every output and whole groups permuted (see its ``groups``)."""
    s = _check_sample("scores", scores, 1)
    c = _check_sample("calibration_scores", calibration_scores, 1)
    if len(groups) != s.shape[0] or len(calibration_groups) != c.shape[0]:
        raise ValueError(f"groups must name the group of every score: got {len(groups)} for {s.shape[0]} batch "
                         f"scores and {len(calibration_groups)} for {c.shape[0]} calibration scores")
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1000:
        raise ValueError(f"n_permutations must be an integer >= 1000, got {n_permutations!r}")
    g = np.array([str(k) for k in groups], dtype=object)
    n_batch, n_calibration = int(s.shape[0]), int(c.shape[0])
    notes: list[str] = []
    x = None
    if embeddings is not None and calibration_embeddings is not None:
        x = _check_sample("embeddings", embeddings, 2)
        if x.shape[0] != s.shape[0]:
            raise ValueError(f"embeddings must have one row per score ({s.shape[0]}), got {x.shape[0]}")
    # Canonical order (by group, then score), so that the order of the batch changes no result.
    order = np.lexsort((s, g))
    s, g = s[order], g[order]
    x = None if x is None else x[order]
    if s.shape[0] > max_batch:
        keep = _whole_groups_up_to(g, max_batch, [seed, 1])
        notes.append(f"a seeded random subsample of whole groups ({int(keep.sum())} of the batch's {s.shape[0]} "
                     "outputs) was tested")
        s, g = s[keep], g[keep]
        x = None if x is None else x[keep]
    cg = np.array([str(k) for k in calibration_groups], dtype=object)
    y = None
    if x is not None and calibration_embeddings is not None:
        y = _check_sample("calibration_embeddings", calibration_embeddings, 2)
        if y.shape[0] != c.shape[0]:
            raise ValueError(f"calibration_embeddings must have one row per calibration score ({c.shape[0]}), "
                             f"got {y.shape[0]}")
    if c.shape[0] > MAX_PERMUTATION_CALIBRATION:
        keep_c = _whole_groups_up_to(cg, MAX_PERMUTATION_CALIBRATION, [seed, 2])
        notes.append(f"a seeded random subsample of whole calibration groups ({int(keep_c.sum())} of "
                     f"{c.shape[0]} outputs) was tested")
        c, cg = c[keep_c], cg[keep_c]
        y = None if y is None else y[keep_c]
    rng = np.random.default_rng(seed)
    signs = _block_sign_vectors(list(g), list(cg), int(n_permutations), rng)
    mw, ks = _rank_statistics(np.r_[s, c], signs)
    p_values = {"mann_whitney": _permutation_p_value(mw), "kolmogorov_smirnov": _permutation_p_value(ks)}
    if x is not None and y is not None:
        p_values.update(_embedding_p_values(np.vstack([x, y]), signs))
    else:
        notes.append("no embeddings given: only the two rank tests ran")
    notes.append(f"every output tested, whole groups permuted: {len(set(g))} batch groups ({s.shape[0]} outputs) "
                 f"against {len(set(cg))} calibration groups ({c.shape[0]} outputs)")
    combined = min(1.0, len(p_values) * min(p_values.values()))
    return BatchTestResult(
        p_value=float(combined), p_values=p_values, n_batch=n_batch, n_calibration=n_calibration,
        n_permutations=int(n_permutations), seed=int(seed), notes=tuple(notes), permutation_unit="group",
    )
