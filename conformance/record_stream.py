"""Records read chunk by chunk: any number of rows in bounded memory (the streaming ``score``).

Every row is validated exactly as :func:`conformance.records.as_record_set` does, and numbered the same
way, so that a streamed file gives the same records as one read whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import defaults
from conformance.errors import InputFileError, RecordProblem
from conformance.files import source_sha256
from conformance.records import (
    REQUIRED_FIELDS, InvalidRow, Record, RecordsLike, _check_columns, _format_of, _is_missing, _plain, _read_jsonl,
    as_record_set, reading, validate_row,
)

#: Records read, validated and scored at a time by the streaming doors (``conformance score``).
CHUNK_SIZE = 1000


@dataclass
class RecordStream:
    """Rows of a source read chunk by chunk, each validated as :func:`as_record_set` would.

    Iterating yields lists of at most ``chunk_size`` rows (:class:`Record` or :class:`InvalidRow`),
    numbered from 1 in input order across chunks. Only one chunk is held at a time; a record id's first
    row is remembered to name duplicates. ``total`` is the number of rows when the source says it cheaply
    (a Parquet file's metadata, an in-memory table), else ``None``.
    """

    path: str
    chunks: Iterator[list[Record | InvalidRow]]
    total: int | None = None

    def __iter__(self) -> Iterator[list[Record | InvalidRow]]:
        return self.chunks


def stream_records(records: RecordsLike, *, chunk_size: int = CHUNK_SIZE, count: bool = False,
                   max_chars: int | None = defaults.MAX_TEXT_CHARS) -> RecordStream:
    """Read and validate records chunk by chunk (bounded memory for files of any size).

    JSON Lines are read line by line; CSV in chunks of rows (every cell as text, as :func:`read_records`);
    Parquet by record batches, and a folder is read as one dataset of its ``*.parquet`` files (in name
    order). In-memory sources (:func:`as_record_set`'s kinds) are validated as a whole, then chunked.

    With ``count``, a JSON Lines file is read once more first, to count its rows (``total``, for a
    progress bar's ETA); Parquet says its row count in its metadata.

    Problems with the source as a whole raise :class:`~conformance.errors.InputFileError`: a missing or
    unreadable file at once; a required field that appears in no row (JSON Lines) when the stream ends.
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not isinstance(records, (str, Path)):
        record_set = as_record_set(records)
        rows = record_set.rows
        return RecordStream(record_set.path, (list(rows[s:s + chunk_size]) for s in range(0, len(rows), chunk_size)),
                            total=len(rows))
    path = Path(records)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".pq") and p.is_file())
        if not files:
            raise InputFileError(f"{path}: a folder of records must hold .parquet files; found none")
        fmt = "parquet"
    else:
        fmt = _format_of(path)
        if not path.is_file():
            raise InputFileError(f"{path}: no such file")
        files = [path]
    total = None
    if fmt == "parquet":
        total = _parquet_rows(path, files)
    elif fmt == "jsonl" and count:
        total = _jsonl_rows(path)
    return RecordStream(str(path), _chunked(path, fmt, files, chunk_size, max_chars), total=total)


def _jsonl_rows(path: Path) -> int | None:
    """The number of rows (non-blank lines) of a JSON Lines file, or ``None`` if it cannot be read."""
    import gzip

    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
            return sum(1 for line in handle if line.strip())
    except (OSError, EOFError):
        return None  # the read proper says what is wrong


def _parquet_rows(where: Path, files: list[Path]) -> int:
    import pyarrow.parquet as pq

    total = 0
    for file in files:
        try:
            total += pq.ParquetFile(file).metadata.num_rows
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise InputFileError(f"{file}: cannot be read as parquet: {type(exc).__name__}: {exc}") from exc
    _ = where
    return total


def _raw_rows(path: Path, fmt: str, files: list[Path], chunk_size: int
              ) -> Iterator[tuple[int, dict[str, Any] | RecordProblem]]:
    """Raw rows with their row numbers; the same conversions as :func:`read_records`."""
    if fmt == "jsonl":
        yield from _read_jsonl(path)
        return
    import pandas as pd

    row = 0
    if fmt == "csv":
        frames: Iterable[Any] = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[],
                                            chunksize=chunk_size)
    else:
        import pyarrow.parquet as pq

        frames = (batch.to_pandas() for file in files
                  for batch in pq.ParquetFile(file).iter_batches(batch_size=chunk_size))
    for frame in frames:
        if fmt == "csv":
            frame = frame.replace({"": None})
        _check_columns(str(path), frame.columns)
        columns = [str(c) for c in frame.columns]
        for values in frame.itertuples(index=False, name=None):
            row += 1
            yield row, {c: _plain(v) for c, v in zip(columns, values) if not _is_missing(v)}


