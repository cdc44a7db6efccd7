"""Reading and validating records (one model output per row).

Records come from a file or from memory (:func:`as_record_set`: a pandas
DataFrame, a pyarrow Table, or an iterable of mappings); either way every row is
validated the same way. A record file is JSON Lines (``.jsonl``, ``.ndjson``, optionally ``.gz``), CSV
or Parquet. Every row is validated on its own: a bad row becomes a
:class:`~conformance.errors.RecordProblem` (row number, field, reason) and the
good rows still run. Only problems with the file as a whole (unreadable, wrong
format, a required column absent from every row) raise
:class:`~conformance.errors.InputFileError`.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from conformance import defaults
from conformance.errors import InputFileError, RecordProblem
from conformance.files import source_sha256

REQUIRED_FIELDS: tuple[str, ...] = ("record_id", "model_version", "input_class", "input", "output")
"""Every record must have these, as non-empty strings."""

OPTIONAL_FIELDS: tuple[str, ...] = (
    "prompt_id",
    "conversation_id",
    "eval_run_id",
    "timestamp",
    "policy_id",
    "policy_version",
    "training_data_version",
    "context",
    "sampling",
    "downstream_action",
    "intent",
    "metadata",
)
"""Carried through unchanged into every verdict, for reconstruction."""


def prompt_key_of(prompt_id: Any, input_text: Any, conversation_id: Any = None) -> str:
    """The unit of independence an output belongs to: its ``conversation_id`` if it has one,
    else its ``prompt_id``, else its input.

    Outputs with one key are not independent of each other (several samples of
    one prompt; the turns of one conversation, since turn 2 follows turn 1's
    topic). The key decides the fit/calibration split, the calibration's unit (one
    output drawn per prompt, or prompts weighing the same), and the unit the
    batch tests permute.

    >>> prompt_key_of("q81:turn2", "Rewrite it.", "q81")
    'conversation:q81'
    >>> prompt_key_of("q81:turn2", "Rewrite it.")
    'q81:turn2'
    """
    if conversation_id not in (None, ""):
        return "conversation:" + str(conversation_id)
    return str(prompt_id) if prompt_id not in (None, "") else "input:" + str(input_text)


@dataclass(frozen=True)
class Record:
    """One validated model output."""

    row: int
    record_id: str
    model_version: str
    input_class: str
    input: str
    output: str
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cell(self) -> tuple[str, str]:
        """The (model_version, input_class) pair this record is judged in."""
        return (self.model_version, self.input_class)

    @property
    def prompt_key(self) -> str:
        """Records sharing this key are outputs for the same prompt."""
        return prompt_key_of(self.extras.get("prompt_id"), self.input, self.extras.get("conversation_id"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f: getattr(self, f) for f in REQUIRED_FIELDS}
        out.update(self.extras)
        return out


@dataclass(frozen=True)
class InvalidRow:
    """A row that failed validation, kept so that it gets an ``invalid`` verdict."""

    row: int
    raw: Mapping[str, Any]
    problems: tuple[RecordProblem, ...]

    @property
    def record_id(self) -> str | None:
        value = self.raw.get("record_id")
        return value if isinstance(value, str) and value else None

    @property
    def reason(self) -> str:
        return "; ".join(str(p) for p in self.problems)

    def from_source(self, sha256: str) -> InvalidRow:
        """This row with the SHA-256 of the file it was read from in its evidence (``source_sha256``)."""
        return replace(self, raw={**self.raw, "source_sha256": sha256})

    @classmethod
    def of_problem(cls, row: int, problem: RecordProblem) -> InvalidRow:
        """A row that is no record at all: its raw fields are the evidence of what was read, and its row number, so
        that two such rows never collapse into one ledger entry."""
        raw = {"source_row": row, **problem.evidence} if isinstance(problem.evidence, Mapping) else {"source_row": row}
        return cls(row=row, raw=raw, problems=(problem,))


#: How much of a line that is no record is kept as evidence (its SHA-256 and length are kept whole).
EVIDENCE_CHARS = 10_000


def line_evidence(text: str) -> dict[str, Any]:
    """What a row that is no record keeps: the line as text (its first EVIDENCE_CHARS characters), its length and
    the SHA-256 of its UTF-8 bytes."""
    import hashlib

    return {"raw_line": text[:EVIDENCE_CHARS], "raw_line_chars": len(text),
            "raw_line_sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}


@dataclass(frozen=True)
class RecordSet:
    """All rows of one file, in file order: valid records and invalid rows."""

    path: str
    rows: tuple[Record | InvalidRow, ...]

    @property
    def records(self) -> list[Record]:
        return [r for r in self.rows if isinstance(r, Record)]

    @property
    def invalid(self) -> list[InvalidRow]:
        return [r for r in self.rows if isinstance(r, InvalidRow)]


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    # pandas' missing markers (pd.NA, pd.NaT), without importing pandas
    return type(value).__name__ in ("NAType", "NaTType")


def _plain(value: Any) -> Any:
    """Turn numpy/pandas scalars and arrays from Parquet into plain Python values."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return value.isoformat()
    return value


