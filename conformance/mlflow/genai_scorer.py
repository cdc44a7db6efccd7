"""An ``mlflow.genai`` scorer: each evaluated row judged against the approved baseline of its cell.

``mlflow.genai.evaluate(data=df, scorers=[conformance.mlflow.scorer()])`` gives one Feedback per row, named
``conformance``: value ``within_bounds``, ``out_of_bounds``, ``no_baseline`` or ``invalid``; rationale the
verdict's reason; metadata ``p_value``, ``alpha``, ``baseline`` (the registry URI), ``score``, ``model_version``
and ``input_class`` (MLflow keeps metadata as text). Only the individual conformal p-value: no batch test per row.

Which cell a row belongs to, first found wins:

1. the ``model_version=`` and ``input_class=`` given to :func:`scorer` (one cell for every row);
2. the row's ``expectations`` (keys ``model_version`` and ``input_class``);
3. the row's trace tags (the same names), when the data are traces.

A row whose cell is not found gets ``invalid``, naming what is missing. The row's ``inputs`` become the record's
``input`` and its ``outputs`` the ``output``: a text stays as it is, a mapping with one text field gives that
text, anything else its canonical JSON. The record id is the trace id when there is one.

Each cell's baseline is resolved once (the registry's approved version, or one of the ``baselines`` given in
memory) and kept; the embedder loads once per process. The scorer runs rows one at a time under a lock
(``mlflow.genai.evaluate`` calls scorers from several threads).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conformance.api import BuiltBaseline
    from conformance.baseline.format import Baseline
    from conformance.registry import Registry
    from conformance.scoring.run import Resolver

NAME = "conformance"
CELL_KEYS = ("model_version", "input_class")


def as_text(value: Any) -> str | None:
    """A row's inputs or outputs as the record's text (see the module doc); ``None`` stays ``None``."""
    from conformance.ledger.canonical import canonical_json

    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        texts = [v for v in value.values() if isinstance(v, str)]
        if len(value) == 1 and len(texts) == 1:
            return texts[0]
    return canonical_json(value)


def _cell(expectations: Any, trace: Any, given: tuple[str | None, str | None]) -> tuple[Any, Any, str]:
    """The row's (model_version, input_class) and where they were found."""
    if all(v is not None for v in given):
        return given[0], given[1], "the scorer's arguments"
    if isinstance(expectations, Mapping) and all(expectations.get(k) not in (None, "") for k in CELL_KEYS):
        return expectations["model_version"], expectations["input_class"], "the row's expectations"
    tags = dict(getattr(getattr(trace, "info", None), "tags", None) or {})
    if all(tags.get(k) not in (None, "") for k in CELL_KEYS):
        return tags["model_version"], tags["input_class"], "the trace's tags"
    return None, None, ""


def scorer(
    *,
    model_version: str | None = None,
    input_class: str | None = None,
    baselines: Iterable[Baseline | BuiltBaseline] | None = None,
    registry: Registry | None = None,
    name: str = NAME,
) -> Any:
    """An ``mlflow.genai`` scorer judging each row against the approved baseline of its cell.

    Parameters
    ----------
    model_version, input_class : str, optional
        The cell of every row (give both or neither); else each row's expectations or trace tags say it.
    baselines : iterable of Baseline or BuiltBaseline, optional
        Judge against these (one per cell) instead of the registry's approved versions.
    registry : Registry, optional
        The registry to resolve approved baselines in (default: ``MLFLOW_TRACKING_URI``'s store, else the
        embedded one).
    name : str
        The Feedback's name (default ``conformance``).

    Examples
    --------
    >>> import mlflow, conformance.mlflow                                           # doctest: +SKIP
    >>> mlflow.genai.evaluate(data=frame, scorers=[conformance.mlflow.scorer(
    ...     model_version="support-bot-3.2", input_class="refund_request")])        # doctest: +SKIP
    """
    if (model_version is None) != (input_class is None):
        raise ValueError("give both model_version and input_class, or neither (each row then says its cell)")
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer as make_scorer

    from conformance.scoring.stream import StreamScorer
    from conformance.wiring import embedder_chooser, given_resolver, registry_resolver

    approvals: dict[str, tuple[str | None, str | None]] = {}
    resolve_any: Resolver = (given_resolver(baselines, approvals) if baselines is not None
                             else registry_resolver(registry, approvals))
    resolved: dict[tuple[str, str], Any] = {}

    def resolve(mv: str, ic: str) -> Any:
        if (mv, ic) not in resolved:
            resolved[(mv, ic)] = resolve_any(mv, ic)
        return resolved[(mv, ic)]

    choose = embedder_chooser(False)
    lock = threading.Lock()

    def judge(inputs: Any = None, outputs: Any = None, expectations: Any = None, trace: Any = None) -> Feedback:
        from conformance.records import as_record_set

        mv, ic, found_in = _cell(expectations, trace, (model_version, input_class))
        trace_id = getattr(getattr(trace, "info", None), "trace_id", None)
        if mv is None:
            return Feedback(name=name, value="invalid", rationale=(
                "no cell for this row: give model_version= and input_class= to conformance.mlflow.scorer, or put "
                "model_version and input_class in the row's expectations or its trace's tags"),
                metadata={"p_value": "", "alpha": "", "baseline": ""})
        row = {"record_id": str(trace_id or "genai-row"), "model_version": str(mv), "input_class": str(ic),
               "input": as_text(inputs), "output": as_text(outputs)}
        with lock:
            rows = as_record_set([row]).rows
            verdict = StreamScorer(resolve, embedder=choose, progress=False).score_chunk(list(rows))[0]
        return Feedback(name=name, value=verdict.verdict, rationale=verdict.reason, metadata={
            "p_value": "" if verdict.p_value is None else repr(float(verdict.p_value)),
            "alpha": "" if verdict.alpha is None else repr(float(verdict.alpha)),
            "baseline": verdict.baseline or "", "score": "" if verdict.score is None else repr(float(verdict.score)),
            "model_version": str(mv), "input_class": str(ic), "cell_from": found_in})

    def conformance_scorer(*, inputs: Any = None, outputs: Any = None, expectations: Any = None,
                           trace: Any = None) -> Feedback:
        return judge(inputs, outputs, expectations, trace)

    return make_scorer(conformance_scorer, name=name)


__all__ = ["NAME", "as_text", "scorer"]
