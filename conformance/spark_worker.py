"""What a Spark executor runs for ``conformance.spark``: no pyspark here, so it is tested without Spark.

Rows arrive as ``(payload, index)`` pairs (``RDD.zipWithIndex``): a payload is a line of a JSON Lines file
(parsed here exactly as :func:`conformance.records.read_records` parses it) or a mapping (a DataFrame's
row); the row number is ``index + 1``, as the single-process engine numbers rows from 1 in input order.

- :func:`survey` (first pass): per row, its ``record_id`` and, when the row is valid apart from duplicate
  ids, its cell; the driver finds the duplicate ids (their first row) and the cells to resolve.
- :func:`score_partition` (second pass): each partition is scored by a
  :class:`~conformance.scoring.stream.StreamScorer` against the baselines resolved on the driver; it
  yields each verdict (encoded as the spool encodes it) and, last, the partition's batch statistics
  (:func:`encode_state`: groups, reservoirs, p-values, the verdict file's columns), which the driver merges
  (:meth:`StreamScorer.merge`) in input order.

Everything that crosses between driver and executors is JSON, ``numpy`` bytes or the baseline's own files
(``Baseline.save``): nothing is unpickled from text a model wrote.
"""

from __future__ import annotations

import base64
from array import array
import heapq
import importlib
import json
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from conformance.errors import RecordProblem
from conformance.records import InvalidRow, Record, _is_missing, _plain, parse_line, validate_row

#: Items of the scoring pass: ``(VERDICT, row, encoded verdict)`` or ``(STATE, partition, encoded state)``.
VERDICT, STATE = 0, 1


def raw_row(row: int, payload: Any) -> dict[str, Any] | RecordProblem:
    """The raw fields of a row, or the problem that makes it no row of fields (as the file readers do)."""
    if isinstance(payload, str):
        return parse_line(row, payload)
    if not isinstance(payload, Mapping):
        return RecordProblem(row, None, "(row)", "not_object",
                             f"expected a mapping of field names to values, got {type(payload).__name__}")
    return {str(k): _plain(v) for k, v in payload.items() if not _is_missing(v)}