class SeenRows(Protocol):
    """Where :func:`validate_row` remembers the row each record id first appeared in."""

    def __contains__(self, record_id: object, /) -> bool: ...
    def __getitem__(self, record_id: str, /) -> int: ...
    def __setitem__(self, record_id: str, row: int, /) -> None: ...


def validate_row(row: int, raw: Mapping[str, Any], seen: SeenRows, *,
                 max_chars: int | None = defaults.MAX_TEXT_CHARS) -> Record | InvalidRow:
    """Validate one raw row; ``seen`` maps record_id to the row it first appeared in (a dict, or
    :class:`conformance.record_stream.SeenIds` for a stream). An ``input`` or ``output`` longer than
    ``max_chars`` characters is a problem of the row (None: no limit)."""
    problems: list[RecordProblem] = []
    rid_value = raw.get("record_id")
    rid = rid_value if isinstance(rid_value, str) and rid_value.strip() else None
    values: dict[str, str] = {}
    for name in REQUIRED_FIELDS:
        value = raw.get(name)
        if name not in raw or _is_missing(value):
            problems.append(RecordProblem(row, rid, name, "missing", f"required field {name!r} is missing"))
        elif not isinstance(value, str):
            problems.append(
                RecordProblem(
                    row, rid, name, "wrong_type",
                    f"must be a string, got {type(value).__name__} ({str(value)[:40]!r})",
                )
            )
        elif not value.strip():
            problems.append(RecordProblem(row, rid, name, "empty", "must not be empty or only white space"))
        elif max_chars is not None and name in ("input", "output") and len(value) > max_chars:
            problems.append(RecordProblem(row, rid, name, "too_long",
                                          f"is {len(value):,} characters long, over the limit of {max_chars:,} "
                                          "(score --max-output-chars N raises it)"))
        else:
            values[name] = value
    if rid is not None and rid in seen:
        problems.append(
            RecordProblem(
                row, rid, "record_id", "duplicate",
                f"duplicate record_id, first used at row {seen[rid]}; record ids must be unique",
            )
        )
    elif rid is not None:
        seen[rid] = row
    for name in ("prompt_id", "conversation_id"):
        value = raw.get(name)
        if not _is_missing(value) and isinstance(_plain(value), (dict, list, bool)):
            problems.append(RecordProblem(
                row, rid, name, "wrong_type",
                f"must be a string or a number naming the {name.split('_')[0]}, got {type(_plain(value)).__name__} "
                f"({str(value)[:40]!r})"))
    if problems:
        # Its row number too, so that two identical invalid rows are two ledger entries (evidence of each row).
        return InvalidRow(row=row, raw={**raw, "source_row": raw.get("source_row", row)}, problems=tuple(problems))
    extras = {k: _plain(raw[k]) for k in raw if k not in REQUIRED_FIELDS and not _is_missing(raw[k])}
    return Record(row=row, extras=extras, **values)


