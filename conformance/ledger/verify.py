"""Walking the chain: is every entry as it was written, in its place, with none missing?

``verify`` recomputes each entry's hash from its stored content, checks that
the content names the previous entry's hash and its own position, and that the
indexed columns agree with the hashed content. It stops at the first problem
and names the entry. Given a head hash exported earlier, it also checks that
this head is still in the chain, which detects a rewrite of the whole chain.
An export (Parquet) can be checked the same way, offline.

A reviewer's sign-off is checked like every entry, and also on its own terms
(an allowed decision, a usable reviewer's name, a digest matching what it says)
and against the chain: the entry it signs must come earlier, be a verdict of the
same record, and have the hash the sign-off names. A baseline's approval or
revocation is checked on its own terms too (:mod:`conformance.ledger.approval`),
and the earlier approval entry it follows must be one of the same registered model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conformance.ledger import schema
from conformance.ledger.canonical import GENESIS_HASH, entry_hash, idempotency_key
from conformance.ledger.approval import approval_link_problem, approval_problem
from conformance.ledger.entry import APPROVAL, REVOCATION, SIGNOFF, index_of, is_approval, is_signoff, target_of
from conformance.ledger.errors import LedgerError
from conformance.ledger.signing import load_public_key
from conformance.ledger.signoff import signoff_problem
from conformance.ledger.store import Head, Ledger
from conformance.ledger.witness import read_heads

Lookup = Callable[[int], "Mapping[str, Any] | None"]
"""The stored row of an earlier entry by its ``seq`` (``None`` when it is not at hand, as in a filtered export)."""


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of a walk: intact, or the first entry found wrong and why."""

    ok: bool
    count: int
    head: Head
    source: str
    problem: str | None = None
    bad_seq: int | None = None
    #: How many of the ``count`` entries are reviewers' sign-offs.
    signoffs: int = 0
    #: The heads file checked (None: not checked) and how many heads it witnessed.
    witness: str | None = None
    witnessed: int = 0
    #: The id of the public key every witnessed head was checked against (None: signatures not checked).
    signed_by: str | None = None
    #: How many of the ``count`` entries are baselines' approvals and revocations.
    approvals: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "count": self.count, "signoffs": self.signoffs, "head_seq": self.head.seq,
                "head_hash": self.head.entry_hash, "source": self.source, "problem": self.problem,
                "bad_seq": self.bad_seq, "witness": self.witness, "witnessed": self.witnessed,
                "signed_by": self.signed_by, "approvals": self.approvals}


def _check_link(seq: int, content: Mapping[str, Any], lookup: Lookup) -> str | None:
    """What is wrong with the link from a (well-formed) sign-off to the entry it signs, or ``None``."""
    signoff, record_id = content["signoff"], content["verdict"]["record_id"]
    signed = signoff["seq"]
    if signed >= seq:
        return f"entry #{seq} is a sign-off of entry #{signed}, which does not come before it in the chain"
    row = lookup(signed)
    if row is None:  # not in a filtered export; in a whole ledger the walk has already seen every earlier entry
        return None
    if row["verdict"] == SIGNOFF:
        return f"entry #{seq} is a sign-off of entry #{signed}, which is a sign-off, not a verdict"
    if row["record_id"] != record_id:
        return (f"entry #{seq} is a sign-off for record_id {record_id!r} but names entry #{signed}, a verdict of "
                f"record_id {row['record_id']!r}")
    if row["entry_hash"] != signoff["entry_hash"]:
        return (f"entry #{seq} is a sign-off of entry #{signed} with hash {str(signoff['entry_hash'])[:16]}..., but "
                f"entry #{signed} hashes to {str(row['entry_hash'])[:16]}...: it does not sign the verdict recorded "
                "there")
    return None


