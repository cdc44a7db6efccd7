"""Verdicts and sign-offs onto MLflow traces, as Feedback assessments; the names and the store they share.

A record read from a trace (:mod:`conformance.mlflow.traces`) carries ``metadata = {"source": "mlflow_trace",
"trace_id": ...}``; that is how :func:`conformance.api.signoff` finds the trace of the verdict it signs. This
module imports nothing of :mod:`conformance.api`, which calls it, and MLflow only when a function runs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conformance.errors import ConformanceError

if TYPE_CHECKING:
    from conformance.ledger import Ledger
    from conformance.verdict import Verdict

SOURCE = "mlflow_trace"
"""``metadata["source"]`` of a record read from a trace."""
ASSESSMENT = "conformance"
"""The name of the Feedback assessment that carries a verdict."""
SIGNOFF_ASSESSMENT = "conformance.signoff"
"""The name of the Feedback assessment that carries a reviewer's sign-off."""
SOURCE_ID = "conformance"


class TraceStoreError(ConformanceError):
    """The tracking store cannot be read or written as asked (an experiment or run that is not there, a store
    that fails)."""


@dataclass(frozen=True)
class AssessmentReport:
    """How many verdicts were logged onto their traces, and how many were there already."""

    logged: int
    already_there: int

    def to_dict(self) -> dict[str, int]:
        return {"logged": self.logged, "already_there": self.already_there}


class AssessmentError(TraceStoreError):
    """Logging verdicts onto traces failed after the ledger recorded them; a re-run logs the rest."""

    def __init__(self, message: str, report: AssessmentReport) -> None:
        super().__init__(message)
        self.report = report


# -- the store -------------------------------------------------------------------------------------------------