def _open_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes (decoded one by one, so that a line that is not UTF-8 is that row's problem)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:  # type: ignore[operator]
        yield from handle


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".ndjson"):
        return "jsonl"
    if last == ".csv":
        return "csv"
    if last in (".parquet", ".pq"):
        return "parquet"
    raise InputFileError(
        f"{path}: cannot tell the file format from its name; use .jsonl, .csv or .parquet "
        "(optionally .jsonl.gz / .csv.gz)"
    )


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number (write null, or the value as a string)")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordProblem]]:
    row = 0
    for raw in _open_lines(path):
        if not raw.strip():
            continue  # blank lines are not rows
        row += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield row, RecordProblem(row, None, "(line)", "not_utf8",
                                     f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line "
                                     "(Latin-1 or Windows-1252?); save the file as UTF-8",
                                     evidence=line_evidence(raw.decode("utf-8", "backslashreplace").rstrip("\r\n")))
            continue
        yield row, parse_line(row, line)


def parse_line(row: int, line: str) -> dict[str, Any] | RecordProblem:
    """One JSON Lines row: its object, or the problem that makes it none (strict JSON: no NaN or Infinity)."""
    try:
        obj = json.loads(line, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        return RecordProblem(row, None, "(line)", "bad_json", f"not valid JSON: {exc.msg} at column {exc.colno}",
                             evidence=line_evidence(line.rstrip("\r\n")))
    except ValueError as exc:  # NaN, Infinity: accepted by Python, not JSON
        return RecordProblem(row, None, "(line)", "bad_json", f"not valid JSON: {exc}",
                             evidence=line_evidence(line.rstrip("\r\n")))
    if not isinstance(obj, dict):
        return RecordProblem(row, None, "(line)", "not_object", f"expected a JSON object, got {type(obj).__name__}",
                             evidence=line_evidence(line.rstrip("\r\n")))
    return obj


def _read_table(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    import pandas as pd

    if fmt == "csv":
        # Everything as text: a CSV cannot say whether "123" was meant as a number.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
        frame = frame.replace({"": None})
    else:
        frame = pd.read_parquet(path)
    missing = [c for c in REQUIRED_FIELDS if c not in frame.columns]
    if missing:
        raise InputFileError(
            f"{path}: required column(s) {', '.join(missing)} are absent "
            f"(found: {', '.join(map(str, frame.columns))}); every record needs "
            f"{', '.join(REQUIRED_FIELDS)}"
        )
    columns = [str(c) for c in frame.columns]
    for i, values in enumerate(frame.itertuples(index=False, name=None), start=1):
        yield i, {c: _plain(v) for c, v in zip(columns, values) if not _is_missing(v)}


def read_records(path: str | Path) -> RecordSet:
    """Read and validate every row of a records file.

    Raises
    ------
    InputFileError
        If the file is missing, unreadable, of an unknown format, or a required
        column is absent from every row. Nothing is written in that case.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    seen: dict[str, int] = {}
    rows: list[Record | InvalidRow] = []
    present: set[str] = set()
    with reading(path, fmt):
        if fmt == "jsonl":
            for row, item in _read_jsonl(path):
                if isinstance(item, RecordProblem):
                    rows.append(InvalidRow.of_problem(row, item))
                else:
                    present.update(item)
                    rows.append(validate_row(row, item, seen))
            missing = [c for c in REQUIRED_FIELDS if c not in present]
            if rows and missing and len(present) > 0:
                raise InputFileError(
                    f"{path}: required field(s) {', '.join(missing)} appear in no row; "
                    f"every record needs {', '.join(REQUIRED_FIELDS)}"
                )
        else:
            for row, item in _read_table(path, fmt):
                rows.append(validate_row(row, item, seen))
    if not rows:
        raise InputFileError(f"{path}: contains no records")
    if any(isinstance(r, InvalidRow) for r in rows):
        digest = source_sha256([path])
        rows = [r.from_source(digest) if isinstance(r, InvalidRow) else r for r in rows]
    return RecordSet(path=str(path), rows=tuple(rows))


@contextmanager
def reading(path: Path, fmt: str) -> Iterator[None]:
    """Turn any failure to read ``path`` as ``fmt`` into an :class:`InputFileError` naming the file."""
    try:
        yield
    except InputFileError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, EOFError) as exc:
        raise InputFileError(f"{path}: cannot be read as {fmt}: {exc}") from exc
    except Exception as exc:  # pyarrow and pandas raise many types for corrupt files
        raise InputFileError(f"{path}: cannot be read as {fmt}: {type(exc).__name__}: {exc}") from exc


def _check_columns(where: str, columns: Iterable[Any]) -> None:
    found = [str(c) for c in columns]
    missing = [c for c in REQUIRED_FIELDS if c not in found]
    if missing:
        raise InputFileError(
            f"{where}: required column(s) {', '.join(missing)} are absent "
            f"(found: {', '.join(found) or 'none'}); every record needs {', '.join(REQUIRED_FIELDS)}"
        )


def _validate_all(where: str, raws: Iterable[Any]) -> RecordSet:
    seen: dict[str, int] = {}
    rows: list[Record | InvalidRow] = []
    for row, raw in enumerate(raws, start=1):
        if not isinstance(raw, Mapping):
            problem = RecordProblem(row, None, "(row)", "not_object",
                                    f"expected a mapping of field names to values, got {type(raw).__name__}")
            rows.append(InvalidRow.of_problem(row, problem))
            continue
        clean = {str(k): _plain(v) for k, v in raw.items() if not _is_missing(v)}
        rows.append(validate_row(row, clean, seen))
    if not rows:
        raise InputFileError(f"{where}: contains no records")
    return RecordSet(path=where, rows=tuple(rows))


RecordsLike = Any
"""What the library's doors accept as records: a path (``str`` or :class:`~pathlib.Path`) to a
``.jsonl``/``.csv``/``.parquet`` file, a pandas DataFrame, a pyarrow Table, a :class:`RecordSet`,
or an iterable of mappings (one per record)."""


def as_record_set(records: RecordsLike) -> RecordSet:
    """Read and validate records from a file or from memory, one :class:`RecordSet` in input order.

    Rows are numbered from 1 in input order (a DataFrame's index is not used). A value that is
    ``None`` or NaN counts as absent, as an empty CSV cell does.

    Raises
    ------
    InputFileError
        If the source cannot be read, holds no records, or a required column is absent from
        every row. Bad rows do not raise: each becomes an :class:`InvalidRow`.
    TypeError
        If ``records`` is none of the accepted kinds.

    >>> rs = as_record_set([{"record_id": "r1", "model_version": "m", "input_class": "c",
    ...                      "input": "q", "output": "a"}, {"record_id": "r2"}])
    >>> len(rs.records), len(rs.invalid)
    (1, 1)
    """
    if isinstance(records, RecordSet):
        return records
    if isinstance(records, (str, Path)):
        return read_records(records)
    if isinstance(records, (bytes, bytearray)) or isinstance(records, Mapping):
        raise TypeError("records must be a path, a pandas DataFrame, a pyarrow Table or an iterable of "
                        f"mappings (one per record), got {type(records).__name__}")
    kind = type(records).__module__.split(".")[0] + "." + type(records).__name__
    if kind == "pandas.DataFrame":
        _check_columns("<DataFrame>", records.columns)
        return _validate_all("<DataFrame>", records.to_dict(orient="records"))
    if kind == "pyarrow.Table":
        _check_columns("<pyarrow.Table>", records.column_names)
        return _validate_all("<pyarrow.Table>", records.to_pylist())
    if not isinstance(records, Iterable):
        raise TypeError("records must be a path, a pandas DataFrame, a pyarrow Table or an iterable of "
                        f"mappings (one per record), got {type(records).__name__}")
    rows = list(records)
    present = {str(k) for raw in rows if isinstance(raw, Mapping) for k in raw}
    if rows and present:
        missing = [c for c in REQUIRED_FIELDS if c not in present]
        if missing:
            raise InputFileError(f"<records>: required field(s) {', '.join(missing)} appear in no record; "
                                 f"every record needs {', '.join(REQUIRED_FIELDS)}")
    return _validate_all("<records>", rows)

