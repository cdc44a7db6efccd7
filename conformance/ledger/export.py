"""Exports of the ledger that can be verified offline."""

from __future__ import annotations

from pathlib import Path

from conformance.ledger.errors import LedgerError
from conformance.ledger.query import Filters
from conformance.ledger.store import Ledger


def export_parquet(ledger: Ledger, path: str | Path, filters: Filters | None = None) -> int:
    """Write the matching entries, every stored column with hashes and content, to a Parquet file.

    The export is self-verifying: ``verify_export`` recomputes each entry's
    hash from its ``content`` and checks links between consecutive entries.
    Written atomically; returns the number of entries.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from conformance.files import atomic_write_bytes
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
