"""Nonconformity scores: how unusual an output is next to the approved reference bank.

The ``knn_cosine`` score (and a component of the default ``combined`` score,
see :mod:`conformance.stats.combined`) is the cosine distance from an output to its k-th nearest
approved output in the reference (fit) bank. A long output is embedded in
chunks; its score is that of its most unusual chunk, so an off-policy paragraph
at the end of a long answer is not diluted away.
"""

from __future__ import annotations

import numpy as np

from conformance import defaults

DEFAULT_K = defaults.K


def knn_cosine_distances(queries: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distance of each unit-norm query to its k-th nearest reference row.

    Returns the distances and, per query, the indices of its k nearest
    reference rows (nearest first).
    """
    if not 1 <= k <= reference.shape[0]:
        raise ValueError(f"k must be in [1, {reference.shape[0]}] (the reference size), got {k}")
    # float64 for the similarity so the result does not depend on BLAS blocking.
    sims = queries.astype(np.float64) @ reference.astype(np.float64).T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    kth = np.take_along_axis(sims, idx[:, k - 1 : k], axis=1)[:, 0]
    return 1.0 - kth, idx


def chunked_knn_scores(
    chunks: np.ndarray, owner: np.ndarray, n_texts: int, reference: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-text score (max over its chunks) and the reference indices nearest its worst chunk."""
    distances, idx = knn_cosine_distances(chunks, reference, k)
    scores = np.full(n_texts, -np.inf)
    worst = np.zeros(n_texts, dtype=np.int64)
    for i, (text, d) in enumerate(zip(owner, distances)):
        if d > scores[text]:
            scores[text] = d
            worst[text] = i
    return scores, idx[worst]
