"""Command-line verbs of the ledger: ``ledger verify|head|init|keygen``, ``reconstruct``, ``verdicts``, ``signoff``.

Added to the ``conformance`` parser by :func:`add_parsers`; run by :func:`run`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from conformance.verdict import VERDICTS, csv_cell, csv_writer

LEDGER_VERBS = ("ledger", "reconstruct", "verdicts", "signoff")
# The decisions a reviewer can record (conformance.ledger.signoff.DECISIONS; not imported here, so that
# --help loads no database library).
DECISIONS = ("confirmed", "false_alarm", "escalated")
LEDGER_HELP = (
    "SQLAlchemy URL of the verdict ledger, e.g. postgresql://USER@HOST:5432/DB (default: "
    "$CONFORMANCE_LEDGER_URL, else sqlite:///./conformance_store/ledger.db beside the embedded MLflow "
    "store; that local file is the default even when MLFLOW_TRACKING_URI points at a server)"
)
LEDGER_EPILOG = """\
ledger:
  --ledger URL, else CONFORMANCE_LEDGER_URL, else ./conformance_store/ledger.db (SQLite).
  PostgreSQL: postgresql://USER@HOST:PORT/DATABASE (add ?options=-csearch_path%3DSCHEMA for a schema).
"""
VERIFY_CODES = """\
exit codes:
  0  the chain is intact (and holds the expected head, when given)
  1  an entry was altered, removed, inserted or reordered; the first one is named
  2  the command could not run (unreachable ledger, no ledger, other schema version)
"""
RECONSTRUCT_CODES = """\
exit codes:
  0  the re-derived verdict, score and p-value are identical (or it is a no_baseline verdict)
  1  they differ, or the verdict can no longer be reproduced; the output explains why
  2  the command could not run (no such record, unreachable ledger or registry)
"""
PLAIN_CODES = """\
exit codes:
  0  done
  2  the command could not run (unreachable ledger, no ledger, bad filter); nothing was written
"""
KEYGEN_CODES = """\
exit codes:
  0  both files written
  2  nothing written: FILE or FILE.pub exists, or the folder does not exist or is not writable
"""
INIT_CODES = """\
exit codes:
  0  the owner owns the ledger and the writer may only read and append (also when it already was so)
  2  nothing of the failed step was kept: a SQLite URL, role names that are not plain lower-case names or
     are the same, a writer that is a superuser, an unreachable server, or a refusal by it (run as a superuser)
"""
SIGNOFF_CODES = """\
exit codes:
  0  the sign-off is recorded (or an identical one already was; it is not recorded twice)
  2  nothing was recorded: no such record, --seq is not a verdict entry of it, the name is
     empty or holds control characters, or the ledger cannot be reached or does not exist