def _record_id(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("record_id")
    return value if isinstance(value, str) and value.strip() else None


def survey(items: Iterable[tuple[Any, int]]) -> Iterator[tuple[str, Any]]:
    """Per row with a record id ``("id", (record_id, (row, cell or None)))``, the cell when the row is valid
    apart from a duplicate id; last ``("fields", (required fields seen, any field seen, rows))``."""
    from conformance.records import REQUIRED_FIELDS

    present: set[str] = set()
    any_field = False
    n = 0
    for payload, index in items:
        n += 1
        row = index + 1
        raw = raw_row(row, payload)
        if isinstance(raw, RecordProblem):
            continue
        any_field = any_field or bool(raw)
        present.update(k for k in raw if k in REQUIRED_FIELDS)
        rid = _record_id(raw)
        if rid is None:
            continue
        checked = validate_row(row, raw, {})
        yield "id", (rid, (row, checked.cell if isinstance(checked, Record) else None))
    yield "fields", (sorted(present), any_field, n)


def first_use(a: tuple[int, Any, int], b: tuple[int, Any, int]) -> tuple[int, Any, int]:
    """Reduce ``(row, cell, count)`` of one record id: the first row (with its cell) and how many rows."""
    first = a if a[0] <= b[0] else b
    return first[0], first[1], a[2] + b[2]


def rows_of(items: Iterable[tuple[Any, int]], duplicates: Mapping[str, int]) -> Iterator[Record | InvalidRow]:
    """Validated rows; ``duplicates`` maps each record id used more than once to the row it was first used at."""
    for payload, index in items:
        row = index + 1
        raw = raw_row(row, payload)
        if isinstance(raw, RecordProblem):
            yield InvalidRow.of_problem(row, raw)
            continue
        rid = _record_id(raw)
        first = duplicates.get(rid) if rid is not None else None
        seen = {rid: first} if rid is not None and first is not None and first != row else {}
        yield validate_row(row, raw, seen)  # type: ignore[arg-type]  # seen holds only str keys


# -- baselines and the embedder, once per executor process ------------------------------------------------

_LOCK = threading.Lock()
_BASELINES: dict[str, Any] = {}
_EMBEDDERS: dict[str, Any] = {}


def load_baseline(digest: str, files: Mapping[str, bytes]) -> Any:
    """The baseline of ``digest`` from its saved files (``Baseline.save``); loaded once per process."""
    from conformance.baseline.format import Baseline

    with _LOCK:
        found = _BASELINES.get(digest)
        if found is None:
            with tempfile.TemporaryDirectory(prefix="conformance-baseline-") as folder:
                for name, data in files.items():
                    (Path(folder) / name).write_bytes(data)
                found = _BASELINES[digest] = Baseline.load(folder)  # checks the digest
            if str(found.digest) != digest:
                raise ValueError(f"baseline files of digest {digest} load as {found.digest}")
        return found


def embedder_from(spec: str | None) -> Any:
    """The embedder named by ``spec`` (``"module:callable"``, called without arguments), or the process-wide
    default (:func:`conformance.embedder.get_embedder`); made once per process."""
    with _LOCK:
        key = spec or ""
        if key not in _EMBEDDERS:
            if spec is None:
                from conformance.embedder import get_embedder

                _EMBEDDERS[key] = get_embedder()
            else:
                module, _, name = spec.partition(":")
                if not module or not name:
                    raise ValueError(f"embedder must be 'module:callable', got {spec!r}")
                _EMBEDDERS[key] = getattr(importlib.import_module(module), name)()
        return _EMBEDDERS[key]


@dataclass(frozen=True)
class Context:
    """What every partition needs, sent once to each executor (a broadcast)."""

    #: cell -> ``(uri, digest)`` or the reason why it has no baseline
    table: dict[tuple[str, str], tuple[str, str] | str]
    #: digest -> the baseline's files (``Baseline.save``)
    files: dict[str, dict[str, bytes]]
    approvals: dict[str, tuple[str | None, str | None]]
    duplicates: dict[str, int]
    scored_at: str
    fdr: bool
    chunk_size: int
    embedder: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def score_partition(partition: int, items: Iterable[tuple[Any, int]], context: Context
                    ) -> Iterator[tuple[int, int, bytes]]:
    """Score one partition; yields ``(VERDICT, row, encoded verdict)`` in row order, then
    ``(STATE, partition, encoded state)``."""
    from conformance.embedding_cache import CachedEmbedder
    from conformance.scoring.stream import StreamScorer
    from conformance.verdict_files import ColumnPlan, _encode

    def resolve(model_version: str, input_class: str) -> Any:
        found = context.table.get((model_version, input_class))
        if found is None:  # every cell of a valid record was resolved on the driver
            raise RuntimeError(f"cell ({model_version}, {input_class}) was not resolved on the driver")
        if isinstance(found, str):
            return found
        uri, digest = found
        return uri, load_baseline(digest, context.files[digest])

    # In memory for this partition only, as conformance.score does for baselines given in memory. Without a
    # named embedder, each baseline's own backend (conformance.embedder.embedder_for), as in one process.
    if context.embedder is not None:
        scorer = StreamScorer(resolve, embedder=CachedEmbedder(embedder_from(context.embedder), path=None),
                              scored_at=context.scored_at, progress=False)
    else:
        from conformance.wiring import embedder_chooser

        choose = embedder_chooser(False)
        scorer = StreamScorer(resolve, embedder=choose, scored_at=context.scored_at, progress=False)
    plan = ColumnPlan(fdr=context.fdr)
    chunk: list[Record | InvalidRow] = []

    def judged(rows: list[Record | InvalidRow]) -> Iterator[tuple[int, int, bytes]]:
        verdicts = scorer.score_chunk(rows)
        verdicts = [v if v.baseline not in context.approvals else
                    replace(v, approved_by=context.approvals[v.baseline][0],
                            approved_at=context.approvals[v.baseline][1]) for v in verdicts]
        plan.add(verdicts)
        for v in verdicts:
            yield VERDICT, v.row, _encode(v)

    source = context.extra.get("source_sha256")
    for row in rows_of(items, context.duplicates):
        chunk.append(row.from_source(source) if source and isinstance(row, InvalidRow) else row)
        if len(chunk) >= context.chunk_size:
            yield from judged(chunk)
            chunk = []
    if chunk:
        yield from judged(chunk)
    yield STATE, partition, encode_state(scorer, plan)


# -- a partition's batch statistics as JSON ----------------------------------------------------------------

def _array(value: np.ndarray | None) -> dict[str, Any] | None:
    if value is None:
        return None
    value = np.ascontiguousarray(value)
    return {"dtype": value.dtype.str, "shape": list(value.shape), "data": base64.b64encode(value.tobytes()).decode()}


def _unarray(value: dict[str, Any] | None) -> np.ndarray | None:
    if value is None:
        return None
    return np.frombuffer(base64.b64decode(value["data"]), dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()


def _bytes_of(value: dict[str, Any] | None) -> bytes:
    array_ = _unarray(value)
    return b"" if array_ is None else array_.tobytes()


_KINDS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


def encode_state(scorer: Any, plan: Any) -> bytes:
    """A scorer's batch statistics and a column plan, as JSON (exact: floats round-trip, arrays as bytes)."""
    groups = []
    for cell, acc in scorer.groups.items():
        res = acc.reservoir
        groups.append({
            "cell": list(cell), "n": acc.n, "counts": acc.counts, "scores": acc.scores.tolist(), "missing": acc.missing,
            "keys": _array(np.frombuffer(acc.keys, dtype=np.uint32)),
            "reservoir": {"max_outputs": res.max_outputs, "seed": res.seed, "n_kept": res.n_kept,
                          "n_seen": res.n_seen, "cut": None if res.cut is None else str(res.cut),
                          "items": [[key, [{"score": i.score, "batch_score": i.batch_score,
                                            "embedding": _array(i.embedding), "residual": _array(i.residual),
                                            "features": _array(i.features), "style": _array(i.style)}
                                           for i in items]] for key, items in res.items.items()]},
        })
    state = {
        "n": scorer.n, "groups": groups,
        "p_values": _array(np.frombuffer(scorer._p_values, dtype=np.float64)),
        "p_groups": list(scorer._p_groups),
        "plan": {"columns": list(plan.columns),
                 "kinds": {k: sorted(t.__name__ for t in v) for k, v in plan.kinds.items()},
                 "has_none": sorted(plan.has_none), "n_rows": plan.n_rows},
    }
    return json.dumps(state).encode("utf-8")


def decode_state(data: bytes, scorer: Any, plan: Any) -> int:
    """Load encoded statistics into an empty ``scorer`` and ``plan``; the number of p-values."""

    from conformance.scoring.groups import GroupAccumulator, _Item
    from conformance.scoring.reservoir import priority

    state = json.loads(data)
    for g in state["groups"]:
        cell = (g["cell"][0], g["cell"][1])
        r = g["reservoir"]
        acc = GroupAccumulator(*cell, max_outputs=r["max_outputs"], seed=r["seed"])
        acc.n, acc.counts, acc.scores, acc.missing = g["n"], g["counts"], array("d", g["scores"]), g["missing"]
        acc.keys.frombytes(_bytes_of(g["keys"]))
        res = acc.reservoir
        res.n_kept, res.n_seen = r["n_kept"], r["n_seen"]
        res.cut = None if r["cut"] is None else int(r["cut"])
        for key, items in r["items"]:
            res.items[key] = [_Item(i["score"], i["batch_score"], _unarray(i["embedding"]), _unarray(i["residual"]),
                                    _unarray(i.get("features")), _unarray(i.get("style")))
                              for i in items]
            heapq.heappush(res._heap, (-priority(res.seed, key), key))
        scorer.groups[cell] = acc
        scorer._group_index[cell] = len(scorer._group_index)
    p_values = _unarray(state["p_values"])
    assert p_values is not None
    scorer._p_values = array("d", p_values.tolist())
    scorer._p_groups = array("i", state["p_groups"])
    scorer.n = state["n"]
    p = state["plan"]
    plan.columns = dict.fromkeys(p["columns"])
    plan.kinds = {k: {_KINDS.get(t, str) for t in v} for k, v in p["kinds"].items()}
    plan.has_none = set(p["has_none"])
    plan.n_rows = p["n_rows"]
    return len(p_values)


def merge_plan(into: Any, part: Any) -> None:
    """Add the column plan of the rows that follow ``into``'s (``ColumnPlan`` learns in input order)."""
    for name in part.columns:
        if name not in into.columns:
            into.columns[name] = None
            into.kinds[name] = set()
            if into.n_rows:  # absent from every earlier row
                into.has_none.add(name)
    for name in into.columns:
        if name not in part.columns and part.n_rows:
            into.has_none.add(name)
        into.kinds[name] |= part.kinds.get(name, set())
    into.has_none |= part.has_none
    into.n_rows += part.n_rows
