"""Verdicts: one per audited record, typed and frozen, with plain-words reasons."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conformance.files import atomic_write_bytes
from conformance.errors import InputFileError

WITHIN = "within_bounds"
OUT = "out_of_bounds"
NO_BASELINE = "no_baseline"
INVALID = "invalid"
VERDICTS = (WITHIN, OUT, NO_BASELINE, INVALID)


@dataclass(frozen=True)
class Verdict:
    """The judgement of one audited record, with what it was judged against."""

    row: int
    record_id: str | None
    model_version: str | None
    input_class: str | None
    verdict: str
    reason: str
    p_value: float | None = None
    score: float | None = None
    alpha: float | None = None
    baseline: str | None = None  # registry URI with version, models:/<name>/<version>
    baseline_digest: str | None = None
    approved_by: str | None = None  # who approved the baseline version used, and when
    approved_at: str | None = None
    test: str | None = None
    nearest: tuple[str, ...] = ()
    embedder: str | None = None  # fingerprint digest
    code_version: str = ""
    scored_at: str = ""
    record: dict[str, Any] = field(default_factory=dict)  # the record's own fields, unchanged
    #: With ``score --fdr Q``: flagged by Benjamini-Hochberg at FDR Q over the
    #: whole batch (``None`` when not asked, or when the record has no p-value).
    #: It depends on the other records of the batch, so it never changes ``verdict``.
    bh_flag: bool | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        """Flat row: the verdict's fields first, then the record's own fields."""
        out = asdict(self)
        record = out.pop("record")
        out["nearest"] = list(self.nearest)
        if self.bh_flag is None:  # the column appears only when --fdr was asked for
            del out["bh_flag"]
        for key, value in record.items():
            if key not in out:
                out[key] = value
        return out


@dataclass(frozen=True)
class GroupSummary:
    """The batch-level result for one (model_version, input_class) group."""

    model_version: str | None
    input_class: str | None
    n: int
    counts: dict[str, int]
    p_value: float | None
    verdict: str
    test: str | None
    baseline: str | None
    alpha: float | None
    reason: str
    #: Each batch test's p-value, B, seed and the combination (see conformance.stats.two_sample).
    tests: dict[str, Any] | None = None
    #: With ``score --fdr Q``: q, the batch-wide BH threshold, and how many were flagged.
    fdr: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model_version": self.model_version, "input_class": self.input_class, "n": self.n}
        out.update({name: self.counts.get(name, 0) for name in VERDICTS})
        out.update({"p_value": self.p_value, "verdict": self.verdict, "test": self.test,
                    "baseline": self.baseline, "alpha": self.alpha, "reason": self.reason})
        if self.tests is not None:
            out["tests"] = self.tests
        if self.fdr is not None:
            out["fdr"] = self.fdr
        return out


def csv_writer(buffer: io.StringIO, fieldnames: Sequence[str]) -> csv.DictWriter[str]:
    """A CSV writer as RFC 4180 has it: rows end in CRLF, so a field holding a CR or an LF (a record id, an
    output) is quoted and stays one field; a field holding the delimiter or a quote is quoted too."""
    return csv.DictWriter(buffer, fieldnames=list(fieldnames), extrasaction="ignore", lineterminator="\r\n")


def _cell_text(value: Any) -> Any:
    """Nested values become JSON text in flat formats (CSV, Parquet)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


#: What a spreadsheet reads as the start of a formula (OWASP's list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any, *, raw: bool = False) -> Any:
    """A CSV cell: nested values as JSON text and, unless ``raw``, a text that a spreadsheet would run as a
    formula (``=HYPERLINK(...)``, ``+cmd``, ``@SUM``, ...) prefixed with ``'`` so that it shows as text. Numbers are
    never prefixed; the JSON Lines and Parquet files and the ledger keep every text as it was."""
    text = _cell_text(value)
    if not raw and isinstance(text, str) and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def write_verdicts(verdicts: Sequence[Verdict], path: str | Path, *, raw_csv: bool = False) -> None:
    """Write verdicts in input order; format by extension; atomically (all or nothing). In CSV, formula-like
    texts are neutralised unless ``raw_csv`` (:func:`csv_cell`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    rows = [v.to_dict() for v in verdicts]
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    if not path.parent.exists():
        raise InputFileError(f"{path}: the folder {path.parent} does not exist")
    if suffix in (".jsonl", ".ndjson"):
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    elif suffix == ".csv":
        buffer = io.StringIO()
        writer = csv_writer(buffer, columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: csv_cell(v, raw=raw_csv) for k, v in r.items()})
        data = buffer.getvalue().encode("utf-8")
    elif suffix == ".parquet":
        import pandas as pd

        table = {c: [_cell_text(r.get(c)) for r in rows] for c in columns}
        for c, values in table.items():
            kinds = {type(v) for v in values if v is not None}
            if len(kinds) > 1 and not kinds <= {int, float}:
                # An invalid record may hold a number where others hold text
                # (e.g. output: 123); Parquet columns have one type, so keep it as JSON text.
                table[c] = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        frame = pd.DataFrame(table, columns=columns)
        buffer_b = io.BytesIO()
        frame.to_parquet(buffer_b, index=False)
        data = buffer_b.getvalue()
    else:
        raise InputFileError(f"{path}: the verdicts file must end in .jsonl, .csv or .parquet")
    atomic_write_bytes(path, data)


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically."""
    path = Path(path)
    if not path.parent.exists():
        raise InputFileError(f"{path}: the folder {path.parent} does not exist")
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
