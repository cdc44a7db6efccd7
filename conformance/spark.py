"""Scoring on Spark, for when one machine is not enough (``pip install -e '.[spark]'``, Java 17 or newer).

:func:`score` takes a Spark DataFrame of audited records and returns a Spark DataFrame of verdicts (the
verdict file's columns), touching no ledger; :func:`score_file` is ``conformance score --engine spark``: the
same scoring, then the ledger and the verdicts file written from the driver. The verdicts are those of
:func:`conformance.score` on the same records (docs/pipelines.md, "Spark"):

1. Rows are numbered from 1 in input order (``zipWithIndex``); a first pass finds the record ids used
   more than once (with the row each was first used at) and the cells of the valid records.
2. The driver resolves each cell's baseline once (the registry's approved version, or the baselines given)
   and sends their saved files to the executors, which load each once per Python worker.
3. Each partition is scored by a :class:`~conformance.scoring.stream.StreamScorer` (``mapPartitions``:
   Python rows as they are, where pandas would turn an integer column with gaps into floats); it returns
   its verdicts and its batch statistics: counts, the reservoir of whole prompts, the p-values.
4. The driver merges the statistics in input order (:meth:`StreamScorer.merge`) and runs the batch tests and
   Benjamini-Hochberg exactly as the single-process engine does.

pyspark is imported inside the functions, so that importing this module needs no pyspark.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.errors import ConformanceError, InputFileError
from conformance.files import check_output_targets, source_sha256
from conformance.spark_worker import STATE, VERDICT, Context

if TYPE_CHECKING:
    from conformance.api import BuiltBaseline, ScoreResult
    from conformance.baseline.format import Baseline
    from conformance.ledger import Ledger
    from conformance.registry import Registry
    from conformance.scoring.stream import BatchFlags
    from conformance.verdict import GroupSummary, Verdict
    from conformance.verdict_files import ColumnPlan

#: The default master: every core of this machine.
LOCAL_MASTER = "local[*]"


class SparkUnavailableError(ConformanceError):
    """pyspark is not installed, or Java is missing."""


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise SparkUnavailableError("the Spark engine needs pyspark: install the spark extra: "
                                    "pip install -e '.[spark]'") from exc


def session(master: str = LOCAL_MASTER, *, app_name: str = "conformance") -> Any:
    """A SparkSession for scoring (the active one if there is one, else a new one on ``master``).

    Python workers are reused (``spark.python.worker.reuse``), so that each loads the embedder and the
    baselines once; executors run this Python (``PYSPARK_PYTHON``) with this ``PYTHONPATH`` unless set.
    """
    _require_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise SparkUnavailableError("the Spark engine needs Java 17 or newer: no 'java' is on PATH and JAVA_HOME "
                                    "is not set; install it (Debian: apt-get install openjdk-17-jre-headless)")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.python.worker.reuse", "true")
               .config("spark.ui.showConsoleProgress", "false"))
    path = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    if master.startswith("local"):
        builder = builder.config("spark.executorEnv.PYTHONPATH", path)
    return builder.getOrCreate()


@dataclass
class _Run:
    """A scored batch: verdicts (encoded, in input order, persisted) and what pass 2 needs."""

    scored: Any  # RDD of (kind, row or partition, bytes)
    summaries: list[GroupSummary]
    flags: BatchFlags | None
    plan: ColumnPlan
    counts: dict[str, int]
    p_offsets: list[int]

    def verdicts(self) -> Iterator[Verdict]:
        """Every verdict in input order, streamed to the driver one partition at a time (BH flags not set)."""
        from conformance.verdict_files import _decode

        for _, _, data in self.scored.filter(lambda item: item[0] == VERDICT).toLocalIterator():
            yield _decode(data)

    def release(self) -> None:
        self.scored.unpersist()


def _run(indexed: Any, *, baselines: Iterable[Baseline | BuiltBaseline] | None, registry: Registry | None,
         fdr: float | None, embedder: str | None, chunk_size: int, where: str, jsonl: bool,
         files_read: list[Path] | None = None, book: Ledger | None = None) -> _Run:
    """Score ``indexed``, an RDD of ``(payload, index)`` in input order (see :mod:`conformance.spark_worker`);
    ``files_read``: the file(s) it was read from, whose SHA-256 every invalid row keeps as evidence."""
    from pyspark import StorageLevel

    from conformance import wiring
    from conformance.params import check_fdr
    from conformance.records import REQUIRED_FIELDS
    from conformance.scoring.stream import StreamScorer
    from conformance.spark_worker import decode_state, first_use, merge_plan, score_partition, survey
    from conformance.verdict import VERDICTS
    from conformance.verdict_files import ColumnPlan

    if fdr is not None:
        check_fdr(fdr)
    indexed = indexed.persist(StorageLevel.MEMORY_AND_DISK)
    # Pass 1: duplicate record ids, the cells to resolve, the fields present.
    surveyed = indexed.mapPartitions(survey)
    fields = surveyed.filter(lambda item: item[0] == "fields").map(lambda item: item[1]).collect()
    present = {name for names, _, _ in fields for name in names}
    n_rows = sum(n for _, _, n in fields)
    if not n_rows:
        raise InputFileError(f"{where}: contains no records")
    missing = [c for c in REQUIRED_FIELDS if c not in present]
    if missing and (any(any_field for _, any_field, _ in fields) or not jsonl):
        raise InputFileError(f"{where}: required field(s) {', '.join(missing)} appear in no row; "
                             f"every record needs {', '.join(REQUIRED_FIELDS)}")
    ids = (surveyed.filter(lambda item: item[0] == "id").map(lambda item: (item[1][0], item[1][1] + (1,)))
           .reduceByKey(first_use))
    # Only the duplicated ids and the distinct cells come to the driver (the shuffle is computed once).
    duplicates = ids.filter(lambda kv: kv[1][2] > 1).map(lambda kv: (kv[0], kv[1][0])).collectAsMap()
    cells = sorted(ids.map(lambda kv: kv[1][1]).filter(lambda cell: cell is not None).distinct().collect())

    # The baselines, resolved once on the driver, their files sent to every executor.
    approvals: dict[str, tuple[str | None, str | None]] = {}
    if baselines is not None:
        resolve = wiring.given_resolver(baselines, approvals)
    else:  # each approved version checked against its approval in the run's ledger, or the default one
        from conformance.approvals import ApprovalCheck

        resolve = wiring.registry_resolver(registry, approvals, ApprovalCheck(book))
    resolved: dict[tuple[str, str], Any] = {}
    table: dict[tuple[str, str], tuple[str, str] | str] = {}
    files: dict[str, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="conformance-spark-") as folder:
        for mv, ic in cells:
            result = resolve(mv, ic)
            resolved[(mv, ic)] = result
            if isinstance(result, str):
                table[(mv, ic)] = result
                continue
            uri, baseline = result
            digest = str(baseline.digest)
            table[(mv, ic)] = (uri, digest)
            if digest not in files:
                saved = baseline.save(Path(folder) / digest)
                files[digest] = {p.name: p.read_bytes() for p in Path(saved).iterdir() if p.is_file()}
    scored_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    context = Context(table=table, files=files, approvals=approvals, duplicates=duplicates, scored_at=scored_at,
                      fdr=fdr is not None, chunk_size=chunk_size, embedder=embedder,
                      extra={"source_sha256": source_sha256(files_read)} if files_read else {})
    shared = indexed.context.broadcast(context)

    # Pass 2: every partition scored; its statistics merged here, in input order.
    scored = indexed.mapPartitionsWithIndex(
        lambda i, items: score_partition(i, items, shared.value)).persist(StorageLevel.MEMORY_AND_DISK)
    states = sorted(scored.filter(lambda item: item[0] == STATE).map(lambda item: (item[1], item[2])).collect())
    indexed.unpersist()
    merged = StreamScorer(resolve, embedder=None, fdr=fdr, scored_at=scored_at)  # type: ignore[arg-type]
    merged.resolved = dict(resolved)
    plan = ColumnPlan(fdr=fdr is not None)
    p_offsets = []
    for _, data in states:
        part, part_plan = StreamScorer(resolve, embedder=None), ColumnPlan(fdr=fdr is not None)  # type: ignore[arg-type]
        p_offsets.append(len(merged._p_values))
        decode_state(data, part, part_plan)
        merged.merge(part)
        merge_plan(plan, part_plan)
    summaries, flags = merged.finish()
    counts = {name: 0 for name in VERDICTS}
    for s in summaries:
        for name in VERDICTS:
            counts[name] += s.counts.get(name, 0)
    return _Run(scored, summaries, flags, plan, counts, p_offsets)


def _index_frame(frame: Any) -> Any:
    """An RDD of ``(row as a dict, index)`` in the DataFrame's order."""
    from conformance.records import _check_columns

    _check_columns("<DataFrame>", frame.columns)
    return frame.rdd.map(lambda r: r.asDict(recursive=True)).zipWithIndex()


