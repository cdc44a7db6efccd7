"""Errors of the verdict ledger.

All subclass :class:`conformance.errors.ConformanceError`, so the command line
maps them to exit code 2. A tampered chain is *not* an error: ``verify``
reports it as a finding (exit code 1).
"""

from __future__ import annotations

from conformance.errors import ConformanceError


class LedgerError(ConformanceError):
    """The ledger cannot do what was asked."""


class LedgerConnectionError(LedgerError):
    """The ledger URL cannot be reached or opened; nothing was written."""


class LedgerNotFoundError(LedgerError):
    """A command that only reads found no ledger at the URL; nothing was created."""


class LedgerSchemaError(LedgerError):
    """The ledger at the URL has another schema version, or is not a conformance ledger."""


class EntryNotFoundError(LedgerError):
    """No ledger entry matches the record id or sequence number asked for."""


class SignOffError(LedgerError):
    """A sign-off cannot be recorded as asked: a decision not allowed, or no usable reviewer's name."""
