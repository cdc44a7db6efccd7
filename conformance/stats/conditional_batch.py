"""The batch test of a group: what its outputs say beyond what their inputs predict, against every approved prompt.

A silent model update changes *how* a model answers (longer, more headings, another tone), not what its answers
are about, and that is set by the questions. So each output is reduced to **input-conditional features**:

``residual``     its pooled embedding minus what a ridge regression on its input's embedding predicts;
``descriptors``  its text descriptors (length, list lines, headings, code blocks, refusal phrases, other
                 scripts and languages) and its input relevance, each minus what the regression predicts for its
                 input.

The regressions are fitted **label-blind** on the pooled sample (the batch and every approved reference output),
cross-fitted over folds of whole prompts chosen by a hash of the prompt key: each output's features come from
regressions fitted on the other folds. No feature depends on which side an output is on, so the pooled outputs
stay exchangeable under the null and a permutation test over whole prompts is exact, while the reference holds
every approved prompt the baseline kept, not only its calibration part.

``style``        its style counts (:mod:`conformance.stats.style`: the relative frequencies of the words,
                 punctuation marks and pairs of them that the most pooled outputs use), each minus what the
                 regression predicts for its input.
``shape``        its shape tokens (the same module: how its lines begin, how the answer opens and closes), those
                 that the most pooled outputs use, each minus what the regression predicts for its input.

Five statistics can compare the batch's features with the reference's, each for the observed labelling and ``B``
random labellings that move whole prompts, each an MMD (Gretton et al. 2012) of one view of the outputs, the first
three with a Gaussian kernel (bandwidth the median pairwise distance of the pooled sample, which no labelling
changes):

``residual_mmd``     the residual embeddings: what the outputs say beyond what their inputs predict;
``descriptor_mmd``   the descriptor residuals: how they are written, for their inputs;
``joint_mmd``        both, each view scaled to a median norm of one, so that neither drowns the other;
``style_mmd``        the style residuals, each scaled to a pooled standard deviation of one, with a linear kernel
                     between outputs of different prompts: the squared distance between the batch's mean and the
                     reference's (Burrows' Delta for a batch) less each prompt's pairs with itself, which would
                     otherwise grow as a side's outputs per prompt shrink.
``shape_mmd``        the shape residuals, scaled and compared in the same way as the style residuals.

Their p-values are combined over the same labellings, so the combined p-value is exact: the observed labelling and
the random ones are exchangeable under the null, and each labelling's combination is compared with the others'.
Baselines built since 0.10.0 combine ``joint_mmd``, ``style_mmd`` and ``shape_mmd`` by **Fisher's method** (each
labelling's ``-sum(log p)``, a nonparametric combination, Pesarin 2001): the joint view already holds the first two,
and the three left see different things (what and how, which words, how lines and answers begin and end), so that
evidence from each adds up; 0.9.0's combine the first two of them the same way. Baselines built by 0.6.0-0.8.0
combine every statistic their views allow (three before style counts were kept, format 4; four after) by **minP**
(Westfall & Young 1993): each labelling's smallest per-statistic p-value. Each rule was chosen on the design swaps
of arena-hard-v0.1 and confirmed on batches not looked at before (docs/validation.md, section 10).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from conformance.stats.components import ridge_coef, unit_rows
from conformance.stats.style import frequent_columns
from conformance.stats.two_sample import (
    block_labellings,
    median_gaussian_kernel,
    quadratic_forms,
    sign_matrix,
    squared_distances,
)

#: The statistics of :func:`conditional_batch_test`, in the order they are reported (the last two only with style
#: counts).
STATISTICS = ("residual_mmd", "descriptor_mmd", "joint_mmd", "style_mmd", "shape_mmd")
#: The statistics that need the outputs' style counts.
STYLE_STATISTICS = ("style_mmd", "shape_mmd")
#: The statistics whose p-values baselines built since 0.10.0 combine (``joint_mmd`` holds both views of the first
#: two), by :data:`VERDICT_COMBINATION`.
VERDICT_STATISTICS = ("joint_mmd", "style_mmd", "shape_mmd")
VERDICT_COMBINATION = "fisher"
#: Folds of whole prompts over which the pooled regressions are cross-fitted.
FOLDS = 5
#: Ridge penalty of the pooled regressions (unit-norm embeddings, as the per-output score's).
RIDGE = 1.0
#: Descriptor scales are at least this (after robust scaling a constant descriptor would divide by zero).
SCALE_FLOOR = 1e-6


@dataclass(frozen=True)
class ConditionalBatchResult:
    """The combined p-value, each statistic's own permutation p-value, how they were combined, and what was
    compared."""

    p_value: float
    p_values: dict[str, float]
    combination: str
    n_batch: int
    n_reference: int
    n_batch_prompts: int
    n_reference_prompts: int
    n_permutations: int
    seed: int
    shifts: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {
            "p_value": self.p_value, "p_values": dict(self.p_values), "combination": self.combination,
            "n_batch": self.n_batch, "n_reference": self.n_reference, "n_batch_prompts": self.n_batch_prompts,
            "n_reference_prompts": self.n_reference_prompts, "n_permutations": self.n_permutations,
            "seed": self.seed, "permutation_unit": "prompt", "descriptor_shifts": dict(self.shifts),
        }


def fold_of(key: str, folds: int = FOLDS) -> int:
    """The cross-fitting fold of a prompt: a hash of its key, so the same on either side of the test."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % folds