def score(
    frame: Any,
    *,
    baselines: Iterable[Baseline | BuiltBaseline] | None = None,
    registry: Registry | None = None,
    fdr: float | None = None,
    embedder: str | None = None,
    chunk_size: int = 1000,
) -> Any:
    """Score a Spark DataFrame of audited records; a Spark DataFrame of verdicts (no ledger is touched).

    Parameters
    ----------
    frame : pyspark.sql.DataFrame
        Audited records, one per row (the columns of a records file); rows are numbered from 1 in the
        DataFrame's order.
    baselines : iterable of Baseline or BuiltBaseline, optional
        As for :func:`conformance.score`: else each cell's approved version in the registry (resolved on the
        driver, once per cell).
    fdr : float, optional
        Benjamini-Hochberg over the whole batch (the ``bh_flag`` column).
    embedder : str, optional
        ``"module:callable"`` making the embedder on each executor (default: the packaged model).
    chunk_size : int
        Records embedded and judged at a time within a partition.

    Returns
    -------
    pyspark.sql.DataFrame
        One row per record, with the columns of ``conformance score --out`` (``row`` gives the input order).

    Examples
    --------
    >>> verdicts = conformance.spark.score(spark.read.parquet("audited/"), baselines=built)  # doctest: +SKIP
    """
    _require_pyspark()
    run = _run(_index_frame(frame), baselines=baselines, registry=registry, fdr=fdr, embedder=embedder,
               chunk_size=chunk_size, where="<DataFrame>", jsonl=False)
    return _verdict_frame(frame.sparkSession, run)


