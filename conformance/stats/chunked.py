"""Scores of texts embedded in chunks: a text is as unusual as its most unusual chunk.

A long output is embedded in overlapping windows; taking the maximum over them keeps an off-policy
paragraph at the end of a long answer from being averaged away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conformance.stats.combined import CombinedScorer
from conformance.stats.components import smooth_max


@dataclass(frozen=True)
class TextScores:
    """Per text, everything a verdict needs from the combined score, from one pass over its chunks."""

    #: The baseline's rule, maximum over the text's chunks (what the p-value is computed from).
    score: np.ndarray
    #: :data:`BATCH_COMBINATION`, maximum over the chunks (what the batch rank tests use).
    batch_score: np.ndarray
    #: Facet baselines only: the largest facet of the chunk that set the score, and its value (a z-value:
    #: about 2.3-2.6 is the approved outputs' 99th percentile). For a verdict's reason.
    top_facet: list[tuple[str, float]] | None
    #: Facet baselines only: every facet's value on the chunk that set the score (one row per text, columns
    #: as ``facet_names``). ``build`` keeps the calibration part's spread of each, for the reason's comparison.
    facets: np.ndarray | None = None
    facet_names: list[str] | None = None


def chunked_text_scores(
    scorer: CombinedScorer, chunks: np.ndarray, owner: np.ndarray, inputs: np.ndarray, descriptors: np.ndarray
) -> TextScores:
    """:class:`TextScores` of each text, the standardised components computed once per chunk."""
    owner = np.asarray(owner)
    z = scorer.standardised_components(chunks, inputs[owner], descriptors[owner])
    batch = np.full(inputs.shape[0], -np.inf)
    np.maximum.at(batch, owner, smooth_max(z))
    if scorer.combination != "facets":
        return TextScores(batch, batch.copy(), None)
    facets, names = scorer.facet_values(z), scorer.facet_names(z.shape[1])
    per_chunk = smooth_max(facets)
    score = np.full(inputs.shape[0], -np.inf)
    setting = np.zeros(inputs.shape[0], dtype=np.int64)  # the chunk that sets each text's score
    for i, o in enumerate(owner.tolist()):
        if per_chunk[i] > score[o]:
            score[o], setting[o] = per_chunk[i], i
    values = facets[setting]
    top = [(names[j], float(values[t, j])) for t, j in enumerate(np.argmax(values, axis=1).tolist())]
    return TextScores(score, batch, top, values, names)


def chunked_combined_scores(
    scorer: CombinedScorer, chunks: np.ndarray, owner: np.ndarray, inputs: np.ndarray, descriptors: np.ndarray,
    *, combination: str | None = None,
) -> np.ndarray:
    """Per-text combined score: the maximum over its chunks (each chunk scored with its text's input
    and descriptors), so an off-policy paragraph in a long output is not averaged away."""
    owner = np.asarray(owner)
    per_chunk = scorer.score_samples(chunks, inputs[owner], descriptors[owner], combination=combination)
    out = np.full(inputs.shape[0], -np.inf)
    np.maximum.at(out, owner, per_chunk)
    return out
