"""Errors raised by conformance.

One base class, :class:`ConformanceError`, and a few precise subclasses. Every
message says what was wrong, where (file, row, field) and what to do next.
The command line maps every :class:`ConformanceError` to exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ConformanceError(Exception):
    """Base class of every error this package raises on purpose."""


class InputFileError(ConformanceError):
    """A records file cannot be read, or lacks required columns."""


class BaselineError(ConformanceError):
    """A baseline cannot be built, stored or loaded as asked."""


class EmbedderMismatchError(BaselineError):
    """A baseline was built with another embedder than the one scoring now."""


class RegistryError(ConformanceError):
    """The MLflow tracking store or model registry cannot do what was asked."""


class BaselineVersionNotFoundError(RegistryError):
    """The registry says that a named baseline version does not exist (deleted, or another store)."""


@dataclass(frozen=True)
class RecordProblem:
    """One thing wrong with one input record (pandera-style: row, field, code)."""

    row: int  # 1-based row number in the input file (data rows, header excluded)
    record_id: str | None
    field: str
    code: str  # machine-readable reason, e.g. "missing", "empty", "wrong_type"
    message: str
    #: For a row that is no record at all (a line that is not JSON, not UTF-8, not an object): what was read,
    #: kept as evidence in its ``invalid`` verdict and ledger entry (see :func:`conformance.records.line_evidence`).
    evidence: Any = None

    def __str__(self) -> str:
        rid = f" (record_id {self.record_id!r})" if self.record_id else ""
        return f"row {self.row}{rid}, field {self.field!r}: {self.message}"