"""
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _safe(value: Any) -> Any:
    """Stored text is data: control characters (terminal escapes) are shown escaped, never sent raw."""
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: repr(m.group())[1:-1], value.replace("\n", " "))
    return value


def add_parsers(verbs: Any, formatter: Callable[[str], argparse.HelpFormatter], store_epilog: str) -> None:
    """Add the ledger's verbs to the ``conformance`` sub-parsers."""
    ledger = verbs.add_parser("ledger", formatter_class=formatter,
                              help="verify the verdict ledger, export its head, set up its roles and keys",
                              description="The verdict ledger: append-only and hash-chained.")
    sub = ledger.add_subparsers(dest="ledger_verb", metavar="ACTION", required=True)
    verify = sub.add_parser(
        "verify", formatter_class=formatter, help="walk the hash chain and report the first broken entry",
        description=(
            "Recompute every entry's hash from its stored content and check that each names its\n"
            "predecessor. Prints the count and the head hash when intact; names the first entry that\n"
            "was altered, removed, inserted or reordered otherwise.\n\n"
            "examples:\n  conformance ledger verify\n  conformance ledger verify --expect-head 3f2a...\n"
            "  conformance ledger verify --file export.parquet   (an export, offline)"
        ),
        epilog=LEDGER_EPILOG + "\n" + VERIFY_CODES)
    verify.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    verify.add_argument("--expect-head", metavar="HASH",
                        help="a head hash exported earlier: it must still be in the chain (detects a full rewrite)")
    verify.add_argument("--file", metavar="EXPORT", help="verify a Parquet export from `conformance verdicts --export`")
    verify.add_argument("--public-key", metavar="FILE.pub",
                        help="also check that every witnessed head is signed by this key (`ledger keygen`'s .pub); "
                             "a head line written or edited without the private key is named")
    verify.add_argument("--format", choices=("table", "json"), default="table")
    head = sub.add_parser(
        "head", formatter_class=formatter, help="print the head hash, to keep elsewhere",
        description=("Print the position and hash of the last entry. Keep it outside the ledger (a ticket,\n"
                     "a signed log, MLflow with --log-mlflow): `ledger verify --expect-head HASH` then detects\n"
                     "even a rewrite of the whole chain."),
        epilog=LEDGER_EPILOG + "\n" + store_epilog + "\n" + PLAIN_CODES)
    head.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    head.add_argument("--log-mlflow", action="store_true",
                      help="also record the head as a run in the MLflow experiment 'conformance-ledger'")
    head.add_argument("--format", choices=("table", "json"), default="table")

    keygen = sub.add_parser(
        "keygen", formatter_class=formatter, help="make an Ed25519 key pair for signing the witnessed heads",
        description=(
            "Write a new Ed25519 private key to FILE (PEM, readable by you only) and its public key to\n"
            "FILE.pub. With CONFORMANCE_LEDGER_SIGNING_KEY=FILE set where verdicts are recorded, every head\n"
            "written to the witness carries a signature; `ledger verify --public-key FILE.pub` checks each one.\n"
            "Keep the private key off the ledger's database server; an existing file is never overwritten.\n\n"
            "example:\n  conformance ledger keygen --out /etc/conformance/heads.key\n"
            "  export CONFORMANCE_LEDGER_SIGNING_KEY=/etc/conformance/heads.key\n"
            "  conformance ledger verify --public-key /etc/conformance/heads.key.pub"
        ),
        epilog=KEYGEN_CODES)
    keygen.add_argument("--out", required=True, metavar="FILE",
                        help="the private key's file; the public key goes to FILE.pub")
    keygen.add_argument("--format", choices=("table", "json"), default="table")

    init = sub.add_parser(
        "init", formatter_class=formatter,
        help="PostgreSQL: create the ledger owned by one role, appended to by another",
        description=(
            "Create the ledger's tables on PostgreSQL as the OWNER role, and give the WRITER role only\n"
            "SELECT and INSERT on them. Scoring machines connect as the writer: it owns nothing, so it\n"
            "cannot UPDATE, DELETE or TRUNCATE entries, alter or drop the append-only triggers, or set\n"
            "session_replication_role. Roles that do not exist are created (the owner without login, the\n"
            "writer with login and no password: add one with ALTER ROLE ... PASSWORD). Run it once, as a\n"
            "superuser; running it again is harmless. A ledger created earlier is handed to the owner.\n"
            "The owner and any superuser can still change rows: keep them out of routine use (docs/ledger.md).\n\n"
            "example:\n  conformance ledger init --ledger postgresql://postgres@db:5432/conformance \\\n"
            "      --owner-role conformance_owner --writer-role conformance_writer\n"
            "  then, on each scoring machine:\n"
            "  export CONFORMANCE_LEDGER_URL=postgresql://conformance_writer@db:5432/conformance"
        ),
        epilog=LEDGER_EPILOG + "\n" + INIT_CODES)
    init.add_argument("--ledger", metavar="URL",
                      help="the ledger's PostgreSQL URL, connecting as a superuser (default: $CONFORMANCE_LEDGER_URL)")
    init.add_argument("--owner-role", required=True, metavar="NAME", help="the role that owns the tables")
    init.add_argument("--writer-role", required=True, metavar="NAME",
                      help="the role scoring connects as: may only read and append")
    init.add_argument("--format", choices=("table", "json"), default="table")

    rec = verbs.add_parser(
        "reconstruct", formatter_class=formatter, help="re-derive a recorded verdict and compare",
        description=(
            "Load the ledger entry of RECORD_ID (its latest, or --seq N), fetch the exact baseline version\n"
            "it names from the MLflow registry, embed the stored output (from the embedding cache unless\n"
            "--no-cache), re-score it, and compare the evidence: verdict, p-value, score, baseline version\n"
            "and digest, embedder. A reason worded differently is reported apart; any difference is explained.\n\n"
            "example:\n  conformance reconstruct audit-0042"
        ),
        epilog=LEDGER_EPILOG + "\n" + store_epilog + "\n" + RECONSTRUCT_CODES)
    rec.add_argument("record_id", metavar="RECORD_ID")
    rec.add_argument("--seq", type=int, metavar="N", help="which entry of the record (default: its latest)")
    rec.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    rec.add_argument("--no-cache", action="store_true",
                     help="re-embed the stored output from its text rather than take its embedding from the "
                          "embedding cache (./conformance_store/embeddings.db): a check that the embedder on this "
                          "machine still gives the same bits, not only that the scoring does")
    rec.add_argument("--format", choices=("table", "json"), default="table")

    ver = verbs.add_parser(
        "verdicts", formatter_class=formatter, help="list or export recorded verdicts",
        description=(
            "List the ledger's verdicts, filtered, oldest first; or export them with their hashes\n"
            "to Parquet, which `conformance ledger verify --file` checks offline. Reviewers' sign-offs\n"
            "(`conformance signoff`) are shown with the verdict they sign, never as verdicts.\n\n"
            "examples:\n  conformance verdicts --verdict out_of_bounds --since 2026-06-01\n"
            "  conformance verdicts --verdict out_of_bounds --reviewed no   (not yet signed off)\n"
            "  conformance verdicts --record-id aud-0043 --format json   (with every sign-off)\n"
            "  conformance verdicts --model-version support-bot-3.2 --export june.parquet"
        ),
        epilog=LEDGER_EPILOG + "\n" + PLAIN_CODES)
    ver.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    ver.add_argument("--model-version", metavar="V")
    ver.add_argument("--input-class", metavar="C")
    ver.add_argument("--verdict", choices=VERDICTS)
    ver.add_argument("--baseline-version", type=int, metavar="N", help="registry version of the baseline")
    ver.add_argument("--since", metavar="TIME", help="scored at or after (ISO 8601; UTC when no offset)")
    ver.add_argument("--until", metavar="TIME", help="scored at or before (ISO 8601; UTC when no offset)")
    ver.add_argument("--record-id", metavar="ID")
    ver.add_argument("--run-id", metavar="ID", help="one scoring run")
    ver.add_argument("--limit", type=int, metavar="N")
    ver.add_argument("--reviewed", choices=("yes", "no"),
                     help="yes: only verdicts a reviewer has signed off; no: only those no one has")
    ver.add_argument("--format", choices=("table", "json", "csv"), default="table",
                     help="table and csv show the latest sign-off's decision; json lists every sign-off")
    ver.add_argument("--csv-raw", action="store_true",
                     help="with --format csv: keep texts a spreadsheet would run as a formula (=, +, -, @ first) as "
                          "they are; by default they are prefixed with '")
    ver.add_argument("--export", metavar="FILE.parquet",
                     help="write the entries with hashes and content to Parquet, with the sign-offs of them")

    sign = verbs.add_parser(
        "signoff", formatter_class=formatter, help="record a reviewer's decision about a verdict",
        description=(
            "Record your decision about a recorded verdict. The decision is added to the ledger as an\n"
            "entry of its own, chained to the verdict it signs (by its position and hash); the verdict\n"
            "itself never changes. RECORD_ID's newest verdict is signed, or the entry --seq N when the\n"
            "record was judged more than once (see `conformance verdicts --record-id RECORD_ID`).\n\n"
            "decisions:\n"
            "  confirmed    you reviewed the output and the verdict stands (out of bounds, confirmed)\n"
            "  false_alarm  the verdict flagged the output, but on review it is acceptable\n"
            "  escalated    it needs someone else's decision; you have passed it on\n\n"
            "Several sign-offs of one verdict are all kept, in order; the same sign-off given twice\n"
            "(same verdict, decision, name and comment) is recorded once.\n\n"
            "examples:\n"
            "  conformance signoff aud-0043 --decision confirmed --by 'J. Doe' --comment 'promises a refund'\n"
            "  conformance signoff aud-0043 --decision false_alarm --by 'J. Doe' --seq 12\n"
            "  conformance verdicts --record-id aud-0043 --format json   (the verdict with its sign-offs)\n"
            "  conformance verdicts --verdict out_of_bounds --reviewed no   (what is left to review)"
        ),
        epilog=LEDGER_EPILOG + "\n" + SIGNOFF_CODES)
    sign.add_argument("record_id", metavar="RECORD_ID", help="the record whose verdict you sign off")
    sign.add_argument("--decision", required=True, choices=DECISIONS, help="what you decided (see above)")
    sign.add_argument("--by", required=True, metavar="NAME", help="who decides: your name, as it should be recorded")
    sign.add_argument("--comment", metavar="TEXT", help="why, in your words (quote it); kept with the sign-off")
    sign.add_argument("--seq", type=int, metavar="N",
                      help="the verdict entry to sign (default: the record's newest verdict)")
    sign.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    sign.add_argument("--format", choices=("table", "json"), default="table")