def _verdict_frame(spark: Any, run: _Run) -> Any:
    """The verdicts of ``run`` as a DataFrame (schema from the column plan, BH flags applied per partition)."""
    import numpy as np
    from pyspark.sql import types as T

    from conformance.verdict import _cell_text
    from conformance.verdict_files import _decode

    arrow = run.plan.arrow_schema()
    kinds = {"bool": T.BooleanType(), "int64": T.LongType(), "double": T.DoubleType()}
    schema = T.StructType([T.StructField(f.name, kinds.get(str(f.type), T.StringType()), True) for f in arrow])
    names = [(f.name, str(f.type)) for f in arrow]
    flags = None if run.flags is None else run.scored.context.broadcast(np.asarray(run.flags.flags, dtype=bool))
    offsets = run.p_offsets

    def rows(partition: int, items: Iterable[tuple[int, int, bytes]]) -> Iterator[tuple[Any, ...]]:
        from conformance.scoring.stream import BatchFlags

        verdicts = [_decode(data) for kind, _, data in items if kind == VERDICT]
        if flags is not None:
            verdicts, _ = BatchFlags(flags.value).apply(verdicts, offsets[partition])
        for v in verdicts:
            row = v.to_dict()
            out = []
            for name, kind in names:
                value = _cell_text(row.get(name))
                if kind == "string" or kind == "null":
                    value = value if value is None or isinstance(value, str) else json.dumps(value)
                elif kind == "double" and value is not None:
                    value = float(value)
                out.append(value)
            yield tuple(out)

    return spark.createDataFrame(run.scored.mapPartitionsWithIndex(rows), schema)


