"""MLflow traces as records, and verdicts and sign-offs back onto their traces as Feedback assessments.

A trace is one model call: its request is the record's ``input``, its response the ``output`` (a mapping with
one text field gives that text, anything else its canonical JSON; ``input_field``/``output_field`` choose a
field), its id the ``record_id``. ``model_version`` and ``input_class`` come from the trace's tags, else from
the tags of the run it was logged under (whose id becomes ``eval_run_id``). A trace that cannot be a record
(an error trace, no response, a tag missing) is kept as an invalid row naming the trace and what is missing:
``build`` refuses it, ``score`` gives it an ``invalid`` verdict. Every record read here carries
``metadata = {"source": "mlflow_trace", "trace_id": ...}``, which is how a sign-off finds its trace.

The tracking store is the registry's (:func:`conformance.registry.mlflow_registry.tracking_uri`). Only
MLflow's public API is used; MLflow is imported when a function runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance import defaults
from conformance.errors import ConformanceError, InputFileError, RecordProblem
from conformance.mlflow.assessments import (
    ASSESSMENT, SIGNOFF_ASSESSMENT, SOURCE, AssessmentError, AssessmentReport, TraceStoreError, log_verdicts,
    store_failing, store_uri, tracking_client,
)
from conformance.records import InvalidRow, Record, RecordSet, validate_row

if TYPE_CHECKING:
    from conformance.api import ScoreResult
    from conformance.ledger import Ledger

APPROVAL_TAG = "conformance.approved_by"
"""A run tag naming who approved the run's outputs as approved data."""
_PAGE = 500


@dataclass(frozen=True)
class TraceFields:
    """Which parts of a trace make a record: the request's and response's field (``None``: the whole value, or
    its one text field) and the tags naming the cell."""

    input_field: str | None = None
    output_field: str | None = None
    model_version_tag: str = "model_version"
    input_class_tag: str = "input_class"


@dataclass(frozen=True)
class TraceRecords:
    """What was read: the records (a :class:`RecordSet` in trace order, invalid rows included), the runs whose
    traces they are, the runs skipped as unapproved, and each trace's existing ``conformance`` assessments (the
    baseline URIs they name) so that a verdict is logged once."""

    records: RecordSet
    runs: list[str] = field(default_factory=list)
    skipped_runs: list[str] = field(default_factory=list)
    assessed: dict[str, set[str]] = field(default_factory=dict)

    @property
    def n_traces(self) -> int:
        return len(self.records.rows)


@dataclass(frozen=True)
class TraceScoreResult:
    """What :func:`score_traces` returns: the :class:`~conformance.api.ScoreResult` and the assessments."""

    result: ScoreResult
    assessments: AssessmentReport
    traces: TraceRecords


# -- the store -------------------------------------------------------------------------------------------------

def _experiment(client: Any, name_or_id: str) -> Any:
    uri = store_uri(client)
    with store_failing(f"find the experiment {name_or_id!r}", uri):
        found = client.get_experiment_by_name(name_or_id)
        if found is None and name_or_id.strip().isdigit():
            from mlflow.exceptions import MlflowException

            try:
                found = client.get_experiment(name_or_id.strip())
            except MlflowException:
                found = None
    if found is None:
        raise TraceStoreError(f"no MLflow experiment named or numbered {name_or_id!r} in the tracking store at {uri}; "
                              "check the name (or set MLFLOW_TRACKING_URI to the store that holds it)")
    return found


def _run(client: Any, run_id: str, cache: dict[str, Any]) -> Any:
    if run_id not in cache:
        from mlflow.exceptions import MlflowException

        try:
            cache[run_id] = client.get_run(run_id)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise TraceStoreError(f"no MLflow run {run_id!r} in the tracking store at {store_uri(client)}; "
                                      "check the run id (MLflow's UI shows it on the run's page)") from exc
            with store_failing(f"read the run {run_id!r}", store_uri(client)):
                raise
    return cache[run_id]


def _traces(client: Any, experiment_id: str, *, run_id: str | None, filter_string: str | None) -> Iterator[Any]:
    """Every trace of an experiment (or of one run in it), oldest first, page by page: no cap."""
    token = None
    where = f"run {run_id!r}" if run_id else f"experiment {experiment_id!r}"
    while True:
        with store_failing(f"search the traces of {where}", store_uri(client)), _bad_filter(filter_string):
            page = client.search_traces(locations=[experiment_id], run_id=run_id, filter_string=filter_string,
                                        max_results=_PAGE, order_by=["timestamp_ms ASC"], page_token=token,
                                        include_spans=True)
        yield from page
        token = page.token
        if not token or not len(page):
            return