def _print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    from conformance.cli.table import table as _table

    print(_table([{c: _safe(r.get(c)) for c in columns} for r in rows], columns))


def run(args: argparse.Namespace) -> int:
    """Run a ledger verb; :class:`~conformance.errors.ConformanceError` propagates (exit 2)."""
    from conformance.ledger import Ledger, LedgerError, verify, verify_export
    from conformance.reconstruct import reconstruct

    if args.verb == "ledger" and args.ledger_verb == "verify":
        if args.file:
            if args.public_key:
                raise LedgerError("--public-key checks the witnessed heads of a ledger; an export (--file) has none")
            report = verify_export(args.file, expect_head=args.expect_head)
        else:
            with Ledger(args.ledger, create=False) as ledger:
                report = verify(ledger, expect_head=args.expect_head, public_key=args.public_key)
        if args.format == "json":
            print(json.dumps(report.to_dict(), indent=2))
        elif report.ok:
            kinds = [f"{n} of them {what}" for n, what in ((report.signoffs, "sign-offs"),
                                                            (report.approvals, "approvals or revocations")) if n]
            signoffs = f" ({', '.join(kinds)})" if kinds else ""
            print(f"intact: {report.count} entries{signoffs} in {report.source}; "
                  f"head #{report.head.seq} {report.head.entry_hash}")
            if report.witness is not None:
                where = _safe(report.witness)
                signed = f", each signed by key {report.signed_by}" if report.signed_by else ""
                print(f"agrees with the {report.witnessed} heads witnessed in {where}{signed}" if report.witnessed
                      else f"no head witnessed yet in {where}")
        elif str(report.problem).startswith("the witness"):
            print(f"NOT intact: {_safe(report.problem)}\n(the chain of {report.count} entries is consistent in "
                  f"itself, but not with what was witnessed; {report.source})")
        else:
            print(f"NOT intact: {_safe(report.problem)}\n({report.count} entries before it are intact; "
                  f"{report.source})")
        return 0 if report.ok else 1
    if args.verb == "ledger" and args.ledger_verb == "head":
        with Ledger(args.ledger, create=False) as ledger:
            head, url = ledger.head(), ledger.display_url
        row: dict[str, Any] = head.to_dict() | {"ledger": url}
        if args.log_mlflow:
            row["mlflow_run_id"] = log_head_to_mlflow(head.seq, head.entry_hash, url)
        if args.format == "json":
            print(json.dumps(row, indent=2))
        else:
            print(f"head #{head.seq} {head.entry_hash}  ({url})"
                  + (f"\nlogged to MLflow run {row['mlflow_run_id']}" if args.log_mlflow else ""))
        return 0
    if args.verb == "ledger" and args.ledger_verb == "keygen":
        from conformance.ledger.signing import SIGNING_KEY_ENV, keygen

        signer, public = keygen(args.out)
        pair = {"private_key": signer.path, "public_key": str(public), "key_id": signer.key_id}
        if args.format == "json":
            print(json.dumps(pair, indent=2))
        else:
            print(f"private key {signer.path} (mode 0600), public key {public}, key id {signer.key_id}\n"
                  f"Sign heads: {SIGNING_KEY_ENV}={signer.path}; check them: conformance ledger verify "
                  f"--public-key {public}")
        return 0
    if args.verb == "ledger" and args.ledger_verb == "init":
        from conformance.ledger.roles import init_roles

        roles = init_roles(args.ledger, owner=args.owner_role, writer=args.writer_role)
        if args.format == "json":
            print(json.dumps(roles.to_dict(), indent=2))
        else:
            made = f" (created the roles {', '.join(roles.created)})" if roles.created else ""
            print(f"ledger {roles.ledger}, schema {roles.schema}: owned by {roles.owner}; {roles.writer} may only "
                  f"read and append{made}.\nScore as the writer: CONFORMANCE_LEDGER_URL={roles.writer_url}")
        return 0
    if args.verb == "reconstruct":
        with Ledger(args.ledger, create=False) as ledger:
            result = reconstruct(ledger, args.record_id, seq=args.seq, cache=not args.no_cache)
        if args.format == "json":
            print(json.dumps(result.to_dict(), indent=2))
        else:
            _print_reconstruction(result)
        return 0 if result.status in ("identical", "same_evidence", "nothing_to_rescore") else 1
    if args.verb == "verdicts":
        return _verdicts(args)
    if args.verb == "signoff":
        from conformance.api import signoff

        done = signoff(args.record_id, decision=args.decision, by=args.by, comment=args.comment, seq=args.seq,
                       ledger=args.ledger)
        if args.format == "json":
            print(json.dumps(done, indent=2))
        elif done["added"]:
            print(f"record {_safe(done['record_id'])}: verdict entry #{done['signed_seq']} signed off as "
                  f"{done['decision']} by {_safe(done['by'])}, recorded as entry #{done['seq']}; "
                  f"head #{done['head_seq']} {done['head_hash']}")
        else:
            print(f"record {_safe(done['record_id'])}: this sign-off of verdict entry #{done['signed_seq']} "
                  f"({done['decision']} by {_safe(done['by'])}, the same comment) is already recorded as entry "
                  f"#{done['seq']}; nothing added; head #{done['head_seq']} {done['head_hash']}")
        return 0
    return 2


