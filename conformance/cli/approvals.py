"""Command-line verbs of approvals: ``approve`` of several versions, ``revoke``, ``baselines list | show | history``."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any

from conformance.cli.table import table

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _safe(value: Any) -> str:
    """Stored text is data: control characters are shown escaped, never sent raw to a terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], "-" if value is None else str(value))


def add_parsers(verbs: Any, formatter: Callable[[str], argparse.HelpFormatter], epilog: str, ledger_help: str) -> None:
    revoke = verbs.add_parser(
        "revoke", formatter_class=formatter, help="revoke the approval of a baseline (a person's step)",
        description=(
            "Revoke the approved version of registered model NAME: the revocation (who, when, why,\n"
            "which version and its content digest) is appended to the ledger and kept in the registry's\n"
            "history tags, then the alias 'approved' and the version's approved_by/approved_at tags are\n"
            "removed. Scoring then gives no_baseline for that cell, with a reason naming the revocation,\n"
            "until a person approves a version again. Running it again after an interruption finishes it.\n\n"
            "example:\n"
            "  conformance revoke conformance.support-bot-3.2.refund_request --by 'J. Doe' \\\n"
            "      --reason 'calibration data included a retracted policy'"
        ),
        epilog=epilog,
    )
    revoke.add_argument("name", metavar="NAME", help="the registered model (conformance baselines list)")
    revoke.add_argument("--by", required=True, metavar="PERSON", help="who revokes")
    revoke.add_argument("--reason", required=True, metavar="TEXT", help="why, in your words (quote it)")
    revoke.add_argument("--ledger", metavar="URL", help="where the revocation is recorded: " + ledger_help)
    revoke.add_argument("--format", choices=("table", "json"), default="table")

    baselines = verbs.add_parser(
        "baselines", formatter_class=formatter, help="list registered baselines, show one, or its approval history",
        description=(
            "What the registry holds:\n"
            "  conformance baselines list                       every registered cell, its approved version\n"
            "  conformance baselines show NAME [--version N]    one version: tags, lineage, digest, approval state\n"
            "  conformance baselines history NAME               every approval and revocation, in order, and\n"
            "                                                   whether the ledger holds the matching entry"
        ),
        epilog=epilog,
    )
    sub = baselines.add_subparsers(dest="baselines_verb", metavar="list|show|history", required=True)
    listing = sub.add_parser("list", formatter_class=formatter, help="every registered cell",
                             description="Every registered cell: its registry name, (model_version, input_class), "
                                         "the approved version with who approved it and when, and the newest version.")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    show = sub.add_parser("show", formatter_class=formatter, help="one version, its lineage and approval state",
                          description="One version of registered model NAME (default: the approved one, else the "
                                      "newest): its tags, lineage (who built it, in which build, from what), content "
                                      "digest and approval state in plain words.")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--version", type=int, metavar="N")
    show.add_argument("--format", choices=("table", "json"), default="table")
    history = sub.add_parser("history", formatter_class=formatter, help="every approval and revocation, in order",
                             description="Every approval and revocation of registered model NAME, in order, from the "
                                         "registry's history tags, each with whether the ledger holds the matching "
                                         "entry (yes, NO, or - when no ledger exists).")
    history.add_argument("name", metavar="NAME")
    history.add_argument("--ledger", metavar="URL", help="the ledger to compare with: " + ledger_help)
    history.add_argument("--format", choices=("table", "json"), default="table")


def approve_many(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from conformance import api

    if bool(args.model_version) != bool(args.input_class):
        parser.error("--model-version and --input-class go together")
    if args.version is not None and not args.model_version:
        parser.error("--version needs --model-version and --input-class (NAMEs and --all-from-build take the "
                     "newest versions)")
    cells = [(args.model_version, args.input_class, args.version)] if args.model_version else []
    done = api.approve_many(cells, names=args.names, build=args.all_from_build, by=args.by, ledger=args.ledger,
                            require_distinct_approver=args.require_distinct_approver)
    rows = [reg.to_dict() | {"approved_by": reg.tags.get("approved_by"), "approved_at": reg.tags.get("approved_at")}
            for reg in done]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(table(rows, ("name", "version", "model_version", "input_class", "approved_by", "approved_at")))
        print(f"\n{len(rows)} version(s) approved")
    return 0


def run(args: argparse.Namespace) -> int:
    from conformance import api

    if args.verb == "revoke":
        done = api.revoke(args.name, by=args.by, reason=args.reason, ledger=args.ledger)
        if args.format == "json":
            print(json.dumps(done, indent=2))
        else:
            again = "" if done["added"] else " (already recorded; the registry's part is finished)"
            print(f"revoked models:/{_safe(done['name'])}/{done['version']} by {_safe(done['by'])} at {done['at']}: "
                  f"{_safe(done['reason'])}; ledger entry #{done['seq']}{again}. No version of "
                  f"{_safe(done['name'])} is approved now.")
        return 0
    from conformance import approvals
    from conformance.registry import Registry

    registry = Registry()
    if args.baselines_verb == "list":
        rows = approvals.baselines(registry)
        if args.format == "json":
            print(json.dumps(rows, indent=2))
        else:
            print(table(rows, ("name", "model_version", "input_class", "approved_version", "approved_by",
                               "approved_at", "newest_version")))
        return 0
    if args.baselines_verb == "show":
        shown = approvals.show(registry, args.name, args.version)
        if args.format == "json":
            print(json.dumps(shown, indent=2))
            return 0
        print(f"{_safe(shown['uri'])}  ({_safe(shown['model_version'])}, {_safe(shown['input_class'])})")
        print(f"  {_safe(shown['state'])}")
        print(f"  digest: {_safe(shown['digest'])}\n  build run: {_safe(shown['run_id'])}")
        for key, value in shown["lineage"].items():
            print(f"  {key}: {_safe(value)}")
        for e in shown["approvals"]:
            more = f": {_safe(e['reason'])}" if e["action"] == "revocation" else ""
            print(f"  #{e['n']} {e['action']} by {_safe(e['by'])} at {_safe(e['at'])}{more}")
        print("  tags:")
        for key, value in shown["tags"].items():
            print(f"    {_safe(key)} = {_safe(value)}")
        return 0
    from conformance.ledger import Ledger, LedgerNotFoundError

    try:
        book: Ledger | None = Ledger(args.ledger, create=False)
    except LedgerNotFoundError:
        book = None
    try:
        rows = approvals.registry_history(registry, book, args.name)
    finally:
        if book is not None:
            book.close()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        r["in_ledger"] = "-" if r["in_ledger"] is None else ("yes" if r["in_ledger"] else "NO")
    print(table(rows, ("n", "action", "version", "by", "at", "replaced", "reason", "ledger_seq", "in_ledger")))
    return 0
