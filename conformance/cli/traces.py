"""``build`` and ``score`` from MLflow traces: the options, and reading the records (conformance.mlflow.traces)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

TRACES_HELP = """\
from MLflow traces (instead of a file):
  each trace is one record: record_id = the trace id, input = the request, output =
  the response (a mapping with one text field gives that text, anything else its
  JSON; --input-field/--output-field choose a field), model_version and input_class
  from the trace's tags, else from its run's tags (--model-version-tag and
  --input-class-tag rename them), eval_run_id = the run id. The tracking store is the
  registry's (below).
"""


def _field_options(group: Any) -> None:
    group.add_argument("--filter-string", metavar="S",
                       help="MLflow's trace filter, as mlflow.search_traces takes it "
                            "(e.g. \"tags.input_class = 'refund_request'\")")
    group.add_argument("--input-field", metavar="NAME", help="the request's field that is the input "
                                                             "(default: its one text field, else all of it as JSON)")
    group.add_argument("--output-field", metavar="NAME", help="the response's field that is the output "
                                                              "(default: its one text field, else all of it as JSON)")
    group.add_argument("--model-version-tag", metavar="TAG", default="model_version",
                       help="the trace (or run) tag holding the model version (default %(default)s)")
    group.add_argument("--input-class-tag", metavar="TAG", default="input_class",
                       help="the trace (or run) tag holding the input class (default %(default)s)")


def add_build_options(build: argparse.ArgumentParser) -> None:
    group = build.add_argument_group("from MLflow traces (instead of APPROVED_FILE)")
    group.add_argument("--from-mlflow-run", nargs="+", metavar="RUN_ID",
                       help="the traces of these evaluation runs are the approved outputs (naming a run approves it)")
    group.add_argument("--from-mlflow-experiment", metavar="NAME_OR_ID",
                       help="the traces of this experiment's approved runs (tagged conformance.approved_by); "
                            "the other runs are skipped and counted")
    _field_options(group)


def add_score_options(score: argparse.ArgumentParser) -> None:
    group = score.add_argument_group("from MLflow traces (instead of AUDITED_FILE)")
    group.add_argument("--from-mlflow-experiment", metavar="NAME_OR_ID",
                       help="score this experiment's traces; each verdict is then also logged onto its trace as a "
                            "Feedback assessment named 'conformance' (once per trace and baseline version)")
    group.add_argument("--since", metavar="TIME", help="only traces started at or after TIME (ISO 8601, e.g. "
                                                       "2026-06-01 or 2026-06-01T09:00:00Z; UTC when no zone)")
    _field_options(group)


def _fields(args: argparse.Namespace) -> Any:
    from conformance.mlflow.traces import TraceFields

    return TraceFields(input_field=args.input_field, output_field=args.output_field,
                       model_version_tag=args.model_version_tag, input_class_tag=args.input_class_tag)


def _check_tags(args: argparse.Namespace, parser: argparse.ArgumentParser, verb: str) -> None:
    for name in ("model_version_tag", "input_class_tag"):
        if not getattr(args, name).strip():
            parser.error(f"{verb} --{name.replace('_', '-')} must not be empty")


def build_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    """What ``build`` reads: APPROVED_FILE, or the records of MLflow traces (exactly one source)."""
    sources = (("APPROVED_FILE", args.approved_file), ("--from-mlflow-run", args.from_mlflow_run),
               ("--from-mlflow-experiment", args.from_mlflow_experiment))
    given = [name for name, value in sources if value]
    if len(given) != 1:
        parser.error("build needs exactly one source of approved outputs: APPROVED_FILE, --from-mlflow-run RUN_ID "
                     "[RUN_ID ...] or --from-mlflow-experiment NAME_OR_ID" + (f" (given: {', '.join(given)})"
                                                                             if given else ""))
    trace_only = ("filter_string", "input_field", "output_field")
    if args.approved_file:
        used = [n for n in trace_only if getattr(args, n) is not None]
        if used or args.model_version_tag != "model_version" or args.input_class_tag != "input_class":
            parser.error("build: --filter-string, --input-field, --output-field, --model-version-tag and "
                         "--input-class-tag apply to --from-mlflow-run/--from-mlflow-experiment, not to a file")
        return args.approved_file
    _check_tags(args, parser, "build")
    from conformance.mlflow import traces

    if args.from_mlflow_run:
        read = traces.records_from_runs(args.from_mlflow_run, filter_string=args.filter_string, fields=_fields(args))
    else:
        read = traces.records_from_experiment(args.from_mlflow_experiment, filter_string=args.filter_string,
                                              approved_runs_only=True, fields=_fields(args))
    skipped = (f"; {len(read.skipped_runs)} unapproved run(s) skipped (not tagged {traces.APPROVAL_TAG})"
               if read.skipped_runs else "")
    print(f"read {read.n_traces} trace(s) of {len(read.runs)} approved run(s){skipped}", file=sys.stderr)
    return read.records


def score_from_traces(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any | None:
    """``score --from-mlflow-experiment``: the :class:`~conformance.mlflow.traces.TraceScoreResult`, or ``None``
    when AUDITED_FILE is the source."""
    trace_only = ("filter_string", "since", "input_field", "output_field")
    if not args.from_mlflow_experiment:
        if not args.audited_file:
            parser.error("score needs AUDITED_FILE or --from-mlflow-experiment NAME_OR_ID")
        used = [n for n in trace_only if getattr(args, n) is not None]
        if used or args.model_version_tag != "model_version" or args.input_class_tag != "input_class":
            parser.error("score: --filter-string, --since, --input-field, --output-field, --model-version-tag and "
                         "--input-class-tag apply to --from-mlflow-experiment, not to a file")
        return None
    if args.audited_file:
        parser.error("score needs exactly one source: AUDITED_FILE or --from-mlflow-experiment, not both")
    if args.engine != "local":
        parser.error("score --from-mlflow-experiment runs with --engine local")
    _check_tags(args, parser, "score")
    from conformance.mlflow.traces import score_traces

    return score_traces(args.from_mlflow_experiment, filter_string=args.filter_string, since=args.since,
                        fields=_fields(args), ledger=args.ledger, out=args.out, summary=args.summary,
                        max_output_chars=args.max_output_chars, progress=False if args.no_progress else None,
                        fdr=args.fdr, cache=not args.no_cache, chunk_size=args.chunk_size, raw_csv=args.csv_raw)
