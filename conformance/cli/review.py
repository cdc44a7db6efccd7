"""``conformance review``: the local review page, where reviewers read verdicts and sign off."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

DESCRIPTION = (
    "Serve a review page over the ledger and the registry, in your browser: the scoring runs and\n"
    "groups, the verdicts with filters (verdict, model version, input class, run, time, reviewed or\n"
    "not), each verdict with its input, its output, the nearest approved outputs and the reason, and\n"
    "a form to sign off (confirmed out of bounds, false alarm, escalated). A sign-off is added to\n"
    "the ledger as its own entry, linked to the verdict; it never changes the verdict.\n\n"
    "It listens on 127.0.0.1 (this machine only). On any other address it needs a token, which\n"
    "every request must carry: the address it prints includes it once.\n\n"
    "examples:\n"
    "  conformance review                          then open http://localhost:8765/\n"
    "  CONFORMANCE_REVIEW_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(24))') \\\n"
    "    conformance review --host 0.0.0.0         reachable from other machines, with the token"
)


def add_parser(verbs: Any, formatter: Callable[[str], argparse.HelpFormatter], epilog: str) -> None:
    from conformance.cli.ledger import LEDGER_HELP

    review = verbs.add_parser("review", formatter_class=formatter, help="a local web page to review and sign off",
                              description=DESCRIPTION, epilog=epilog)
    review.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    review.add_argument("--port", type=int, default=8765, help="port to listen on (default %(default)s)")
    review.add_argument("--token", help="a secret every request must carry (at least 16 characters; needed on any "
                                        "address but 127.0.0.1); default: $CONFORMANCE_REVIEW_TOKEN")
    review.add_argument("--ledger", metavar="URL", help="the ledger to review: " + LEDGER_HELP)


def run(args: argparse.Namespace) -> int:
    import os

    from conformance import review

    token = args.token or os.environ.get(review.TOKEN_ENV) or None
    if not 0 < args.port < 65536:
        raise review.ConformanceError(f"--port must be between 1 and 65535, got {args.port}")
    review.serve(host=args.host, port=args.port, ledger=args.ledger, token=token)
    return 0