def _cross_fitted_residuals(x: np.ndarray, targets: np.ndarray, folds: np.ndarray, ridge: float) -> np.ndarray:
    """Each row's target minus the prediction of a ridge regression on ``x`` fitted on the other folds."""
    out = np.empty_like(targets)
    present = np.unique(folds)
    for f in present:
        test = folds == f
        train = ~test if present.size > 1 else test
        xm, tm = x[train].mean(axis=0), targets[train].mean(axis=0)
        xc = x[train] - xm
        coef = ridge_coef(xc, targets[train] - tm, ridge)
        out[test] = (targets[test] - tm) - (x[test] - xm) @ coef
    return out


def _robust_scaled(z: np.ndarray) -> np.ndarray:
    centre = np.median(z, axis=0)
    mad = 1.4826 * np.median(np.abs(z - centre), axis=0)
    return (z - centre) / np.maximum(np.maximum(mad, z.std(axis=0)), SCALE_FLOOR)


def _standardised(z: np.ndarray) -> np.ndarray:
    return (z - z.mean(axis=0)) / np.maximum(z.std(axis=0), SCALE_FLOOR)


def conditional_features(
    inputs: np.ndarray, outputs: np.ndarray, descriptors: np.ndarray, prompt_keys: Sequence[str], *,
    folds: int = FOLDS, ridge: float = RIDGE, style: sparse.spmatrix | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Residual embeddings, scaled descriptor residuals and (with ``style``) scaled style residuals of the pooled
    rows, cross-fitted label-blind.

    ``inputs`` and ``outputs`` are pooled embeddings, one row per output; ``descriptors`` the descriptor columns
    to compare (the relevance ``1 - cos(input, output)`` is added as one more); ``style`` the pooled rows' style
    counts (:func:`conformance.stats.style.style_counts`), of which the columns that the most rows use are kept and
    standardised. Each descriptor residual is divided by its pooled scale (the larger of its MAD and standard
    deviation), each style residual by its standard deviation. Nothing here sees which rows are the batch.
    """
    x = unit_rows(np.asarray(inputs, dtype=np.float64))
    y = unit_rows(np.asarray(outputs, dtype=np.float64))
    d = np.asarray(descriptors, dtype=np.float64)
    if not (x.shape[0] == y.shape[0] == d.shape[0] == len(prompt_keys)):
        raise ValueError(f"inputs, outputs, descriptors and prompt_keys must have one row per output, got "
                         f"{x.shape[0]}, {y.shape[0]}, {d.shape[0]} and {len(prompt_keys)}")
    relevance = 1.0 - np.einsum("ij,ij->i", x, y)
    d = np.column_stack([d, relevance])
    s = np.zeros((x.shape[0], 0))
    if style is not None:
        if style.shape[0] != x.shape[0]:
            raise ValueError(f"style must have one row per output, got {style.shape[0]} for {x.shape[0]}")
        s = _standardised(sparse.csr_matrix(style)[:, frequent_columns(style)].toarray().astype(np.float64))
    fold = np.array([fold_of(str(k), folds) for k in prompt_keys])
    # One regression per fold for every target: the output embedding's columns, the descriptors', the style's.
    every = _cross_fitted_residuals(x, np.hstack([y, d, s]), fold, ridge)
    q = y.shape[1] + d.shape[1]
    residual, d_res = every[:, :y.shape[1]], every[:, y.shape[1]:q]
    s_res = _standardised(every[:, q:]) if style is not None else None
    return residual, _robust_scaled(d_res), s_res


def shape_features(inputs: np.ndarray, style: sparse.spmatrix, prompt_keys: Sequence[str], *, folds: int = FOLDS,
                   ridge: float = RIDGE) -> np.ndarray:
    """Scaled shape residuals of the pooled rows, cross-fitted label-blind as :func:`conditional_features`'s style
    residuals: of the shape block of ``style`` (:func:`conformance.stats.style.style_counts`), the columns that the
    most rows use, standardised, each minus what a ridge regression on the input embedding fitted on the other folds
    predicts, standardised again."""
    x = unit_rows(np.asarray(inputs, dtype=np.float64))
    if style.shape[0] != x.shape[0] or len(prompt_keys) != x.shape[0]:
        raise ValueError(f"inputs, style and prompt_keys must have one row per output, got {x.shape[0]}, "
                         f"{style.shape[0]} and {len(prompt_keys)}")
    counts = sparse.csr_matrix(style)
    z = _standardised(counts[:, frequent_columns(counts, blocks=("shape",))].toarray().astype(np.float64))
    fold = np.array([fold_of(str(k), folds) for k in prompt_keys])
    return _standardised(_cross_fitted_residuals(x, z, fold, ridge))


def _unit_median_norm(z: np.ndarray) -> np.ndarray:
    norm = float(np.median(np.linalg.norm(z, axis=1)))
    return z / (norm if norm > 0 else 1.0)


def _between_prompts_linear(signs: np.ndarray, z: np.ndarray, on_x: np.ndarray, member: np.ndarray) -> np.ndarray:
    """``a^T Z Z^T a`` without the pairs of outputs of one prompt: each labelling's squared distance between the
    batch's and the reference's mean rows of ``z``, less what each output (and each prompt's outputs together)
    contributes with itself. Those terms grow as the side's outputs shrink, with no difference between the sides
    (``||z||²`` is hundreds for standardised columns), so with them a batch of prompts with fewer outputs each than
    the reference's would look unlike it; without them the statistic compares outputs of different prompts only."""
    difference = signs @ z
    prompt_sums = np.zeros((on_x.shape[1], z.shape[1]))
    np.add.at(prompt_sums, member, z)
    own = np.einsum("pj,pj->p", prompt_sums, prompt_sums)
    labels = on_x[:, member]
    size_x = labels.sum(axis=1)
    size_y = labels.shape[1] - size_x
    within = on_x.astype(np.float64) @ own / size_x ** 2 + (~on_x).astype(np.float64) @ own / size_y ** 2
    return np.einsum("bj,bj->b", difference, difference) - within


def _statistics(signs: np.ndarray, residual: np.ndarray, descriptors: np.ndarray,
                style: np.ndarray | None = None, on_x: np.ndarray | None = None,
                member: np.ndarray | None = None, names: Sequence[str] | None = None,
                shape: np.ndarray | None = None) -> np.ndarray:
    """The statistics ``names`` (of :data:`STATISTICS`; by default every one the views given allow) for every
    labelling, one row of ``signs`` each, one column per name: a biased MMD² (``a^T K a``) for the first three, and
    for the style and shape ones (only with ``style`` or ``shape``, ``on_x`` and ``member``) the linear-kernel MMD²
    between outputs of different prompts (:func:`_between_prompts_linear`)."""
    if names is None:
        names = STATISTICS[:3] + (("style_mmd",) if style is not None else ()) \
            + (("shape_mmd",) if shape is not None else ())
    views = {"residual_mmd": lambda: residual, "descriptor_mmd": lambda: descriptors,
             "joint_mmd": lambda: np.hstack([_unit_median_norm(residual), _unit_median_norm(descriptors)])}
    columns = []
    for name in names:
        if name in views:
            columns.append(quadratic_forms(signs, median_gaussian_kernel(squared_distances(views[name]()))))
        elif name in STYLE_STATISTICS:
            view = style if name == "style_mmd" else shape
            if view is None or on_x is None or member is None:
                raise ValueError(f"the statistic {name} needs its residuals and the labellings of whole prompts")
            columns.append(_between_prompts_linear(signs, view, on_x, member))
        else:
            raise ValueError(f"unknown statistic {name!r}; known: {', '.join(STATISTICS)}")
    return np.column_stack(columns)


def _column_p_values(stats_: np.ndarray) -> np.ndarray:
    """For every labelling and statistic, the share of the ``B + 1`` labellings at least as extreme (ties count,
    with a relative tolerance so float rounding of an equal statistic is a tie)."""
    n = stats_.shape[0]
    out = np.empty_like(stats_)
    for j in range(stats_.shape[1]):
        column = stats_[:, j]
        tol = 1e-12 * np.maximum(1.0, np.abs(column))
        ordered = np.sort(column)
        out[:, j] = (n - np.searchsorted(ordered, column - tol, side="left")) / n
    return out


def min_p_combination(stats_: np.ndarray) -> tuple[float, np.ndarray]:
    """The minP combined p-value of row 0 (the observed labelling) against all ``B + 1`` rows, and row 0's
    per-statistic p-values ``#{b: T_b >= T_0} / (B + 1)`` (the observed labelling counted, as is usual)."""
    p = _column_p_values(stats_)
    smallest = p.min(axis=1)
    combined = float(np.sum(smallest <= smallest[0] * (1 + 1e-12)) / stats_.shape[0])
    return combined, p[0]


def fisher_combination(stats_: np.ndarray) -> tuple[float, np.ndarray]:
    """Fisher's combined p-value of row 0 against all ``B + 1`` rows, and row 0's per-statistic p-values: each
    labelling's ``-sum(log p_j)`` over its per-statistic permutation p-values, compared across the labellings (a
    nonparametric combination, Pesarin 2001). Exact for the same reason as :func:`min_p_combination`; it gains
    where the statistics each see a little, and pays more than minP for a statistic that sees nothing."""
    p = _column_p_values(stats_)
    t = -np.log(p).sum(axis=1)
    combined = float(np.sum(t >= t[0] - 1e-12 * max(1.0, abs(float(t[0])))) / stats_.shape[0])
    return combined, p[0]


#: How the statistics' permutation p-values are combined, by name.
COMBINATIONS = {"minP": min_p_combination, "fisher": fisher_combination}


def conditional_batch_test(
    inputs: np.ndarray, outputs: np.ndarray, descriptors: np.ndarray, prompt_keys: Sequence[str],
    reference_inputs: np.ndarray, reference_outputs: np.ndarray, reference_descriptors: np.ndarray,
    reference_prompt_keys: Sequence[str], *, n_permutations: int = 1000, seed: int = 0, folds: int = FOLDS,
    descriptor_names: Sequence[str] | None = None, style: sparse.spmatrix | None = None,
    reference_style: sparse.spmatrix | None = None, statistics: Sequence[str] | None = None,
    combination: str = "fisher",
) -> ConditionalBatchResult:
    """Test a batch of outputs against the approved reference outputs of its cell, whole prompts permuted.

    Parameters
    ----------
    inputs, outputs : ndarray of shape (n, dim)
        The batch's pooled input and output embeddings, one row per output.
    descriptors : ndarray of shape (n, q)
        Their text descriptors (:func:`conformance.stats.descriptors.describe`).
    prompt_keys : sequence of str
        Each output's prompt (or conversation): outputs of one prompt move together.
    reference_inputs, reference_outputs, reference_descriptors, reference_prompt_keys
        The same of the approved reference outputs.
    n_permutations : int, default 1000
        ``B``, at least 1000.
    seed : int, default 0
        Seed of the random labellings.
    folds : int, default 5
        Folds of whole prompts for the cross-fitted regressions.
    descriptor_names : sequence of str, optional
        Names of the descriptor columns, for :attr:`ConditionalBatchResult.shifts`.
    style, reference_style : sparse matrix, optional
        The style counts (:func:`conformance.stats.style.style_counts`) of the batch's outputs and of the
        reference's, both or neither: needed for ``style_mmd`` and ``shape_mmd``.
    statistics : sequence of str, optional
        Which of :data:`STATISTICS` to compute and combine: by default :data:`VERDICT_STATISTICS` (``style_mmd``
        and ``shape_mmd`` only with style counts). Baselines built before 0.10.0 ask for the ones they were built
        with.
    combination : {"fisher", "minP"}, default "fisher"
        How their permutation p-values are combined (:data:`COMBINATIONS`); baselines built before 0.9.0 use minP.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> def part(n, shift=0.0):
    ...     x = rng.normal(size=(n, 8)); y = x + rng.normal(size=(n, 8)); y[:, 0] += shift
    ...     return x, y, rng.normal(size=(n, 2)), [f"p{i}" for i in range(n)]
    >>> a, r = part(40, shift=3.0), part(200)
    >>> conditional_batch_test(*a, *[r[0], r[1], r[2], [f"q{i}" for i in range(200)]]).p_value < 0.01
    True
    """
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1000:
        raise ValueError(f"n_permutations must be an integer >= 1000, got {n_permutations!r}")
    n_x, n_y = len(prompt_keys), len(reference_prompt_keys)
    if n_x == 0 or n_y == 0:
        raise ValueError("the batch and the reference must each hold at least one output")
    if (style is None) != (reference_style is None):
        raise ValueError("style and reference_style must be given both or neither")
    if combination not in COMBINATIONS:
        raise ValueError(f"combination must be one of {', '.join(COMBINATIONS)}, got {combination!r}")
    if statistics is None:
        statistics = tuple(n for n in VERDICT_STATISTICS if n not in STYLE_STATISTICS or style is not None)
    statistics = tuple(statistics)
    if not statistics or len(set(statistics)) != len(statistics) or not set(statistics) <= set(STATISTICS):
        raise ValueError(f"statistics must be distinct names of {', '.join(STATISTICS)}, got {list(statistics)}")
    for name in STYLE_STATISTICS:
        if name in statistics and style is None:
            raise ValueError(f"the statistic {name} needs style and reference_style (the outputs' style counts)")
    keys = [str(k) for k in prompt_keys] + [str(k) for k in reference_prompt_keys]
    pooled_style = None if style is None else sparse.vstack([style, reference_style], format="csr")
    residual, scaled, style_res = conditional_features(
        np.vstack([inputs, reference_inputs]), np.vstack([outputs, reference_outputs]),
        np.vstack([descriptors, reference_descriptors]), keys, folds=folds, style=pooled_style)
    shape_res = None
    if "shape_mmd" in statistics and pooled_style is not None:
        shape_res = shape_features(np.vstack([inputs, reference_inputs]), pooled_style, keys, folds=folds)
    on_x, member = block_labellings(keys[:n_x], keys[n_x:], int(n_permutations), np.random.default_rng(seed))
    signs = sign_matrix(on_x, member)
    combined, each = COMBINATIONS[combination](
        _statistics(signs, residual, scaled, style_res, on_x, member, names=statistics, shape=shape_res))
    names = list(descriptor_names or [f"descriptor_{j}" for j in range(scaled.shape[1] - 1)]) + ["relevance"]
    diff = scaled[:n_x].mean(axis=0) - scaled[n_x:].mean(axis=0)
    return ConditionalBatchResult(
        p_value=combined, p_values={name: float(p) for name, p in zip(statistics, each)}, combination=combination,
        n_batch=n_x, n_reference=n_y, n_batch_prompts=len(set(keys[:n_x])), n_reference_prompts=len(set(keys[n_x:])),
        n_permutations=int(n_permutations), seed=int(seed),
        shifts={name: float(v) for name, v in zip(names, diff)})