class SeenIds:
    """The record ids of a stream and the row each first appeared in, in about 20 bytes per id.

    The dict-like part :func:`~conformance.records.validate_row` uses (``in``, ``[]``, ``[]=``). Recent ids
    wait in a dict; every ``flush_every`` they move into sorted arrays of 128-bit digests (BLAKE2b) and
    rows, so a stream of a million records keeps ~20 MB, not the ~130 MB of a dict of strings. Two ids
    with the same 128-bit digest would be taken for one: about 1 in 10^26 for a million ids.
    """

    def __init__(self, flush_every: int = 65_536) -> None:
        import numpy as np

        self._np = np
        self.flush_every = flush_every
        self._recent: dict[str, int] = {}
        self._digests = np.empty(0, dtype="S16")
        self._rows = np.empty(0, dtype=np.uint32)  # rows up to 4,294,967,295

    @staticmethod
    def _digest(record_id: str) -> bytes:
        return hashlib.blake2b(record_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _find(self, record_id: str) -> int | None:
        if record_id in self._recent:
            return self._recent[record_id]
        if not self._digests.size:
            return None
        digest = self._digest(record_id)
        i = int(self._np.searchsorted(self._digests, digest))
        if i < self._digests.size and self._digests[i] == digest:
            return int(self._rows[i])
        return None

    def __contains__(self, record_id: object) -> bool:
        return isinstance(record_id, str) and self._find(record_id) is not None

    def __getitem__(self, record_id: str) -> int:
        row = self._find(record_id)
        if row is None:
            raise KeyError(record_id)
        return row

    def __setitem__(self, record_id: str, row: int) -> None:
        self._recent[record_id] = row
        if len(self._recent) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        np = self._np
        digests = np.array([self._digest(k) for k in self._recent], dtype="S16")
        rows = np.fromiter(self._recent.values(), dtype=np.uint32, count=len(self._recent))
        digests, rows = np.concatenate([self._digests, digests]), np.concatenate([self._rows, rows])
        order = np.argsort(digests, kind="stable")
        self._digests, self._rows = digests[order], rows[order]
        self._recent = {}


def _chunked(path: Path, fmt: str, files: list[Path], chunk_size: int,
             max_chars: int | None) -> Iterator[list[Record | InvalidRow]]:
    seen = SeenIds()
    present: set[str] = set()
    any_field = False
    chunk: list[Record | InvalidRow] = []
    n = 0
    digest: list[str] = []  # the source's SHA-256, computed when the first invalid row needs it
    with reading(path, fmt):
        for row, item in _raw_rows(path, fmt, files, chunk_size):
            n += 1
            if isinstance(item, RecordProblem):
                judged: Record | InvalidRow = InvalidRow.of_problem(row, item)
            else:
                any_field = any_field or bool(item)
                if len(present) < len(REQUIRED_FIELDS):
                    present.update(k for k in item if k in REQUIRED_FIELDS)
                judged = validate_row(row, item, seen, max_chars=max_chars)
            if isinstance(judged, InvalidRow):
                # the evidence names the file as read, so that an invalid row can be traced to its bytes
                digest = digest or [source_sha256(files)]
                judged = judged.from_source(digest[0])
            chunk.append(judged)
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        if fmt == "jsonl" and n and len(present) < len(REQUIRED_FIELDS):
            # as read_records: a field in no row at all is a problem with the file, not with each row
            missing = [c for c in REQUIRED_FIELDS if c not in present]
            if any_field:
                raise InputFileError(f"{path}: required field(s) {', '.join(missing)} appear in no row; "
                                     f"every record needs {', '.join(REQUIRED_FIELDS)}")
    if not n:
        raise InputFileError(f"{path}: contains no records")
    if chunk:
        yield chunk