def _verdicts(args: argparse.Namespace) -> int:
    from conformance.ledger import Filters, Ledger, export_parquet

    reviewed = None if args.reviewed is None else args.reviewed == "yes"
    filters = Filters(model_version=args.model_version, input_class=args.input_class, verdict=args.verdict,
                      baseline_version=args.baseline_version, since=args.since, until=args.until,
                      record_id=args.record_id, run_id=args.run_id, limit=args.limit, reviewed=reviewed)
    with Ledger(args.ledger, create=False) as ledger:
        if args.export:
            n = export_parquet(ledger, args.export, filters)
            print(f"{n} entries exported to {args.export} (verify offline: "
                  f"conformance ledger verify --file {args.export})", file=sys.stderr)
            return 0
        rows = [e.to_row() for e in ledger.query(filters)]
        signoffs = ledger.signoffs(r["record_id"] for r in rows if r["record_id"] is not None)
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for s in signoffs:
        by_seq.setdefault(s.signed_seq, []).append({"seq": s.seq, "decision": s.decision, "by": s.by,
                                                     "comment": s.comment, "signed_at": s.signed_at})
    if args.format == "json":
        print(json.dumps([r | {"signoffs": by_seq.get(r["seq"], [])} for r in rows], indent=2))
        return 0
    for r in rows:  # table and csv: the latest decision
        r["signoff"] = by_seq[r["seq"]][-1]["decision"] if r["seq"] in by_seq else None
    if args.format == "csv":
        buffer = io.StringIO()
        writer = csv_writer(buffer, list(rows[0]) if rows else ["seq"])
        writer.writeheader()
        writer.writerows([{k: csv_cell(v, raw=args.csv_raw) for k, v in r.items()} for r in rows])
        print(buffer.getvalue(), end="")
    else:
        _print_table(rows, ("seq", "record_id", "model_version", "input_class", "verdict", "p_value", "baseline",
                            "scored_at", "previous_seq", "signoff"))
        print(f"\n{len(rows)} entries, {sum(r['signoff'] is not None for r in rows)} signed off")
    return 0


