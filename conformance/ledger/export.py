"""Exports of the ledger that can be verified offline."""

from __future__ import annotations

from pathlib import Path

from conformance.ledger.errors import LedgerError
from conformance.ledger.query import Filters
from conformance.ledger.store import Ledger


def export_parquet(ledger: Ledger, path: str | Path, filters: Filters | None = None) -> int:
    """Write the matching entries, every stored column with hashes and content, to a Parquet file.

    Without filters, every entry of the ledger; with filters, the matching
    verdict entries and the reviewers' sign-offs of them, in chain order. The
    export is self-verifying: ``verify_export`` recomputes each entry's hash
    from its ``content``, checks links between consecutive entries, and checks
    each sign-off against the verdict it signs. Written atomically; returns the
    number of entries.
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
    if filters is None or filters == Filters():
        rows = list(ledger.rows())
    else:
        rows = ledger.query_rows(filters)
        signed = {int(r["seq"]) for r in rows}
        rows += [s for s in ledger.signoff_rows(str(r["record_id"]) for r in rows if r["record_id"] is not None)
                 if s["previous_seq"] in signed]
        rows.sort(key=lambda r: int(r["seq"]))
    types = {"seq": pa.int64(), "baseline_version": pa.int64(), "previous_seq": pa.int64(),
             "score": pa.float64(), "p_value": pa.float64(), "alpha": pa.float64()}
    arrow_schema = pa.schema([(c.name, types.get(c.name, pa.string())) for c in schema.entries.columns])
    table = pa.Table.from_pylist(rows, schema=arrow_schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return len(rows)
