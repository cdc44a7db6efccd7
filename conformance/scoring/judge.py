"""Judging records of one cell against its baseline: scores, p-values, verdicts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from conformance._version import __version__
from conformance.baseline.format import Baseline
from conformance.defaults import N_NEAREST
from conformance.embedder import EmbeddedTexts, fingerprint_digest
from conformance.records import Record
from conformance.scoring.reasons import output_reason, test_name
from conformance.stats.chunked import chunked_text_scores
from conformance.stats.combined import CombinedScorer
from conformance.stats.descriptors import KNOWN_DESCRIPTORS, describe
from conformance.stats.knn import chunked_knn_scores
from conformance.stats.style import style_counts, style_rows
from conformance.verdict import OUT, WITHIN, Verdict


def flag_threshold(baseline: Baseline) -> float:
    """The p-value at or below which an output is out of bounds: alpha, or the
    calibration-conditional cut-off when the baseline was built with ``delta``."""
    return baseline.spec.flag_threshold(baseline.alpha)


def judge(
    baseline: Baseline,
    uri: str,
    records: Sequence[Record],
    embedded: EmbeddedTexts,
    *,
    scored_at: str,
    inputs: np.ndarray | None = None,
    batch_scores: dict[int, float] | None = None,
    batch_residuals: dict[int, np.ndarray] | None = None,
    batch_features: dict[int, np.ndarray] | None = None,
    batch_style: dict[int, np.ndarray] | None = None,
) -> list[Verdict]:
    """Verdicts for records of the baseline's cell, given their embeddings (and, for the
    combined score, one pooled embedding per record's input). For a baseline that carries
    batch calibration scores, each record's score under the batch tests' rule goes into
    ``batch_scores`` (by row), if given; for one that carries calibration residuals, each
    record's residual embedding goes into ``batch_residuals``; for one whose batch test is ``conditional``, each
    record's input embedding and descriptors (one row) go into ``batch_features``, and, when it keeps its
    reference's style counts, the record's style counts into ``batch_style`` (:func:`style_rows`)."""
    spec = baseline.spec
    scores, nearest_idx = chunked_knn_scores(embedded.chunks, embedded.owner, embedded.n_texts, baseline.reference,
                                             spec.k)
    input_p: list[float | None] = [None] * len(records)
    top_facets: Sequence[tuple[str, float] | None] = [None] * len(records)
    if spec.is_combined:
        if inputs is None:
            raise ValueError("a baseline with the combined score needs the records' input embeddings")
        assert spec.combined_params is not None  # a combined spec always has them
        model = CombinedScorer.from_state(dict(spec.combined_params), baseline.scorer_state)
        window = int(baseline.embedder["chunking"]["window"])
        # The descriptors the baseline was fitted with, in its order (a baseline built before a descriptor
        # was added does not know it).
        names = [c for c in spec.components if c in KNOWN_DESCRIPTORS]
        # The conditional batch test's descriptors too (the score's since 0.8.0 take the language against the
        # input's, the batch test's do not): every one described once.
        batch_names = list(spec.batch_descriptors) if batch_features is not None and spec.batch_test == "conditional" \
            else []
        every = list(dict.fromkeys([*names, *batch_names]))
        described = describe([r.output for r in records], embedded.n_tokens.tolist(), window=window, names=every,
                             inputs=[r.input for r in records])
        desc = described[:, [every.index(n) for n in names]]
        text = chunked_text_scores(model, embedded.chunks, embedded.owner, inputs, desc)
        scores = text.score
        if text.top_facet is not None:  # a scorer combined by facets (spec.combined_params["combination"])
            top_facets = text.top_facet
        if batch_scores is not None and spec.batch_score == "batch_rule":
            batch_scores.update(zip((r.row for r in records), text.batch_score.tolist()))
        if batch_residuals is not None and spec.batch_embedding == "residual":
            batch_residuals.update(zip((r.row for r in records), model.residual_embeddings(embedded.pooled(), inputs)))
        input_p = [float(p) for p in model.input_p_values(inputs)]
        if batch_features is not None and spec.batch_test == "conditional":
            batch_features.update(zip((r.row for r in records), np.hstack(
                [np.asarray(inputs, dtype=np.float64), described[:, [every.index(n) for n in batch_names]]])))
    if (batch_style is not None and spec.batch_test == "conditional"
            and baseline.batch_reference_style_values is not None):
        batch_style.update(zip((r.row for r in records), style_rows(style_counts([r.output for r in records]))))
    p_values = baseline.p_values(scores)
    cut = flag_threshold(baseline)
    embedder_digest = fingerprint_digest(baseline.embedder)
    verdicts = []
    for record, score, p_value, idx, in_p, top in zip(records, scores, p_values, nearest_idx, input_p, top_facets):
        owners: list[int] = []
        for chunk in idx:
            owner = int(baseline.reference_owner[chunk])
            if owner not in owners:
                owners.append(owner)
        verdicts.append(
            Verdict(
                row=record.row,
                record_id=record.record_id,
                model_version=record.model_version,
                input_class=record.input_class,
                verdict=OUT if p_value <= cut else WITHIN,
                reason=output_reason(baseline, uri, float(score), float(p_value), in_p, top),
                p_value=float(p_value),
                score=float(score),
                alpha=baseline.alpha,
                baseline=uri,
                baseline_digest=baseline.digest,
                test=test_name(baseline),
                nearest=tuple(baseline.reference_records[o]["record_id"] for o in owners[:N_NEAREST]),
                embedder=embedder_digest,
                code_version=__version__,
                scored_at=scored_at,
                record=record.to_dict(),
            )
        )
    return verdicts

