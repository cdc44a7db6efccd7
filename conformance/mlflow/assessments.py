"""Verdicts and sign-offs onto MLflow traces: the names, the store, and a reviewer's sign-off as a Feedback.

A record read from a trace (:mod:`conformance.mlflow.traces`) carries ``metadata = {"source": "mlflow_trace",
"trace_id": ...}``; that is how :func:`conformance.api.signoff` finds the trace of the verdict it signs. This
module imports nothing of :mod:`conformance.api`, which calls it, and MLflow only when a function runs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from conformance.errors import ConformanceError

if TYPE_CHECKING:
    from conformance.ledger import Ledger

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


__all__ = ["ASSESSMENT", "SIGNOFF_ASSESSMENT", "SOURCE", "TraceStoreError", "log_signoff", "signoff_onto_trace",
           "trace_id_of"]