def _print_reconstruction(result: Any) -> None:
    print(f"record {_safe(result.record_id)!s}, ledger entry #{result.seq}: {result.status.replace('_', ' ').upper()}")
    rec, new = result.recorded, result.recomputed or {}
    for name in ("verdict", "score", "p_value", "alpha", "baseline", "baseline_digest", "embedder", "code_version"):
        now = new.get(name, "-") if result.recomputed else "-"
        print(f"  {name:16} recorded {_safe(rec.get(name))!s:<40} recomputed {_safe(now)!s}")
    for line in result.differences:
        print(f"  difference: {_safe(line)}")
    for line in result.reworded:
        print(f"  reworded: {_safe(line)}")
    for line in result.explanations:
        print(f"  note: {_safe(line)}")


def log_head_to_mlflow(seq: int, head_hash: str, url: str) -> str:
    """Record a head in the MLflow experiment ``conformance-ledger``; returns the run id."""
    from conformance.registry.mlflow_registry import Registry

    client = Registry().client
    experiment = client.get_experiment_by_name("conformance-ledger")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("conformance-ledger")
    run = client.create_run(experiment_id, run_name=f"ledger head #{seq}",
                            tags={"ledger_url": url, "head_seq": str(seq), "head_hash": head_hash})
    with contextlib.redirect_stdout(sys.stderr):  # MLflow's "View run ..." would break --format json
        client.set_terminated(run.info.run_id)
    return str(run.info.run_id)
