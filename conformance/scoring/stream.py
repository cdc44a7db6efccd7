"""Scoring chunk by chunk: any number of records in bounded memory.

:class:`StreamScorer` takes the rows of a batch a chunk at a time, in input order, and returns each
chunk's verdicts at once. A cell's baseline is resolved when its first record arrives, and once. What
the batch tests and Benjamini-Hochberg need of the whole batch is kept small: per (model_version,
input_class) group a :class:`~conformance.scoring.groups.GroupAccumulator` (counts and a seeded reservoir
of whole prompts), and one float per p-value. A record's verdict depends only on the record and its
baseline, so the verdicts are the same however the batch is cut into chunks.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from conformance._version import __version__
from conformance.baseline.format import Baseline
from conformance.embedder import EmbeddedTexts, Embedder, embed_inputs
from conformance.records import InvalidRow, Record
from conformance.scoring.groups import GroupAccumulator
from conformance.scoring.judge import judge
from conformance.scoring.reasons import invalid_reason
from conformance.stats.conformal import benjamini_hochberg, check_fdr
from conformance.verdict import INVALID, NO_BASELINE, GroupSummary, Verdict

Resolver = Callable[[str, str], "tuple[str, Baseline] | str"]
#: From a baseline's embedder fingerprint to the embedder that scores against it.
Chooser = Callable[[dict[str, Any]], Embedder]
Cell = tuple[str | None, str | None]


@dataclass(frozen=True)
class BatchFlags:
    """Benjamini-Hochberg over the p-values of a whole batch: the i-th flag belongs to the i-th verdict
    (in input order) that has a p-value."""

    flags: np.ndarray

    def apply(self, verdicts: Sequence[Verdict], start: int) -> tuple[list[Verdict], int]:
        """``verdicts`` with their ``bh_flag`` set, and the index of the next flag."""
        out = []
        for v in verdicts:
            if v.p_value is not None:
                v = replace(v, bh_flag=bool(self.flags[start]))
                start += 1
            out.append(v)
        return out, start


class StreamScorer:
    """Score a batch chunk by chunk; :meth:`finish` gives the group summaries (and the BH flags).

    Parameters
    ----------
    resolve : callable
        ``resolve(model_version, input_class)`` returns ``(registry_uri, baseline)`` or the reason why
        there is none; called once per cell.
    embedder : Embedder or callable
        An embedder, which must match every resolved baseline's fingerprint; or a function from a
        baseline's embedder fingerprint to the embedder to score it with (``None``, the default:
        :func:`conformance.embedder.embedder_for`, the process-wide embedder of the baseline's backend).
        Checked when the cell is resolved, before any of its records is judged.
    fdr : float, optional
        Benjamini-Hochberg at this false discovery rate over the whole batch (see :meth:`finish`).
    """

    def __init__(self, resolve: Resolver, *, embedder: Embedder | Chooser | None = None, fdr: float | None = None,
                 scored_at: str | None = None, progress: bool | None = None) -> None:
        self.resolve = resolve
        if embedder is None:
            from conformance.embedder import embedder_for

            embedder = embedder_for
        fixed = embedder if hasattr(embedder, "embed") else None
        self._choose: Chooser = (lambda _: fixed) if fixed is not None else embedder  # type: ignore[assignment, return-value]
        self.embedders: dict[tuple[str, str], Embedder] = {}
        self.fdr = None if fdr is None else check_fdr(fdr)
        self.scored_at = scored_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.progress = progress
        self.resolved: dict[tuple[str, str], tuple[str, Baseline] | str] = {}
        self.groups: dict[Cell, GroupAccumulator] = {}
        self._p_values = array("d")
        self._p_groups = array("i")
        self._group_index: dict[Cell, int] = {}
        self.n = 0

    def _resolve(self, cells: Sequence[tuple[str, str]]) -> None:
        for cell in cells:
            if cell in self.resolved:
                continue
            found = self.resolve(*cell)
            if not isinstance(found, str):
                embedder = self._choose(found[1].embedder)
                found[1].check_embedder(embedder.fingerprint)  # refuse before this cell is judged
                self.embedders[cell] = embedder
            self.resolved[cell] = found

    def score_chunk(self, rows: Sequence[Record | InvalidRow]) -> list[Verdict]:
        """The verdicts of ``rows`` (consecutive rows of the batch), in their order."""
        records = [r for r in rows if isinstance(r, Record)]
        by_cell: dict[tuple[str, str], list[Record]] = {}
        for record in records:
            by_cell.setdefault(record.cell, []).append(record)
        self._resolve(list(by_cell))
        have = [cell for cell in by_cell if not isinstance(self.resolved[cell], str)]
        by_row: dict[int, Verdict] = {}
        extras: dict[int, tuple[np.ndarray, float | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]] = {}
        # One embedding call per embedder (a baseline's backend decides it; nearly always one for all).
        users: dict[int, list[tuple[str, str]]] = {}
        for cell in have:
            users.setdefault(id(self.embedders[cell]), []).append(cell)
        for cells in users.values():
            embedder = self.embedders[cells[0]]
            to_embed = [r for cell in cells for r in by_cell[cell]]
            embedded = embedder.embed([r.output for r in to_embed], progress=self.progress,
                                      desc="embedding audited outputs")
            start = 0
            for cell in cells:
                found = self.resolved[cell]
                assert not isinstance(found, str)  # `have` holds only resolved cells
                uri, baseline = found
                cell_records = by_cell[cell]
                part = _slice(embedded, start, start + len(cell_records))
                start += len(cell_records)
                inputs = (embed_inputs(embedder, [r.input for r in cell_records], progress=self.progress)
                          if baseline.spec.is_combined
                          else None)
                batch_scores: dict[int, float] = {}
                residuals: dict[int, np.ndarray] = {}
                features: dict[int, np.ndarray] = {}
                style: dict[int, np.ndarray] = {}
                verdicts = judge(baseline, uri, cell_records, part, scored_at=self.scored_at, inputs=inputs,
                                 batch_scores=batch_scores, batch_residuals=residuals, batch_features=features,
                                 batch_style=style)
                for record, verdict, pooled in zip(cell_records, verdicts, part.pooled()):
                    by_row[verdict.row] = verdict
                    extras[record.row] = (pooled, batch_scores.get(record.row), residuals.get(record.row),
                                          features.get(record.row), style.get(record.row))
        for cell, cell_records in by_cell.items():
            reason = self.resolved[cell]
            if isinstance(reason, str):
                for record in cell_records:
                    by_row[record.row] = Verdict(
                        row=record.row, record_id=record.record_id, model_version=record.model_version,
                        input_class=record.input_class, verdict=NO_BASELINE, reason=reason,
                        code_version=__version__, scored_at=self.scored_at, record=record.to_dict(),
                    )
        for bad in rows:
            if isinstance(bad, InvalidRow):
                by_row[bad.row] = invalid_verdict(bad, self.scored_at)
        out = [by_row[row.row] for row in rows]
        for verdict in out:
            self._add(verdict, extras.get(verdict.row))
        return out

    def _add(self, verdict: Verdict,
             extra: tuple[np.ndarray, float | None, np.ndarray | None, np.ndarray | None, np.ndarray | None] | None,
             ) -> None:
        self.n += 1
        cell = (verdict.model_version, verdict.input_class)
        acc = self.groups.get(cell)
        if acc is None:
            acc = self.groups[cell] = GroupAccumulator(*cell)
            self._group_index[cell] = len(self._group_index)
        if extra is None:
            acc.add(verdict)
        else:
            acc.add(verdict, embedding=extra[0], batch_score=extra[1], residual=extra[2], features=extra[3],
                    style=extra[4])
        if verdict.p_value is not None:
            self._p_values.append(verdict.p_value)
            self._p_groups.append(self._group_index[cell])

    def merge(self, other: StreamScorer) -> None:
        """Add the batch statistics of ``other``, a scorer of the rows that follow this one's (the parts of a
        batch scored apart, merged in input order): groups, counts, reservoirs and p-values become those of
        one scorer fed every row, so :meth:`finish` gives the same summaries and flags (``conformance.spark``).
        Resolved cells are not merged: ``self`` resolves its own."""
        for cell, acc in other.groups.items():
            mine = self.groups.get(cell)
            if mine is None:
                self.groups[cell] = acc
                self._group_index[cell] = len(self._group_index)
            else:
                mine.merge(acc)
        index = list(other._group_index)
        self._p_values.extend(other._p_values)
        self._p_groups.extend(self._group_index[index[i]] for i in other._p_groups)
        self.n += other.n

    def finish(self) -> tuple[list[GroupSummary], BatchFlags | None]:
        """One summary per group in order of first appearance, and, with ``fdr``, the batch's BH flags
        (apply them to the verdicts with :meth:`BatchFlags.apply`)."""
        summaries = []
        for cell, acc in self.groups.items():
            found = self.resolved.get(cell) if cell[0] is not None and cell[1] is not None else None  # type: ignore[arg-type]
            summaries.append(acc.summary(found))
        if self.fdr is None:
            return summaries, None
        result = benjamini_hochberg(np.frombuffer(self._p_values, dtype=np.float64), self.fdr)
        flags = np.asarray(result.flags, dtype=bool)
        flagged = np.bincount(np.frombuffer(self._p_groups, dtype=np.int32)[flags],
                              minlength=len(self._group_index))
        batch = result.to_dict() | {"scope": "whole batch (all groups)", "procedure": "benjamini-hochberg"}
        summaries = [replace(s, fdr=batch | {"n_flagged_in_group": int(flagged[self._group_index[cell]])})
                     for s, cell in zip(summaries, self.groups)]
        return summaries, BatchFlags(flags)


def invalid_verdict(bad: InvalidRow, scored_at: str) -> Verdict:
    """The ``invalid`` verdict of a row that failed validation."""
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
