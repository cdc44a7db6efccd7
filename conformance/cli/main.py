"""The ``conformance`` command line: a thin layer over :mod:`conformance.api`."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from conformance._version import __version__

from conformance.cli.table import table as _table
from conformance import defaults
from conformance.defaults import CALIBRATION_FRACTION, CALIBRATION_METHOD, CALIBRATION_METHODS
from conformance.cli.traces import TRACES_HELP, add_build_options as add_trace_build_options
from conformance.cli.traces import add_score_options as add_trace_score_options

EXIT_CODES = """\
exit codes:
  0  the command completed; for `score`, every record is within_bounds
  1  `score` completed and at least one record is out_of_bounds, no_baseline or invalid
  2  the command could not run (usage, unreadable file, missing required columns,
     unreachable tracking store, too few approved outputs); nothing was written
"""

STORE = """\
tracking store:
  MLFLOW_TRACKING_URI when set (e.g. http://mlflow.internal:5000); otherwise an
  embedded SQLite store at ./conformance_store/mlflow.db, with baseline artifacts
  in ./conformance_store/artifacts/ (relative to the working directory).
"""

RECORDS = """\
records (JSON Lines, CSV or Parquet; one model output per row):
  required: record_id, model_version, input_class, input, output
  optional, carried into every verdict: prompt_id, conversation_id, eval_run_id,
  timestamp, policy_id, policy_version, training_data_version, context, sampling,
  downstream_action, intent, metadata
  outputs that are not independent must share a key: samples of one prompt its
  prompt_id, turns of one conversation its conversation_id
"""

CACHE_HELP = ("embed every text afresh: neither read nor add to the embedding cache "
              "(./conformance_store/embeddings.db; duplicate texts are still embedded once)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conformance",
        formatter_class=_formatter,
        description=(
            "Was this model output within the bounds of what the model was approved to produce?\n\n"
            "  1. conformance build APPROVED_FILE      one baseline per (model_version, input_class)\n"
            "  2. conformance approve ... --by NAME    a person approves a baseline version\n"
            "     conformance baselines list | show | history   what is registered and approved; revoke NAME\n"
            "  3. conformance score AUDITED_FILE ...   one verdict per audited output, recorded in the ledger\n"
            "     (build and score read MLflow traces with --from-mlflow-experiment; docs/mlflow.md)\n"
            "  4. conformance verdicts / reconstruct / ledger verify   query, re-derive, check the ledger\n"
            "  5. conformance signoff RECORD_ID ...   a reviewer records a decision about a verdict\n"
            "  6. conformance report VERDICTS_FILE --out report.html   a report for reviewers\n"
            "  7. conformance review                    a local page to review verdicts and sign off"
        ),
        epilog=STORE + "\n" + EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"conformance {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an unexpected error, show Python's traceback (conformance --debug VERB ...)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    build = verbs.add_parser(
        "build", formatter_class=_formatter, help="build and register baselines from approved outputs",
        description=(
            "Build one baseline per (model_version, input_class) found in APPROVED_FILE and register\n"
            "each as a new version in the MLflow model registry. Each cell's outputs are split by\n"
            "prompt into a reference (fit) part and a disjoint calibration part. What counts is the\n"
            "number of distinct calibration prompts (n_calibration): alpha 0.05 needs at least 19,\n"
            "however many outputs each has; a cell with fewer is refused with the number needed.\n\n"
            "example:\n  conformance build baselines/example/approved.jsonl --approve --by 'A. Reviewer'\n"
            "  conformance build --from-mlflow-run 3f2a9c... --approve --by 'A. Reviewer'"
        ),
        epilog=RECORDS + "\n" + TRACES_HELP + "\n" + STORE + "\n" + EXIT_CODES,
    )
    build.add_argument("approved_file", metavar="APPROVED_FILE", nargs="?",
                       help="approved evaluation outputs (.jsonl, .csv, .parquet); or read MLflow traces "
                            "with --from-mlflow-run / --from-mlflow-experiment")
    build.add_argument("--alpha", type=float, default=defaults.ALPHA,
                       help="false-alarm rate: an approved-like output is flagged with probability <= alpha "
                            "(default %(default)s)")
    build.add_argument("--approve", action="store_true",
                       help="approve the new versions (needs --by): every cell is registered first, then all are "
                            "approved at the end, or none if any cell failed or the build was stopped")
    build.add_argument("--by", metavar="NAME", help="who approves, with --approve")
    build.add_argument("--built-by", metavar="NAME",
                       help="who builds, kept in each baseline's lineage and as its built_by tag (default: your "
                            "operating system's user name); --require-distinct-approver compares approvers with it")
    build.add_argument("--require-distinct-approver", action=argparse.BooleanOptionalAction, default=None,
                       help="with --approve: refuse when --by names the builder (default: the store's setting; "
                            "see `conformance approve --help`)")
    build.add_argument("--k", type=int, default=defaults.K,
                       help="the k of the distance to the k-th nearest approved output (default %(default)s)")
    build.add_argument("--calibration-fraction", type=float, default=CALIBRATION_FRACTION, metavar="F",
                       help="share of each cell's outputs (whole prompts) held out for calibration; the rest "
                            "is the reference (fit) part. More calibration prompts make small p-values "
                            "possible (with K of them the smallest is 1/(K+1)), which is what limits power "
                            "in cells of a few dozen prompts. The fraction is an upper bound: see "
                            "--no-round-calibration (default %(default)s)")
    build.add_argument("--no-round-calibration", action="store_true",
                       help="keep every calibration prompt the fraction gives. By default a cell keeps only as "
                            "many as reach alpha most nearly and moves the rest to the fit part: with K "
                            "calibration prompts the false-alarm rate is floor(alpha (K+1)) / (K+1), so at "
                            "alpha 0.05, 25 prompts give 1/26 = 0.038 and 19 give 0.05 exactly (the report's "
                            "n_calibration_from_fraction says where this happened). Never with --delta, whose "
                            "guarantee gains from every prompt, and never so few that build would warn of a widely "
                            "spread false-alarm rate where the fraction's count would not (32 become 29, not 19). "
                            "What it costs and gains: docs/validation.md")
    build.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default=CALIBRATION_METHOD,
                       help="how a score becomes a p-value. sample: compared with one calibration output per "
                            "prompt, drawn when the baseline is built (the usual split-conformal p-value over K "
                            "prompts; needed for --delta). weighted: compared with every calibration output, each "
                            "prompt weighing the same; the new output's own prompt then counts whole. Both hold "
                            "the level; which has more power depends on where alpha falls on the grid of levels K "
                            "prompts can reach (docs/method.md). auto picks, per cell, "
                            "from its prompt counts and alpha alone, and the baseline records the choice "
                            "(default %(default)s)")
    build.add_argument("--seed", type=int, default=defaults.SEED,
                       help="seed of the fit/calibration split and of the calibration outputs drawn "
                            "(default %(default)s)")
    build.add_argument("--scorer", choices=defaults.SCORERS, default=defaults.SCORER,
                       help="nonconformity score: knn_cosine (distance to the k-th nearest approved output) or "
                            "combined (input-conditional: ridge residual on the input, relevance, Mahalanobis, "
                            "text descriptors; input novelty reported apart) (default %(default)s)")
    build.add_argument("--delta", type=float, metavar="D",
                       help="also give the calibration-conditional guarantee: with probability >= 1 - D over the "
                            "approved sample, this baseline's false-alarm rate is <= alpha (verdicts then flag at "
                            "a p-value cut-off below alpha, shown as conditional_threshold)")
    build.add_argument("--embedder-backend", choices=defaults.EMBEDDER_BACKENDS, default=defaults.EMBEDDER_BACKEND,
                       help="what runs the embedder: torch, or ONNX Runtime in fp32 (onnx) or with int8 weights "
                            "(onnx-int8), which needs pip install 'conformance-audit[onnx]'. The baseline records it "
                            "and scoring uses the same one (docs/pipelines.md) (default %(default)s)")
    build.add_argument("--no-cache", action="store_true", help=CACHE_HELP)
    build.add_argument("--no-progress", action="store_true",
                       help="no progress bars on a terminal, no progress lines in a log")
    build.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    add_trace_build_options(build)

    approve = verbs.add_parser(
        "approve", formatter_class=_formatter, help="approve registered baseline versions (a person's step)",
        description=(
            "Approve baseline versions: each approval (who, when, the version, the version it replaced\n"
            "and the baseline's content digest) is appended to the ledger and kept in the registry's\n"
            "history tags, then the registry alias 'approved' moves to it. Scoring uses the approved\n"
            "version of each (model_version, input_class), and refuses one whose content differs from\n"
            "what was approved. Several versions at once: registered model NAMEs (their newest\n"
            "versions), or --all-from-build; every one is checked before any is approved, and the\n"
            "ledger records all of them or none.\n\n"
            "examples:\n"
            "  conformance approve --model-version support-bot-3.2 --input-class refund_request --by 'J. Doe'\n"
            "  conformance approve conformance.bot-3.2.refund_request conformance.bot-3.2.shipping --by 'J. Doe'\n"
            "  conformance approve --all-from-build build-20260101T120000Z-1a2b3c4d --by 'J. Doe'"
        ),
        epilog=("distinct approver:\n  --require-distinct-approver refuses an approval by the person who built the "
                "version\n  (its built_by tag). The store's default: CONFORMANCE_REQUIRE_DISTINCT_APPROVER=1, or\n"
                "  {\"require_distinct_approver\": true} in ./conformance_store/settings.json.\n\n"
                + STORE + "\n" + EXIT_CODES),
    )
    approve.add_argument("names", nargs="*", metavar="NAME",
                         help="registered model names (conformance baselines list) whose newest versions to approve")
    approve.add_argument("--model-version", metavar="V")
    approve.add_argument("--input-class", metavar="C")
    approve.add_argument("--version", type=int, metavar="N",
                         help="with --model-version and --input-class: the version to approve (default: the newest)")
    approve.add_argument("--all-from-build", metavar="BUILD_ID",
                         help="every version one `build` registered: its build id (`conformance baselines show "
                              "NAME` shows it), or the MLflow run id of one of its cells")
    approve.add_argument("--by", required=True, metavar="NAME", help="who approves (recorded in the ledger and the "
                                                                    "registry)")
    approve.add_argument("--require-distinct-approver", action=argparse.BooleanOptionalAction, default=None,
                         help="refuse when --by names a version's builder (default: the store's setting)")
    approve.add_argument("--format", choices=("table", "json"), default="table")

    score = verbs.add_parser(
        "score", formatter_class=_formatter, help="score audited outputs against approved baselines",
        description=(
            "Score every record of AUDITED_FILE against the approved baseline of its\n"
            "(model_version, input_class) and write one verdict per record, in input order:\n"
            "  within_bounds  p_value > alpha\n"
            "  out_of_bounds  p_value <= alpha (more unusual than approved outputs usually are)\n"
            "  no_baseline    no approved baseline for its (model_version, input_class)\n"
            "  invalid        the record is malformed; the reason says where and what\n\n"
            "Each (model_version, input_class) group is also tested as a batch (the printed table,\n"
            "and --summary) against every approved output its baseline keeps: what each output says,\n"
            "how it is written, which words it uses and how its lines begin, beyond what its input\n"
            "predicts: three MMD tests (what and how together; the words; the lines' and the\n"
            "answer's openings and closings), whole prompts permuted (B=1000, seed recorded),\n"
            "combined by Fisher's method (baselines built by 0.9.0: the first two; by 0.6.0-0.8.0:\n"
            "three or four tests, combined by minP); the group is out_of_bounds as a batch when\n"
            "that p-value <= alpha.\n"
            "A group of more than 500 outputs is tested on a seeded sample of whole prompts\n"
            "(recorded in the summary). Baselines built before 0.6.0 keep their four tests against\n"
            "the calibration part, combined by Bonferroni.\n\n"
            "Records are streamed in chunks: memory stays bounded however large the file. Every\n"
            "verdict is recorded in the ledger once; after an interruption (even kill -9), run the\n"
            "same command again: embeddings come from the cache, recorded verdicts are not recorded\n"
            "twice, and VERDICTS_FILE is written whole at the end.\n\n"
            "Then the scoring is logged as one MLflow run (experiment conformance-scoring, in the\n"
            "registry's tracking store; its id on stderr, or in --format json): the input's digest,\n"
            "the baselines used, counts and batch p-values, VERDICTS_FILE, the summary and the\n"
            "ledger's head (--no-mlflow-run: none; docs/mlflow.md).\n\n"
            "example:\n  conformance score baselines/example/audited.jsonl --out verdicts.jsonl --summary summary.json"
            "\n"
            "  conformance score --from-mlflow-experiment support-bot-prod --since 2026-06-01 --out verdicts.jsonl"
        ),
        epilog=RECORDS + "\n" + TRACES_HELP + "\n" + STORE + "\n" + EXIT_CODES,
    )
    score.add_argument("audited_file", metavar="AUDITED_FILE", nargs="?",
                       help="audited outputs (.jsonl, .csv, .parquet, or a folder of .parquet files); or read "
                            "MLflow traces with --from-mlflow-experiment")
    score.add_argument("--out", required=True, metavar="VERDICTS_FILE",
                       help="where to write the verdicts; format from the extension (.jsonl, .csv, .parquet)")
    score.add_argument("--summary", metavar="SUMMARY_JSON", help="where to write the per-group batch summary (JSON)")
    score.add_argument("--format", choices=("table", "json"), default="table", help="what to print (default table)")
    score.add_argument("--no-progress", action="store_true",
                       help="no progress bar on a terminal, no progress lines in a log")
    score.add_argument("--no-cache", action="store_true", help=CACHE_HELP)
    score.add_argument("--chunk-size", type=_positive_int, default=1000, metavar="N",
                       help="records read, scored and recorded in the ledger at a time (default 1000); memory "
                            "stays bounded whatever the size of AUDITED_FILE")
    score.add_argument("--max-output-chars", type=_positive_int, default=defaults.MAX_TEXT_CHARS, metavar="N",
                       help="a record whose input or output is longer than N characters is invalid, with a reason "
                            "that says so, instead of being embedded (default %(default)s)")
    score.add_argument("--csv-raw", action="store_true",
                       help="in a .csv VERDICTS_FILE, keep texts a spreadsheet would run as a formula (starting "
                            "with =, +, -, @, a tab or a CR) as they are; by default they are prefixed with '")
    score.add_argument("--fdr", type=float, metavar="Q",
                       help="also flag records by Benjamini-Hochberg at false discovery rate Q in (0, 1), over "
                            "the conformal p-values of the whole batch (all groups together): adds a bh_flag "
                            "column and the BH threshold and flagged count to the summary; the verdict column "
                            "and the exit code stay as without --fdr (p_value <= alpha)")
    score.add_argument("--engine", choices=("local", "spark"), default="local",
                       help="local: this process (default); spark: the records scored on Spark, the ledger and "
                            "VERDICTS_FILE written from this process, the same verdicts (needs the spark extra "
                            "and Java; docs/pipelines.md)")
    score.add_argument("--spark-master", metavar="URL", default="local[*]",
                       help="with --engine spark: the Spark master (default local[*], every core here; e.g. "
                            "spark://host:7077, yarn, k8s://https://host:443)")
    from conformance.cli.ledger import LEDGER_HELP, add_parsers

    score.add_argument("--ledger", metavar="URL", help="where every verdict is recorded: " + LEDGER_HELP)
    for parser_ in (build, approve):
        parser_.add_argument("--ledger", metavar="URL", help="where approvals are recorded: " + LEDGER_HELP)
    add_trace_score_options(score)
    score.add_argument("--mlflow-experiment", metavar="NAME",
                       help="the MLflow experiment of the scoring run (default: CONFORMANCE_MLFLOW_EXPERIMENT, else "
                            "conformance-scoring), in the tracking store of the registry. The run holds the input's "
                            "digest, the baselines used, the counts and batch p-values, VERDICTS_FILE, the summary "
                            "and the ledger's head; its id is printed (docs/mlflow.md)")
    score.add_argument("--no-mlflow-run", action="store_true",
                       help="log no MLflow scoring run. Without it, a run is logged after the ledger committed and "
                            "the files were written; if MLflow fails then, a warning says so and the exit code is "
                            "the verdicts' (0 or 1): the verdicts stand")
    add_parsers(verbs, _formatter, STORE)
    from conformance.cli.approvals import add_parsers as add_approval_parsers

    add_approval_parsers(verbs, _formatter, STORE + "\n" + EXIT_CODES, LEDGER_HELP)
    from conformance.cli.report import add_parser as add_report_parser

    add_report_parser(verbs, _formatter, STORE + "\n" + EXIT_CODES)
    from conformance.cli.review import add_parser as add_review_parser

    add_review_parser(verbs, _formatter, STORE)
    return parser


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    from conformance import api, wiring
    from conformance.errors import ConformanceError
    from conformance.cli.ledger import LEDGER_VERBS
    from conformance.cli.ledger import run as run_ledger_verb

    warnings.showwarning = _show_warning
    try:
        if args.verb == "build":
            if args.approve and not args.by:
                parser.error("build --approve needs --by NAME (who approves)")
            from conformance.cli.traces import build_source

            approved = build_source(args, parser)
            built = api.build(approved, alpha=args.alpha, approve_by=args.by if args.approve else None,
                              k=args.k, seed=args.seed, delta=args.delta, scorer=args.scorer,
                              calibration_fraction=args.calibration_fraction,
                              calibration_method=args.calibration_method,
                              round_calibration=not args.no_round_calibration, cache=not args.no_cache,
                              progress=False if args.no_progress else None,
                              backend=args.embedder_backend, built_by=args.built_by,
                              require_distinct_approver=args.require_distinct_approver, ledger=args.ledger)
            rows = [b.to_dict() for b in built]
            if args.format == "json":
                print(json.dumps(rows, indent=2))
            else:
                print(_table(rows, ("model_version", "input_class", "name", "version", "n_fit", "n_calibration",
                                    "p_value_rule", "alpha", "smallest_alpha", "false_alarm_rate_95th",
                                    "approved_by")))
            return 0
        if args.verb == "approve" and (args.names or args.all_from_build):
            from conformance.cli.approvals import approve_many

            return approve_many(args, parser)
        if args.verb == "approve":
            if not (args.model_version and args.input_class):
                parser.error("approve needs --model-version V and --input-class C, registered model NAMEs, or "
                             "--all-from-build BUILD_ID")
            reg = api.approve(args.model_version, args.input_class, by=args.by, version=args.version,
                              ledger=args.ledger, require_distinct_approver=args.require_distinct_approver)
            row = reg.to_dict() | {"approved_by": reg.tags.get("approved_by"),
                                   "approved_at": reg.tags.get("approved_at")}
            if args.format == "json":
                print(json.dumps(row, indent=2))
            else:
                print(f"approved {reg.uri} for ({reg.model_version}, {reg.input_class}) "
                      f"by {row['approved_by']} at {row['approved_at']}")
            return 0
        if args.verb == "score":
            from conformance.cli.traces import score_from_traces

            traced = score_from_traces(args, parser)
            if traced is not None:
                result = traced.result
            elif args.engine == "spark":
                if args.max_output_chars != defaults.MAX_TEXT_CHARS:
                    parser.error(f"--max-output-chars is not supported with --engine spark (its executors use "
                                 f"{defaults.MAX_TEXT_CHARS:,})")
                if args.csv_raw:
                    parser.error("--csv-raw is not supported with --engine spark")
                from conformance import spark

                result = spark.score_file(args.audited_file, out=args.out, summary=args.summary, ledger=args.ledger,
                                          fdr=args.fdr, master=args.spark_master, chunk_size=args.chunk_size)
                if not args.no_mlflow_run:  # spark.score_file does not go through api.score: its run is logged here
                    from conformance.mlflow.runs import experiment_name, file_digest

                    result = wiring.log_scoring_run(result, registry=None, experiment=experiment_name(
                        args.mlflow_experiment), source=args.audited_file, digest=file_digest(args.audited_file),
                        engine="spark", chunk_size=args.chunk_size, fdr=args.fdr, out=args.out, summary=args.summary)
            else:
                if args.spark_master != "local[*]":
                    parser.error("--spark-master needs --engine spark")
                result = api.score(args.audited_file, out=args.out, summary=args.summary,
                                   progress=False if args.no_progress else None, ledger=args.ledger,
                                   fdr=args.fdr, cache=not args.no_cache, keep_verdicts=False,
                                   chunk_size=args.chunk_size, max_output_chars=args.max_output_chars,
                                   raw_csv=args.csv_raw, mlflow_run=False if args.no_mlflow_run else None,
                                   mlflow_experiment=args.mlflow_experiment)
            summaries = [s.to_dict() for s in result.summaries]
            recorded = result.ledger.to_dict() if result.ledger is not None else None
            assessed = traced.assessments.to_dict() if traced is not None else None
            if args.format == "json":
                print(json.dumps({"counts": result.counts, "groups": summaries, "verdicts_file": args.out,
                                  "ledger": recorded,
                                  "mlflow_run": result.mlflow_run.to_dict() if result.mlflow_run else None,
                                  "mlflow_run_error": result.mlflow_run_error}
                                 | ({"assessments": assessed} if assessed else {}), indent=2))
            else:
                print(_table(summaries, ("model_version", "input_class", "n", "within_bounds", "out_of_bounds",
                                         "no_baseline", "invalid", "p_value", "verdict")))
                counts = ", ".join(f"{v} {k}" for k, v in result.counts.items())
                print(f"\n{result.n} verdicts ({counts}) written to {args.out}")
                fdr = result.summaries[0].fdr if result.summaries else None
                if fdr is not None:
                    cut = "nothing" if fdr["threshold"] is None else f"p_value <= {fdr['threshold']:.4g}"
                    print(f"Benjamini-Hochberg at FDR {fdr['q']:g} over the {fdr['n_tested']} records with a "
                          f"p-value: {fdr['n_flagged']} flagged ({cut}); see the bh_flag column")
                if result.ledger is not None:
                    r = result.ledger
                    print(f"ledger {r.ledger}: {r.added} new entries, {r.already_recorded} already recorded; "
                          f"run {r.run_id}; head #{r.head.seq} {r.head.entry_hash}")
                if assessed is not None:
                    print(f"assessments on traces: {assessed['logged']} logged, {assessed['already_there']} "
                          "already there")
                if result.mlflow_run is not None:
                    m = result.mlflow_run
                    print(f"MLflow run {m.run_id} in experiment {m.experiment!r} ({m.tracking_uri})", file=sys.stderr)
            return 0 if result.all_within_bounds else 1
        if args.verb in LEDGER_VERBS:
            return run_ledger_verb(args)
        if args.verb in ("revoke", "baselines"):
            from conformance.cli.approvals import run as run_approval_verb

            return run_approval_verb(args)
        if args.verb == "report":
            from conformance.cli.report import run as run_report

            return run_report(args)
        if args.verb == "review":
            from conformance.cli.review import run as run_review

            return run_review(args)
    except ConformanceError as exc:
        print(f"conformance {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # parameter ranges, e.g. alpha
        print(f"conformance {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"conformance {args.verb}: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, or the environment failing in a way no check foresaw: no traceback by default
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"conformance {args.verb}: unexpected error: {type(exc).__name__}: {first}\n"
              f"Nothing is half-written (files are replaced whole, the ledger commits per chunk). Run "
              f"`conformance --debug {args.verb} ...` for the traceback, and report it if it looks like a bug.",
              file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
