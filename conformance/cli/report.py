"""``conformance report``: the reviewer's HTML report (and PDF) of a verdicts file, a run, or every run since a time."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

DESCRIPTION = (
    "Write one self-contained HTML file that a reviewer can read, archive and open years from now:\n"
    "what was checked against which approved baselines (who approved them, when, alpha, the\n"
    "guarantee), how many outputs and batches fell out of bounds, each group's batch verdict in\n"
    "words that match its tests with a plot of the audited scores against the approved ones, and\n"
    "each out-of-bounds output with its input, its output and the nearest approved outputs as text.\n"
    "The file runs no script and loads nothing; model text in it is always shown as text.\n"
    "When the verdicts have a scoring run in MLflow (score logs one), the report is also logged\n"
    "there as an artifact, and the command says so.\n\n"
    "examples:\n"
    "  conformance report verdicts.jsonl --summary summary.json --out report.html\n"
    "  conformance report --run 20261203T073330Z-e5f319d6e27c --out report.html --pdf\n"
    "  conformance report --since 2026-12-01 --out december.html"
)


def add_parser(verbs: Any, formatter: Callable[[str], argparse.HelpFormatter], epilog: str) -> None:
    from conformance.cli.ledger import LEDGER_HELP

    report = verbs.add_parser("report", formatter_class=formatter, help="an HTML report for reviewers",
                              description=DESCRIPTION, epilog=epilog)
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("verdicts_file", metavar="VERDICTS_FILE", nargs="?",
                        help="a verdicts file written by score (.jsonl, .csv, .parquet)")
    source.add_argument("--run", metavar="RUN_ID", help="the verdicts of one scoring run, from the ledger")
    source.add_argument("--since", metavar="TIME", help="the verdicts of every run since TIME (ISO 8601), from the "
                                                        "ledger")
    report.add_argument("--out", metavar="REPORT.html", required=True, help="the HTML file to write")
    report.add_argument("--summary", metavar="SUMMARY.json",
                        help="with VERDICTS_FILE: the summary score wrote (--summary), for the batch verdicts")
    report.add_argument("--pdf", nargs="?", const="", metavar="REPORT.pdf",
                        help="also print the report to PDF with headless Chromium (default: the HTML file's name "
                             "with .pdf)")
    report.add_argument("--ledger", metavar="URL", help="with --run or --since: the ledger to read: " + LEDGER_HELP)
    report.add_argument("--no-registry", action="store_true",
                        help="do not read the baselines from the MLflow registry (the nearest approved outputs are "
                             "then shown by id, without their texts, and no plot is drawn), and do not log the report "
                             "to its scoring run: MLflow is not touched")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from conformance import report

    if args.summary and not args.verdicts_file:
        raise report.InputFileError("--summary goes with a VERDICTS_FILE; a run's batch verdicts are in the ledger")
    if args.ledger and args.verdicts_file:
        raise report.InputFileError("--ledger goes with --run or --since")
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise report.InputFileError(f"{out}: the report is an HTML file; give a name ending in .html")
    if args.verdicts_file:
        rows = report.read_verdicts_file(args.verdicts_file)
        batches = report.read_summary(args.summary) if args.summary else {}
        source = f"verdicts file {args.verdicts_file}" + (f" and summary {args.summary}" if args.summary else "")
    else:
        rows, batches, source = report.from_ledger(run_id=args.run, since=args.since, ledger=args.ledger)
    registry = None
    if not args.no_registry and any(r.get("baseline") for r in rows):
        from conformance.registry import Registry

        registry = Registry()
    built = report.build_report(rows, batches, source=source, registry=registry)
    written = report.write_report(built, out)
    counts = built.counts
    print(f"report of {len(rows)} verdicts ({counts['out_of_bounds']} out of bounds) written to {written}")
    if not args.no_registry:
        _log_to_scoring_runs(rows, written, args.verdicts_file)
    if args.pdf is not None:
        pdf = Path(args.pdf) if args.pdf else written.with_suffix(".pdf")
        report.print_pdf(written, pdf)
        print(f"PDF written to {pdf}")
    return 0


def _log_to_scoring_runs(rows: list[dict[str, Any]], written: Any, verdicts_file: str | None) -> None:
    """Log the report to the MLflow scoring runs of its verdicts (found by the ledger run id, or by the verdicts
    file's digest); none found is no failure, and neither is an MLflow that fails: the report is written."""
    import sys
    from pathlib import Path

    from conformance.mlflow.runs import file_digest, log_report, scoring_runs_of
    from conformance.registry import Registry

    ledger_runs = {str(r["run_id"]) for r in rows if r.get("run_id")}
    registry = Registry()
    if registry.embedded and not Path(registry.uri[len("sqlite:///"):]).exists():
        return  # no store here: nothing to log to, and none is created for it
    try:
        found = scoring_runs_of(registry, ledger_run_ids=ledger_runs,
                                verdicts_sha256=file_digest(verdicts_file) if verdicts_file else None)
        logged = log_report(registry, found, written)
    except Exception as exc:  # the report is written; MLflow is a second home for it
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"warning: the report could not be logged to its MLflow scoring run: {type(exc).__name__}: {first}",
              file=sys.stderr)
        return
    for run_id in logged:
        print(f"report logged to MLflow run {run_id}")