def _index_file(spark: Any, path: Path, partitions: int | None = None) -> tuple[Any, bool]:
    """An RDD of ``(payload, index)`` of a records file in file order; whether it is JSON Lines."""
    from functools import reduce

    from conformance.records import _format_of

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".pq") and p.is_file())
        if not files:
            raise InputFileError(f"{path}: a folder of records must hold .parquet files; found none")
        # One read per file, in name order: Spark packs the files of one read by size, not by name.
        frame = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True),
                       [spark.read.parquet(str(f)) for f in files])
        return _index_frame(frame), False
    fmt = _format_of(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    if fmt == "jsonl":
        # Each line parsed by the executors as read_records parses it; blank lines are not rows.
        lines = spark.sparkContext.textFile(str(path), minPartitions=partitions)
        return lines.filter(lambda line: bool(line.strip())).zipWithIndex(), True
    if fmt == "csv":
        frame = spark.read.csv(str(path), header=True, multiLine=True, escape='"', inferSchema=False)
        return _index_frame(frame), False
    return _index_frame(spark.read.parquet(str(path))), False


def score_file(
    records: str | Path,
    *,
    out: str | Path | None = None,
    summary: str | Path | None = None,
    ledger: str | Ledger | bool | None = None,
    baselines: Iterable[Baseline | BuiltBaseline] | None = None,
    registry: Registry | None = None,
    fdr: float | None = None,
    run_id: str | None = None,
    master: str = LOCAL_MASTER,
    embedder: str | None = None,
    chunk_size: int = 1000,
    keep_verdicts: bool = False,
    partitions: int | None = None,
) -> ScoreResult:
    """``conformance score --engine spark``: :func:`conformance.score`'s arguments and result, the records
    scored on Spark (``master``), the ledger appended and the verdicts file written from the driver, chunk by
    chunk in input order (one ledger transaction per chunk: a re-run records nothing twice). ``partitions``:
    the least number of partitions a JSON Lines file is cut into (Spark's default otherwise)."""
    from conformance import api, wiring
    from conformance.ledger.store import new_run_id
    from conformance.verdict import write_json
    from conformance.verdict_files import VerdictWriter

    check_output_targets([records], {"--out": out, "--summary": summary})
    if out is not None and Path(out).suffix.lower() not in (".jsonl", ".ndjson", ".csv", ".parquet"):
        raise InputFileError(f"{out}: the verdicts file must end in .jsonl, .csv or .parquet")
    path = Path(records)
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    _require_pyspark()
    spark = session(master)
    book = wiring.open_ledger((False if ledger is None else ledger) if baselines is not None else ledger)
    run_id = run_id or new_run_id()
    writer = None
    run = None
    try:
        indexed, jsonl = _index_file(spark, path, partitions)
        read = (sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".pq") and p.is_file())
                if path.is_dir() else [path])
        run = _run(indexed, baselines=baselines, registry=registry, fdr=fdr, embedder=embedder,
                   chunk_size=chunk_size, where=str(path), jsonl=jsonl, files_read=read, book=book)
        writer = None if out is None else VerdictWriter(out, run.plan)
        reports, kept = wiring.record_chunks(_chunks(run.verdicts(), chunk_size), flags=run.flags, book=book,
                                    run_id=run_id, summaries=run.summaries, writer=writer,
                                    keep_verdicts=keep_verdicts)
        if writer is not None:
            writer.commit()
            writer = None
    finally:
        if run is not None:
            run.release()
        if writer is not None:
            writer.abort()
        if book is not None and not hasattr(ledger, "append"):
            book.close()
    if summary is not None:
        write_json([s.to_dict() for s in run.summaries], summary)
    return api.ScoreResult(verdicts=kept, summaries=run.summaries, ledger=wiring.merge_reports(reports, run_id, book),
                           n_by_verdict=run.counts)


def _chunks(verdicts: Iterator[Verdict], size: int) -> Iterator[list[Verdict]]:
    chunk: list[Verdict] = []
    for v in verdicts:
        chunk.append(v)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


__all__ = ["LOCAL_MASTER", "SparkUnavailableError", "score", "score_file", "session"]
