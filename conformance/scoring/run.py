"""Scoring a set of records: resolve each cell's baseline, embed once, judge, test each group as a batch."""

from __future__ import annotations

from dataclasses import dataclass

from conformance.embedder import Embedder
from conformance.records import RecordSet
from conformance.scoring.stream import Resolver, StreamScorer
from conformance.verdict import GroupSummary, Verdict


@dataclass(frozen=True)
class ScoringResult:
    """Verdicts in input order and one summary per (model_version, input_class) group (the doors wrap it:
    :class:`conformance.api.ScoreResult` adds counts, the ledger's report and conversion to pandas)."""

    verdicts: list[Verdict]
    summaries: list[GroupSummary]


def score_record_set(
    record_set: RecordSet,
    resolve: Resolver,
    *,
    embedder: Embedder | None = None,
    progress: bool | None = None,
    fdr: float | None = None,
) -> ScoringResult:
    """Score every row of ``record_set``; ``resolve(model_version, input_class)``
    returns ``(registry_uri, baseline)`` or a reason why there is no baseline.

    With ``fdr`` (a target false discovery rate q in (0, 1)), Benjamini-Hochberg
    runs over the conformal p-values of *every* scored record of the batch, all
    groups together: each such verdict gets ``bh_flag`` and each group summary
    the batch-wide threshold and its number of flagged records. The ``verdict``
    itself stays ``p_value <= alpha``: a BH flag depends on the rest of the
    batch, a verdict only on its record and baseline.
    """
    scorer = StreamScorer(resolve, embedder=embedder, fdr=fdr, progress=progress)
    verdicts = scorer.score_chunk(record_set.rows)
    summaries, flags = scorer.finish()
    if flags is not None:
        verdicts, _ = flags.apply(verdicts, 0)
    return ScoringResult(verdicts=verdicts, summaries=summaries)
