"""Verdict files written chunk by chunk, and the spool that holds verdicts between scoring and recording.

A streamed ``score`` judges every record first (pass 1), because each ledger entry carries its group's
batch test, which is known only when the whole batch has been seen; then it appends the verdicts to the
ledger and writes the verdicts file chunk by chunk (pass 2). In between, verdicts wait in a
:class:`Spool`: an anonymous temporary file (nothing is left behind, even after ``kill -9``).

:class:`VerdictWriter` writes the same bytes as :func:`conformance.verdict.write_verdicts` for JSON
Lines and CSV, and the same table for Parquet, into a temporary file beside the target, renamed into
place by :meth:`VerdictWriter.commit` (all or nothing). :class:`ColumnPlan` learns, in pass 1, the
columns (in the order ``write_verdicts`` gives them) and each column's Parquet type.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import IO, Any

from conformance.errors import InputFileError
from conformance.files import _MODE, _umask
from conformance.verdict import Verdict, _cell_text, csv_cell, csv_writer

SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")


def _encode(verdict: Verdict) -> bytes:
    own = {f.name: getattr(verdict, f.name) for f in fields(verdict)}
    own["nearest"] = list(verdict.nearest)
    return (json.dumps(own, ensure_ascii=False) + "\n").encode("utf-8")


def _decode(line: bytes) -> Verdict:
    own = json.loads(line)
    own["nearest"] = tuple(own["nearest"])
    return Verdict(**own)


class Spool:
    """Verdicts kept in an anonymous temporary file (or in memory when ``in_memory``), read back in order."""

    def __init__(self, *, in_memory: bool = False, folder: str | Path | None = None) -> None:
        self._kept: list[Verdict] | None = [] if in_memory else None
        self._file: IO[bytes] | None = None if in_memory else tempfile.TemporaryFile(dir=folder)
        self.n = 0

    def write(self, verdicts: Sequence[Verdict]) -> None:
        self.n += len(verdicts)
        if self._kept is not None:
            self._kept.extend(verdicts)
        else:
            assert self._file is not None
            self._file.write(b"".join(_encode(v) for v in verdicts))

    def chunks(self, size: int) -> Iterator[list[Verdict]]:
        """The verdicts in the order written, ``size`` at a time."""
        if self._kept is not None:
            for start in range(0, len(self._kept), size):
                yield self._kept[start:start + size]
            return
        assert self._file is not None
        self._file.flush()
        self._file.seek(0)
        chunk: list[Verdict] = []
        for line in self._file:
            chunk.append(_decode(line))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class ColumnPlan:
    """The verdict file's columns, learnt from every verdict as it will be written (see module doc)."""

    def __init__(self, *, fdr: bool) -> None:
        self.fdr = fdr
        self.columns: dict[str, None] = {}
        self.kinds: dict[str, set[type]] = {}
        self.has_none: set[str] = set()
        self.n_rows = 0

    def add(self, verdicts: Sequence[Verdict]) -> None:
        for v in verdicts:
            if self.fdr and v.p_value is not None and v.bh_flag is None:
                v = replace(v, bh_flag=False)  # the column's place and type; the value comes in pass 2
            row = v.to_dict()
            for name in row:
                if name not in self.columns:
                    self.columns[name] = None
                    if self.n_rows:  # a column first seen late was absent (None) in the rows before
                        self.has_none.add(name)
                    self.kinds.setdefault(name, set())
            for name in self.columns:
                value = _cell_text(row.get(name))
                if value is None:
                    self.has_none.add(name)
                else:
                    self.kinds[name].add(type(value))
            self.n_rows += 1

    def arrow_schema(self) -> Any:
        import pyarrow as pa

        out = []
        for name in self.columns:
            kinds = self.kinds[name]
            if not kinds:
                kind = pa.null()
            elif kinds == {bool}:
                kind = pa.bool_()
            elif kinds == {int} and name not in self.has_none:
                kind = pa.int64()
            elif kinds <= {int, float}:
                kind = pa.float64()
            else:
                kind = pa.string()
            out.append(pa.field(name, kind))
        return pa.schema(out)


def _remove_stale(path: Path) -> None:
    """Remove the unfinished files of earlier writers of ``path`` that were killed (their process is gone)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # another account's live process


class VerdictWriter:
    """Write verdicts to ``path`` chunk by chunk; :meth:`commit` renames the finished file into place."""

    def __init__(self, path: str | Path, plan: ColumnPlan, *, raw_csv: bool = False) -> None:
        self.path = Path(path)
        self.raw_csv = raw_csv
        self.suffix = self.path.suffix.lower()
        if self.suffix not in SUFFIXES:
            raise InputFileError(f"{self.path}: the verdicts file must end in .jsonl, .csv or .parquet")
        if not self.path.parent.exists():
            raise InputFileError(f"{self.path}: the folder {self.path.parent} does not exist")
        self.plan = plan
        _remove_stale(self.path)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.{os.getpid()}.", suffix=".tmp",
                                         dir=self.path.parent)
        self._handle: IO[bytes] = os.fdopen(fd, "wb")
        self._parquet: Any = None
        self._schema: Any = None
        if self.suffix == ".csv":
            self._write_csv([], header=True)
        elif self.suffix == ".parquet":
            import pyarrow.parquet as pq

            self._schema = plan.arrow_schema()
            self._parquet = pq.ParquetWriter(self._handle, self._schema)

    def write(self, verdicts: Sequence[Verdict]) -> None:
        rows = [v.to_dict() for v in verdicts]
        if self.suffix in (".jsonl", ".ndjson"):
            self._handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
        elif self.suffix == ".csv":
            self._write_csv(rows, header=False)
        else:
            self._write_parquet(rows)

    def _write_csv(self, rows: list[dict[str, Any]], *, header: bool) -> None:
        buffer = io.StringIO()
        writer = csv_writer(buffer, list(self.plan.columns))
        if header:
            writer.writeheader()
        for r in rows:
            writer.writerow({k: csv_cell(v, raw=self.raw_csv) for k, v in r.items()})
        self._handle.write(buffer.getvalue().encode("utf-8"))

    def _write_parquet(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        arrays = []
        for f in self._schema:
            values = [_cell_text(r.get(f.name)) for r in rows]
            if pa.types.is_string(f.type):
                # One type per column: a number where others hold text is kept as JSON text.
                values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
            elif pa.types.is_floating(f.type):
                values = [None if v is None else float(v) for v in values]
            arrays.append(pa.array(values, type=f.type))
        self._parquet.write_table(pa.Table.from_arrays(arrays, schema=self._schema))

    def commit(self) -> None:
        """Finish the file, flush it to disk and rename it into place."""
        if self._parquet is not None:
            self._parquet.close()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.chmod(self._tmp, _MODE & ~_umask())
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the unfinished file; the target is left as it was."""
        try:
            if self._parquet is not None:
                self._parquet.close()
            self._handle.close()
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
