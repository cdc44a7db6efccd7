"""Querying the ledger: filters, and exports that can be verified offline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.ledger.errors import LedgerError
from conformance.verdict import VERDICTS

if TYPE_CHECKING:
    from conformance.ledger.store import Ledger


@dataclass(frozen=True)
class Filters:
    """Which entries ``query`` returns; ``None`` means any. Times are ISO 8601, compared in UTC."""

    model_version: str | None = None
    input_class: str | None = None
    verdict: str | None = None
    baseline_version: int | None = None
    since: str | None = None
    until: str | None = None
    record_id: str | None = None
    run_id: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise LedgerError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc_iso(value, name))
        if self.limit is not None and self.limit < 1:
            raise LedgerError(f"limit must be at least 1, got {self.limit}")


def utc_iso(value: str, name: str = "time") -> str:
    """An ISO 8601 date or time as ``YYYY-MM-DDTHH:MM:SS+00:00`` (naive times are taken as UTC)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise LedgerError(f"{name} must be an ISO 8601 date or time such as 2026-06-16 or "
                          f"2026-06-16T09:00:00Z, got {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).isoformat(timespec="seconds")



def export_parquet(ledger: Ledger, path: str | Path, filters: Filters | None = None) -> int:
    """Write the matching entries, every stored column with hashes and content, to a Parquet file.

    The export is self-verifying: ``verify_export`` recomputes each entry's
    hash from its ``content`` and checks links between consecutive entries.
    Written atomically; returns the number of entries.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from conformance.baseline import atomic_write_bytes
    from conformance.ledger import schema

    path = Path(path)
    if path.suffix.lower() != ".parquet":
        raise LedgerError(f"{path}: an export must be a .parquet file")
    if not path.parent.is_dir():
        raise LedgerError(f"{path}: the folder {path.parent} does not exist")
    rows = ledger.query_rows(filters)
    types = {"seq": pa.int64(), "baseline_version": pa.int64(), "previous_seq": pa.int64(),
             "score": pa.float64(), "p_value": pa.float64(), "alpha": pa.float64()}
    arrow_schema = pa.schema([(c.name, types.get(c.name, pa.string())) for c in schema.entries.columns])
    table = pa.Table.from_pylist(rows, schema=arrow_schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return len(rows)
