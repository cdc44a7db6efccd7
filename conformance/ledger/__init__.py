"""The verdict ledger: durable, append-only, hash-chained, reconstructable (see :mod:`conformance.reconstruct`).

Every scoring run appends its verdicts, and a reviewer's decision about a
verdict is appended as a sign-off that names it; each entry's hash covers its
canonical content and the previous entry's hash, so altering, removing,
inserting or reordering an entry is detected by :func:`verify`. SQLite by
default (beside the embedded MLflow store), PostgreSQL for teams. See
``docs/ledger.md``.
"""

from conformance.ledger.entry import Entry
from conformance.ledger.errors import (
    EntryNotFoundError,
    LedgerConnectionError,
    LedgerError,
    LedgerNotFoundError,
    LedgerSchemaError,
    SignOffError,
)
from conformance.ledger.export import export_parquet
from conformance.ledger.query import Filters
from conformance.ledger.signoff import DECISIONS, SignOff
from conformance.ledger.store import AppendReport, Head, Ledger, default_ledger_url, resolve_ledger_url
from conformance.ledger.verify import VerifyReport, verify, verify_export

__all__ = [
    "DECISIONS",
    "AppendReport",
    "Entry",
    "EntryNotFoundError",
    "Filters",
    "Head",
    "Ledger",
    "LedgerConnectionError",
    "LedgerError",
    "LedgerNotFoundError",
    "LedgerSchemaError",
    "SignOff",
    "SignOffError",
    "VerifyReport",
    "default_ledger_url",
    "export_parquet",
    "resolve_ledger_url",
    "verify",
    "verify_export",
]
