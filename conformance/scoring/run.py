"""Scoring a set of records: resolve each cell's baseline, embed once, judge, test each group as a batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np

from conformance._version import __version__
from conformance.baseline.format import Baseline
from conformance.embedder import EmbeddedTexts, Embedder, embed_inputs, get_embedder
from conformance.records import InvalidRow, Record, RecordSet
from conformance.scoring.groups import summarise
from conformance.scoring.judge import judge
from conformance.scoring.reasons import invalid_reason
from conformance.stats.conformal import benjamini_hochberg, check_fdr
from conformance.verdict import INVALID, NO_BASELINE, GroupSummary, Verdict


@dataclass(frozen=True)
class ScoringResult:
    """Verdicts in input order and one summary per (model_version, input_class) group (the doors wrap it:
    :class:`conformance.api.ScoreResult` adds counts, the ledger's report and conversion to pandas)."""

    verdicts: list[Verdict]
    summaries: list[GroupSummary]


Resolver = Callable[[str, str], "tuple[str, Baseline] | str"]


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
    if fdr is not None:
        fdr = check_fdr(fdr)
    scored_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    by_cell: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in record_set.records:
        by_cell[record.cell].append(record)
    resolved: dict[tuple[str, str], tuple[str, Baseline] | str] = {cell: resolve(*cell) for cell in by_cell}
    embedder = embedder or get_embedder()
    have = [cell for cell, r in resolved.items() if not isinstance(r, str)]
    if have:
        fingerprint = embedder.fingerprint
        for cell in have:
            uri_baseline = resolved[cell]
            assert not isinstance(uri_baseline, str)
            uri_baseline[1].check_embedder(fingerprint)  # refuse before anything is written
    to_embed = [r for cell in have for r in by_cell[cell]]
    embedded = embedder.embed([r.output for r in to_embed], progress=progress, desc="embedding audited outputs")
    by_row: dict[int, Verdict] = {}
    pooled: dict[int, np.ndarray] = {}
    batch_scores: dict[int, float] = {}
    residuals: dict[int, np.ndarray] = {}
    start = 0
    for cell in have:
        found = resolved[cell]
        assert not isinstance(found, str)  # `have` holds only resolved cells
        uri, baseline = found
        records = by_cell[cell]
        part = _slice(embedded, start, start + len(records))
        start += len(records)
        pooled.update(zip((r.row for r in records), part.pooled()))
        inputs = embed_inputs(embedder, [r.input for r in records]) if baseline.spec.is_combined else None
        for verdict in judge(baseline, uri, records, part, scored_at=scored_at, inputs=inputs,
                             batch_scores=batch_scores, batch_residuals=residuals):
            by_row[verdict.row] = verdict
    for cell, result in resolved.items():
        if isinstance(result, str):
            for record in by_cell[cell]:
                by_row[record.row] = Verdict(
                    row=record.row, record_id=record.record_id, model_version=record.model_version,
                    input_class=record.input_class, verdict=NO_BASELINE, reason=result,
                    code_version=__version__, scored_at=scored_at, record=record.to_dict(),
                )
    for bad in record_set.invalid:
        by_row[bad.row] = _invalid_verdict(bad, scored_at)
    verdicts = [by_row[row.row] for row in record_set.rows]
    summaries = summarise(verdicts, resolved, embeddings=pooled, batch_scores=batch_scores, residuals=residuals)
    if fdr is not None:
        verdicts, summaries = apply_fdr(verdicts, summaries, fdr)
    return ScoringResult(verdicts=verdicts, summaries=summaries)


def apply_fdr(
    verdicts: Sequence[Verdict], summaries: Sequence[GroupSummary], q: float
) -> tuple[list[Verdict], list[GroupSummary]]:
    """Benjamini-Hochberg at ``q`` over every verdict that has a p-value (the whole batch)."""
    tested = [i for i, v in enumerate(verdicts) if v.p_value is not None]
    result = benjamini_hochberg(np.array([verdicts[i].p_value for i in tested], dtype=np.float64), q)
    out = list(verdicts)
    for i, flag in zip(tested, result.flags):
        out[i] = replace(out[i], bh_flag=bool(flag))
    batch = result.to_dict() | {"scope": "whole batch (all groups)", "procedure": "benjamini-hochberg"}
    groups = []
    for summary in summaries:
        members = [v for v in out if (v.model_version, v.input_class) == (summary.model_version, summary.input_class)]
        groups.append(replace(summary, fdr=batch | {"n_flagged_in_group": sum(1 for v in members if v.bh_flag)}))
    return out, groups


def _invalid_verdict(bad: InvalidRow, scored_at: str) -> Verdict:
    def text(name: str) -> str | None:
        value = bad.raw.get(name)
        return value if isinstance(value, str) and value.strip() else None

    return Verdict(
        row=bad.row, record_id=bad.record_id, model_version=text("model_version"),
        input_class=text("input_class"), verdict=INVALID,
        reason=invalid_reason(bad.reason),
        code_version=__version__, scored_at=scored_at,
        record={k: v for k, v in bad.raw.items() if isinstance(k, str)},
    )


def _slice(embedded: EmbeddedTexts, start: int, stop: int) -> EmbeddedTexts:
    mask = (embedded.owner >= start) & (embedded.owner < stop)
    return EmbeddedTexts(chunks=embedded.chunks[mask], owner=embedded.owner[mask] - start,
                         n_tokens=embedded.n_tokens[start:stop])