def _check_entry(row: Mapping[str, Any]) -> str | None:
    """What is wrong with one entry on its own, or ``None``."""
    seq = row["seq"]
    text = row["content"]
    if entry_hash(text) != row["entry_hash"]:
        return f"entry #{seq} was altered: its content no longer matches its hash {row['entry_hash'][:16]}..."
    try:
        content = json.loads(text)
        expected = index_of(content)
        key = idempotency_key(content["verdict"].get("record_id"), content["record_digest"],
                              target_of(content["verdict"], content.get("key_format")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"entry #{seq} is not a well-formed ledger entry ({type(exc).__name__}: {exc})"
    if content.get("seq") != seq:
        return f"entry #{seq} holds the content of entry #{content.get('seq')}: entries were reordered or renumbered"
    for column in schema.INDEX_COLUMNS:
        if row[column] != expected[column]:
            return (f"entry #{seq} was altered: its column {column} holds {row[column]!r} "
                    f"but its hashed content says {expected[column]!r}")
    if row["idem_key"] != key:
        return f"entry #{seq} was altered: its idem_key column does not match its content"
    if is_signoff(content):
        problem = signoff_problem(content)
        if problem is not None:
            return f"entry #{seq} {problem}"
    if is_approval(content):
        problem = approval_problem(content)
        if problem is not None:
            return f"entry #{seq} {problem}"
    return None


def verify_rows(rows: Iterable[Mapping[str, Any]], *, source: str, lookup: Lookup, expect_head: str | None = None,
                contiguous: bool = True) -> VerifyReport:
    """Verify stored rows given in ``seq`` order.

    With ``contiguous`` (a whole ledger) a gap, a repeat or a broken link is a
    problem; without it (a filtered export) each entry is checked on its own
    and links are checked between consecutive positions only. ``lookup`` gives
    the earlier entry a sign-off names.
    """
    prev_seq, prev_hash = 0, GENESIS_HASH
    count = signoffs = approvals = 0
    found_head = expect_head is None

    def fail(problem: str, bad: int) -> VerifyReport:
        return VerifyReport(False, count, Head(prev_seq, prev_hash), source, problem, bad, signoffs,
                            approvals=approvals)

    for row in rows:
        seq = int(row["seq"])
        if contiguous and seq != prev_seq + 1:
            if seq > prev_seq + 1:
                return fail(f"entry #{prev_seq + 1} is missing (removed): after entry #{prev_seq} comes #{seq}",
                            prev_seq + 1)
            return fail(f"entry #{seq} appears again after entry #{prev_seq}: inserted or reordered", seq)
        problem = _check_entry(row)
        if problem is not None:
            return fail(problem, seq)
        if seq == prev_seq + 1 and row["prev_hash"] != prev_hash:
            first = "the chain's start" if prev_seq == 0 else f"entry #{prev_seq}"
            return fail(f"entry #{seq} does not follow {first}: it names {row['prev_hash'][:16]}... as its "
                        f"predecessor, but {first} hashes to {prev_hash[:16]}...; {first} was altered, "
                        "replaced or inserted, or entries were removed or reordered", max(prev_seq, 1))
        if row["verdict"] == SIGNOFF:
            problem = _check_link(seq, json.loads(row["content"]), lookup)
            if problem is not None:
                return fail(problem, seq)
            signoffs += 1
        elif row["verdict"] in (APPROVAL, REVOCATION):
            problem = approval_link_problem(seq, json.loads(row["content"]), lookup)
            if problem is not None:
                return fail(problem, seq)
            approvals += 1
        if row["entry_hash"] == expect_head:
            found_head = True
        prev_seq, prev_hash = seq, str(row["entry_hash"])
        count += 1
    if not found_head:
        return fail(f"the expected head {expect_head} is not in the chain: the ledger was rewritten or "
                    "truncated after that head was exported", prev_seq)
    return VerifyReport(True, count, Head(prev_seq, prev_hash), source, signoffs=signoffs, approvals=approvals)


def verify(ledger: Ledger, *, expect_head: str | None = None, witness: bool = True,
           public_key: str | Path | None = None) -> VerifyReport:
    """Walk a whole ledger from its first entry to its head; then, with ``witness``, check it against every head its
    heads file witnessed (:mod:`conformance.ledger.witness`): a removed tail or a rewritten chain is named.

    With ``public_key`` (the ``.pub`` file of ``conformance ledger keygen``), every witnessed head must also carry a
    valid signature by that key (:mod:`conformance.ledger.signing`): a head line written or edited without the
    key is named, before the chain is compared with the heads.
    """
    key = load_public_key(public_key) if public_key is not None else None
    if key is not None and not witness:
        raise LedgerError("checking the heads' signatures needs the witness; do not turn it off with a public key")
    if not witness:
        return verify_rows(ledger.rows(), source=ledger.display_url, lookup=ledger.row, expect_head=expect_head)
    heads, problems = read_heads(ledger.witness_path)
    wanted = {h.seq for h in heads}
    seen: dict[int, str] = {}

    def watched(rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for row in rows:
            if int(row["seq"]) in wanted:
                seen[int(row["seq"])] = str(row["entry_hash"])
            yield row

    report = verify_rows(watched(ledger.rows()), source=ledger.display_url, lookup=ledger.row,
                         expect_head=expect_head)
    report = replace(report, witness=str(ledger.witness_path), witnessed=len(heads))
    if not report.ok:
        return report
    if problems:
        return replace(report, ok=False, problem=problems[0])
    if key is not None:
        for head in heads:
            wrong = key.problem(head.seq, head.entry_hash, head.at, head.sig, head.key)
            if wrong is not None:
                return replace(report, ok=False, bad_seq=head.seq,
                               problem=f"the witness {ledger.witness_path} (line {head.line}): {wrong}")
        report = replace(report, signed_by=key.key_id)
    for head in sorted(heads, key=lambda h: h.seq):
        found = seen.get(head.seq)
        if found is None:
            return replace(report, ok=False, bad_seq=head.seq, problem=(
                f"the witness {ledger.witness_path} (line {head.line}) saw entry #{head.seq} with hash "
                f"{head.entry_hash[:16]}... at {head.at}, but the ledger ends at entry #{report.head.seq}: "
                "entries were removed from its end"))
        if found != head.entry_hash:
            return replace(report, ok=False, bad_seq=head.seq, problem=(
                f"the witness {ledger.witness_path} (line {head.line}) saw entry #{head.seq} with hash "
                f"{head.entry_hash[:16]}... at {head.at}, but the ledger's entry #{head.seq} hashes to "
                f"{found[:16]}...: the chain was rewritten"))
    return report


def verify_export(path: str | Path, *, expect_head: str | None = None) -> VerifyReport:
    """Check an export offline: every entry's hash, its columns, and links between consecutive entries."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise LedgerError(f"{path}: cannot be read as a ledger export (Parquet): {exc}") from exc
    missing = [c.name for c in schema.entries.columns if c.name not in table.column_names]
    if missing:
        raise LedgerError(f"{path}: not a ledger export; columns {', '.join(missing)} are absent")
    rows = sorted(table.select([c.name for c in schema.entries.columns]).to_pylist(), key=lambda r: r["seq"])
    by_seq = {r["seq"]: r for r in rows}
    return verify_rows(rows, source=str(path), lookup=by_seq.get, expect_head=expect_head, contiguous=False)