@contextmanager
def _bad_filter(filter_string: str | None) -> Iterator[None]:
    """A filter MLflow refuses is the user's to fix, not a store failure."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if filter_string is None or getattr(exc, "error_code", "") != "INVALID_PARAMETER_VALUE":
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"--filter-string {filter_string!r} is not a trace filter MLflow accepts: {first}. It takes "
                         "the syntax of mlflow.search_traces, e.g. \"tags.input_class = 'refund_request'\"") from None


def _runs_of(client: Any, experiment_id: str) -> Iterator[Any]:
    token = None
    while True:
        with store_failing(f"search the runs of experiment {experiment_id!r}", store_uri(client)):
            page = client.search_runs([experiment_id], max_results=1000, page_token=token,
                                      order_by=["attributes.start_time ASC"])
        yield from page
        token = page.token
        if not token or not len(page):
            return


# -- traces into records ---------------------------------------------------------------------------------------

def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _text_of(serialised: str | None, chosen: str | None, what: str) -> tuple[str | None, str | None]:
    """The text of a trace's request or response (its JSON as MLflow keeps it), or the problem that makes it none."""
    if serialised is None:
        return None, f"the trace has no {what}"
    try:
        value = json.loads(serialised)
    except (TypeError, ValueError):
        value = serialised
    if chosen is not None:
        if not isinstance(value, Mapping) or chosen not in value:
            held = ", ".join(map(str, value)) if isinstance(value, Mapping) else type(value).__name__
            return None, (f"its {what} has no field {chosen!r} (it holds {held or 'nothing'}); name another with "
                          f"--{'input' if what == 'request' else 'output'}-field")
        value = value[chosen]
    elif isinstance(value, Mapping) and len(value) == 1 and isinstance(next(iter(value.values())), str):
        value = next(iter(value.values()))
    if value is None:
        return None, f"the trace has no {what} (it is null)"
    return (value if isinstance(value, str) else _canonical(value)), None


def _tag(name: str, trace_tags: Mapping[str, str], run: Any) -> str | None:
    value = trace_tags.get(name)
    if value in (None, "") and run is not None:
        value = run.data.tags.get(name)
    return value if value not in (None, "") else None


def _timestamp(ms: Any) -> str | None:
    if not isinstance(ms, (int, float)):
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def trace_to_row(row: int, trace: Any, *, run: Any, fields: TraceFields, seen: dict[str, int],
                 max_chars: int | None = defaults.MAX_TEXT_CHARS) -> Record | InvalidRow:
    """One trace as a record, or as an invalid row whose problems name the trace and what it lacks."""
    info = trace.info
    trace_id = str(info.trace_id)
    run_id = run.info.run_id if run is not None else None
    raw: dict[str, Any] = {"record_id": trace_id}
    problems: list[RecordProblem] = []

    def problem(name: str, code: str, message: str) -> None:
        problems.append(RecordProblem(row, trace_id, name, code, f"trace {trace_id}: {message}"))

    state = str(getattr(info.state, "value", info.state))
    if state != "OK":
        problem("output", "trace_error", f"the trace's state is {state}, not OK (the call failed or never ended); "
                                         "an error trace has no output to judge")
    for name, tag in (("model_version", fields.model_version_tag), ("input_class", fields.input_class_tag)):
        value = _tag(tag, info.tags, run)
        if value is None:
            where = f"nor on its run {run_id}" if run_id else "and it was logged under no run"
            flag = "--" + name.replace("_", "-") + "-tag"
            problem(name, "missing_tag", f"no tag {tag!r} on the trace, {where}; set it with "
                                         f"mlflow.update_current_trace(tags={{{tag!r}: ...}}), or name the tag "
                                         f"that holds it with {flag}")
        else:
            raw[name] = value
    for name, serialised, chosen, what in (("input", trace.data.request, fields.input_field, "request"),
                                           ("output", trace.data.response, fields.output_field, "response")):
        if state != "OK" and name == "output" and serialised is None:
            continue  # already said: an error trace
        text, trouble = _text_of(serialised, chosen, what)
        if trouble is not None:
            problem(name, "missing" if "no " + what in trouble else "no_field", trouble)
        else:
            raw[name] = text
    if run_id:
        raw["eval_run_id"] = run_id
    stamp = _timestamp(getattr(info, "request_time", None))
    if stamp:
        raw["timestamp"] = stamp
    raw["metadata"] = {"source": SOURCE, "trace_id": trace_id, "experiment_id": str(info.experiment_id)}
    if problems:
        if trace_id not in seen:
            seen[trace_id] = row
        return InvalidRow(row=row, raw={**raw, "source_row": row}, problems=tuple(problems))
    return validate_row(row, raw, seen, max_chars=max_chars)