def tracking_client(tracking_uri: str | None = None) -> Any:
    """MLflow's client on the registry's tracking store (also made MLflow's current one, for ``log_feedback``)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from conformance.registry import Registry

    return Registry(tracking_uri).client


def store_failing(what: str, uri: str) -> Any:
    """A context turning MLflow's and the network's errors into a :class:`TraceStoreError`."""
    from contextlib import contextmanager

    from mlflow.exceptions import MlflowException

    @contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except (MlflowException, OSError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise TraceStoreError(f"the MLflow tracking store at {uri} failed to {what}: {type(exc).__name__}: "
                                  f"{first}. Check that it is running and reachable (MLFLOW_TRACKING_URI), "
                                  "then retry") from exc

    return guard()


def store_uri(client: Any) -> str:
    """The tracking store a client reads and writes, for messages."""
    return str(client.tracking_uri)


def trace_id_of(record: Mapping[str, Any]) -> str | None:
    """The trace a record (as the ledger keeps it) was read from, or ``None``."""
    meta = record.get("metadata")
    if isinstance(meta, Mapping) and meta.get("source") == SOURCE and isinstance(meta.get("trace_id"), str):
        return str(meta["trace_id"])
    return None


def assessment_source() -> Any:
    """Who logged an assessment: a CODE source named ``conformance``."""
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    return AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=SOURCE_ID)


# -- verdicts onto traces ---------------------------------------------------------------------------------------

def _ledger_places(book: Ledger, verdicts: Sequence[Verdict], run_id: str | None) -> dict[int, tuple[int, str]]:
    """For each verdict (by position), the ledger entry that records it: (seq, run id)."""
    from conformance.ledger.entry import prepare
    from conformance.ledger.query import Filters

    keys = [prepare(v).key for v in verdicts]
    found: dict[str, tuple[int, str]] = {}
    if run_id is not None:
        found = {str(r["idem_key"]): (int(r["seq"]), str(r["run_id"])) for r in book.query_rows(Filters(run_id=run_id))}
    for v, key in zip(verdicts, keys):
        if key not in found and v.record_id:
            found.update({str(r["idem_key"]): (int(r["seq"]), str(r["run_id"]))
                          for r in book.query_rows(Filters(record_id=v.record_id))})
    return {i: found[key] for i, key in enumerate(keys) if key in found}


def log_verdicts(verdicts: Sequence[Verdict], *, book: Ledger, assessed: Mapping[str, set[str]],
                 run_id: str | None = None, tracking_uri: str | None = None) -> AssessmentReport:
    """Log each recorded verdict of a trace onto that trace as a Feedback named ``conformance``, once per
    (trace, baseline URI): a trace whose existing assessments (``assessed``) already name that baseline is skipped.

    Raises :class:`AssessmentError` (with what was done so far) when the store fails: the verdicts stay in the
    ledger, and the same call again logs the rest.
    """
    import mlflow

    from conformance.ledger.entry import target_of

    try:
        client = tracking_client(tracking_uri)
    except ConformanceError as exc:
        raise AssessmentError(f"the verdicts are recorded in the ledger, but none was logged onto its trace: {exc} "
                              "Then run the same command again: the ledger skips what it recorded, and the traces "
                              "get their verdicts", AssessmentReport(0, 0)) from exc
    from mlflow.exceptions import MlflowException

    already = 0
    todo: list[tuple[Verdict, str, str]] = []
    planned: dict[str, set[str]] = {k: set(v) for k, v in assessed.items()}
    for v in verdicts:
        trace_id = trace_id_of(v.record)
        if trace_id is None:
            continue
        target = target_of({"baseline": v.baseline, "verdict": v.verdict})
        if target in planned.get(trace_id, set()):
            already += 1
            continue
        planned.setdefault(trace_id, set()).add(target)
        todo.append((v, trace_id, target))
    places = _ledger_places(book, [v for v, _, _ in todo], run_id)  # only for what is logged now
    logged = 0
    for i, (v, trace_id, target) in enumerate(todo):
        seq, ledger_run = places.get(i, (None, None))
        metadata = {"baseline_uri": target, "alpha": "" if v.alpha is None else repr(v.alpha),
                    "p_value": "" if v.p_value is None else repr(v.p_value),
                    "ledger_seq": "" if seq is None else str(seq), "ledger_run_id": ledger_run or "",
                    "ledger": book.display_url}
        try:
            mlflow.log_feedback(trace_id=trace_id, name=ASSESSMENT, value=v.verdict, rationale=v.reason or None,
                                metadata=metadata, source=assessment_source())
        except (MlflowException, OSError) as exc:  # the store's and the network's errors: the ledger holds them
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise AssessmentError(
                f"the verdicts are recorded in the ledger, but logging them onto their traces failed at trace "
                f"{trace_id} ({logged} logged, {already} already there, {len(todo) - i} not yet): "
                f"{type(exc).__name__}: {first}. Check the tracking store at {store_uri(client)} and run the same "
                "command again: the ledger skips what it recorded, and the traces get the rest",
                AssessmentReport(logged, already)) from exc
        logged += 1
    return AssessmentReport(logged, already)


# -- sign-offs onto traces -------------------------------------------------------------------------------------

def log_signoff(book: Ledger, signoff: Mapping[str, Any], *, tracking_uri: str | None = None) -> bool | None:
    """Log a recorded sign-off onto the trace of the verdict it signs, as a Feedback named ``conformance.signoff``.

    ``None`` when that verdict's record came from no trace; ``False`` when the trace already carries this
    sign-off (same signed entry, same sign-off entry); ``True`` when it was logged. Raises
    :class:`TraceStoreError` when the store cannot be reached (the sign-off stays in the ledger).
    """
    entry = book.get(int(signoff["signed_seq"]))
    trace_id = trace_id_of(entry.content.get("record") or {}) if entry is not None else None
    if trace_id is None:
        return None
    import mlflow

    client = tracking_client(tracking_uri)
    with store_failing(f"read the trace {trace_id}", store_uri(client)):
        trace = mlflow.get_trace(trace_id)
    if trace is None:
        raise TraceStoreError(f"the trace {trace_id} is not in the tracking store at {store_uri(client)}")
    for a in trace.info.assessments or ():
        if a.name == SIGNOFF_ASSESSMENT and (a.metadata or {}).get("signoff_seq") == str(signoff["seq"]):
            return False
    metadata = {"by": str(signoff["by"]), "signed_seq": str(signoff["signed_seq"]),
                "signoff_seq": str(signoff["seq"]), "signed_at": str(signoff.get("signed_at") or ""),
                "ledger": book.display_url}
    with store_failing(f"log the sign-off onto the trace {trace_id}", store_uri(client)):
        mlflow.log_feedback(trace_id=trace_id, name=SIGNOFF_ASSESSMENT, value=str(signoff["decision"]),
                            rationale=signoff.get("comment") or None, metadata=metadata, source=assessment_source())
    return True


def signoff_onto_trace(book: Ledger, signoff: Mapping[str, Any]) -> bool | None:
    """:func:`log_signoff`, with a warning instead of an error when the store cannot be reached."""
    try:
        return log_signoff(book, signoff)
    except ConformanceError as exc:
        warnings.warn(f"the sign-off is recorded in the ledger (entry #{signoff['seq']}), but its trace was not "
                      f"updated: {exc}", stacklevel=3)
        return None


__all__ = ["ASSESSMENT", "SIGNOFF_ASSESSMENT", "SOURCE", "AssessmentError", "AssessmentReport", "TraceStoreError",
           "log_signoff", "log_verdicts", "signoff_onto_trace", "trace_id_of"]