def _assessed(trace: Any) -> set[str]:
    """The baseline URIs (or verdict targets) of the trace's existing ``conformance`` assessments."""
    found = set()
    for a in getattr(trace.info, "assessments", None) or ():
        if a.name == ASSESSMENT and getattr(a, "valid", True) is not False:
            target = (a.metadata or {}).get("baseline_uri")
            if target:
                found.add(target)
    return found


def _read(client: Any, sources: Iterable[tuple[str, str | None]], *, where: str, filter_string: str | None,
          fields: TraceFields, max_chars: int | None) -> tuple[RecordSet, dict[str, set[str]]]:
    """Traces of each (experiment_id, run_id or None) source, as one record set in reading order."""
    rows: list[Record | InvalidRow] = []
    seen: dict[str, int] = {}
    runs: dict[str, Any] = {}
    assessed: dict[str, set[str]] = {}
    for experiment_id, run_id in sources:
        for trace in _traces(client, experiment_id, run_id=run_id, filter_string=filter_string):
            source_run = run_id or (trace.info.trace_metadata or {}).get("mlflow.sourceRun")
            run = _run(client, source_run, runs) if source_run else None
            rows.append(trace_to_row(len(rows) + 1, trace, run=run, fields=fields, seen=seen, max_chars=max_chars))
            assessed[str(trace.info.trace_id)] = _assessed(trace)
    if not rows:
        raise InputFileError(f"{where}: holds no traces" + (f" matching {filter_string!r}" if filter_string else "")
                             + "; log them with @mlflow.trace or mlflow.start_span (under the run, for a build)")
    return RecordSet(path=where, rows=tuple(rows)), assessed


def records_from_runs(run_ids: Sequence[str], *, filter_string: str | None = None,
                      fields: TraceFields = TraceFields(), tracking_uri: str | None = None,
                      max_chars: int | None = defaults.MAX_TEXT_CHARS) -> TraceRecords:
    """The traces of these runs as records. A run named here counts as approved: the caller named it.

    Raises :class:`TraceStoreError` for a run that is not in the store, :class:`InputFileError` when the runs hold
    no trace.
    """
    if isinstance(run_ids, str) or not run_ids:
        raise ValueError("run_ids must be a non-empty list of MLflow run ids")
    client = tracking_client(tracking_uri)
    cache: dict[str, Any] = {}
    ids = list(dict.fromkeys(run_ids))
    sources = [(str(_run(client, r, cache).info.experiment_id), r) for r in ids]
    where = "mlflow run" + ("s " if len(ids) > 1 else " ") + ", ".join(ids)
    records, assessed = _read(client, sources, where=where, filter_string=filter_string, fields=fields,
                              max_chars=max_chars)
    return TraceRecords(records, runs=ids, assessed=assessed)


def records_from_experiment(name_or_id: str, *, filter_string: str | None = None, since: str | None = None,
                            approved_runs_only: bool = False, fields: TraceFields = TraceFields(),
                            tracking_uri: str | None = None,
                            max_chars: int | None = defaults.MAX_TEXT_CHARS) -> TraceRecords:
    """The traces of an experiment as records.

    With ``approved_runs_only`` (what ``build`` reads) only the traces of its runs tagged
    ``conformance.approved_by`` are read, and the other runs are listed in ``skipped_runs``; none approved is an
    error. Otherwise every trace of the experiment (what ``score`` reads). ``since`` (ISO 8601) keeps the traces
    that started at or after it.
    """
    client = tracking_client(tracking_uri)
    experiment = _experiment(client, name_or_id)
    exp_id = str(experiment.experiment_id)
    where = f"mlflow experiment {experiment.name!r}"
    if since is not None:
        from conformance.ledger.query import utc_iso

        try:
            start = datetime.fromisoformat(utc_iso(since, "since"))
        except ConformanceError as exc:
            raise ValueError(str(exc)) from None
        clause = f"trace.timestamp_ms >= {int(start.timestamp() * 1000)}"
        filter_string = f"{filter_string} AND {clause}" if filter_string else clause
    if not approved_runs_only:
        records, assessed = _read(client, [(exp_id, None)], where=where, filter_string=filter_string, fields=fields,
                                  max_chars=max_chars)
        return TraceRecords(records, assessed=assessed)
    approved: list[str] = []
    skipped: list[str] = []
    for run in _runs_of(client, exp_id):
        (approved if run.data.tags.get(APPROVAL_TAG, "").strip() else skipped).append(run.info.run_id)
    if not approved:
        raise InputFileError(
            f"{where}: none of its {len(skipped)} run(s) is approved (tagged {APPROVAL_TAG!r}), so it holds no "
            f"approved data. Tag the approved evaluation run (mlflow.set_tag({APPROVAL_TAG!r}, 'NAME'), or the UI), "
            "or name it with --from-mlflow-run RUN_ID")
    records, assessed = _read(client, [(exp_id, r) for r in approved], where=where, filter_string=filter_string,
                              fields=fields, max_chars=max_chars)
    return TraceRecords(records, runs=approved, skipped_runs=skipped, assessed=assessed)


# -- scoring an experiment's traces ----------------------------------------------------------------------------

def score_traces(experiment: str, *, filter_string: str | None = None, since: str | None = None,
                 fields: TraceFields = TraceFields(), ledger: str | Ledger | None = None,
                 out: str | Path | None = None, summary: str | Path | None = None, log_assessments: bool = True,
                 tracking_uri: str | None = None, max_output_chars: int | None = defaults.MAX_TEXT_CHARS,
                 **score_options: Any) -> TraceScoreResult:
    """Score the traces of an experiment against the approved baselines, record the verdicts in the ledger,
    and log each verdict onto its trace as a Feedback assessment named ``conformance``.

    Parameters
    ----------
    experiment : str
        The experiment's name or id, in the registry's tracking store.
    filter_string, since
        MLflow's trace filter (``mlflow.search_traces``), and the earliest start time (ISO 8601) to read.
    fields : TraceFields
        Which request and response field and which tags make a record.
    ledger : URL or Ledger, optional
        Where the verdicts are recorded (default ``CONFORMANCE_LEDGER_URL``, else the embedded ledger); the
        assessments name each verdict's entry in it.
    out, summary, score_options
        As :func:`conformance.api.score` (``fdr``, ``progress``, ``cache``, ``embedder``, ``registry``, ...).
    log_assessments : bool
        ``False`` records the verdicts without touching the traces.

    Returns
    -------
    TraceScoreResult
        ``result`` (the :class:`~conformance.api.ScoreResult`, verdicts in trace order), ``assessments``
        (``logged`` and ``already_there``) and ``traces`` (what was read).

    Examples
    --------
    >>> done = score_traces("support-bot-prod", since="2026-06-01")  # doctest: +SKIP
    >>> done.result.counts, done.assessments.logged                    # doctest: +SKIP
    """
    from conformance import api
    from conformance.ledger import Ledger

    traces = records_from_experiment(experiment, filter_string=filter_string, since=since, fields=fields,
                                     tracking_uri=tracking_uri, max_chars=max_output_chars)
    book = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
    try:
        result = api.score(traces.records, ledger=book, out=out, summary=summary, keep_verdicts=True,
                           **score_options)
        report = AssessmentReport(0, 0)
        if log_assessments:
            run_id = result.ledger.run_id if result.ledger is not None else None
            report = log_verdicts(result.verdicts, book=book, assessed=traces.assessed, run_id=run_id,
                                  tracking_uri=tracking_uri)
    finally:
        if book is not ledger:
            book.close()
    return TraceScoreResult(result, report, traces)


__all__ = ["APPROVAL_TAG", "ASSESSMENT", "SIGNOFF_ASSESSMENT", "AssessmentError", "AssessmentReport", "TraceFields",
           "TraceRecords", "TraceScoreResult", "TraceStoreError", "log_verdicts",
           "records_from_experiment", "records_from_runs", "score_traces"]
