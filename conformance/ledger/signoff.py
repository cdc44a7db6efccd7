"""Reviewer sign-offs: a person's decision about a recorded verdict, kept as a ledger entry of its own.

A sign-off is appended to the same hash chain as the verdicts and names the
verdict entry it signs by position and hash. It never changes that verdict: the
decision is recorded beside it. Its content has the shape of a verdict entry,
so the schema (version 1) is unchanged and everything that walks the chain
reads it the same way:

``verdict``        ``{"verdict": "signoff", "record_id": ...}``: the record whose verdict is signed
``signoff``        ``seq`` and ``entry_hash`` of the signed verdict entry, ``decision``, ``by``,
                   ``comment`` (free text, or null) and ``signed_at`` (UTC, ISO 8601)
``previous_seq``   the signed entry's ``seq`` (so "is this verdict signed off?" is a query)
``record``         ``{}``; ``batch`` is null
``record_digest``  SHA-256 of what the sign-off says, its time left out. The idempotency key is
                   made from it as a verdict's is, with the target ``signoff``: two different
                   sign-offs are both kept, and an identical retry is recorded once.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from conformance.ledger.canonical import canonical_json, idempotency_key, sha256_hex
from conformance.ledger.entry import SIGNOFF, Entry, Prepared
from conformance.ledger.errors import LedgerError, SignOffError

CONFIRMED = "confirmed"
FALSE_ALARM = "false_alarm"
ESCALATED = "escalated"
DECISIONS = (CONFIRMED, FALSE_ALARM, ESCALATED)
FIELDS = ("seq", "entry_hash", "decision", "by", "comment", "signed_at")
"""The keys of a sign-off entry's ``signoff`` object."""
_LINE_BREAKS = frozenset("\u2028\u2029")


def reviewer_problem(by: object) -> str | None:
    """What is wrong with a reviewer's name, as the end of a sentence, or ``None``.

    A name is shown wherever the sign-off is, so it must be text, not blank, and on one
    line without control characters (a terminal escape in a name could disguise it).
    """
    if not isinstance(by, str):
        return f"is not text but {type(by).__name__}"
    if not by.strip():
        return "is empty"
    bad = sorted({c for c in by if unicodedata.category(c) == "Cc" or c in _LINE_BREAKS})
    if bad:
        return "holds control characters (" + ", ".join(repr(c)[1:-1] for c in bad) + ")"
    return None


@dataclass(frozen=True)
class SignOffRequest:
    """A sign-off as asked for, checked: built by :meth:`checked`, which raises :class:`SignOffError`."""

    record_id: str
    decision: str
    by: str
    comment: str | None
    seq: int | None

    @classmethod
    def checked(cls, record_id: str, *, decision: str, by: str, comment: str | None = None,
                seq: int | None = None) -> SignOffRequest:
        """Check every field (all problems at once); the name is kept without surrounding white space and an
        empty comment is no comment."""
        problems = []
        if not isinstance(record_id, str) or not record_id:
            problems.append(f"record_id must be a non-empty text, got {record_id!r}")
        if decision not in DECISIONS:
            problems.append(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        trouble = reviewer_problem(by)
        if trouble is not None:
            problems.append(f"the reviewer's name (by) {trouble}: give who decides as one line of plain text, "
                            "e.g. 'J. Doe'")
        if comment is not None and not isinstance(comment, str):
            problems.append(f"comment must be text or None, got {type(comment).__name__}")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
            problems.append(f"seq must be a positive integer (a verdict entry's position), got {seq!r}")
        if problems:
            raise SignOffError("; ".join(problems) + ". Nothing was recorded")
        return cls(record_id, decision, by.strip(), comment or None, seq)


def signoff_digest(record_id: Any, signoff: Mapping[str, Any]) -> str:
    """SHA-256 of what a sign-off says (record, signed entry, decision, reviewer, comment), its time left out."""
    said = {name: signoff.get(name) for name in FIELDS if name != "signed_at"}
    return sha256_hex(canonical_json({"record_id": record_id, **said}))


def prepare_signoff(request: SignOffRequest, signed: Entry, *, signed_at: str) -> Prepared:
    """A sign-off of the verdict entry ``signed``, ready to be chained (with ``previous_seq=signed.seq``)."""
    signoff = {"seq": signed.seq, "entry_hash": signed.entry_hash, "decision": request.decision, "by": request.by,
               "comment": request.comment, "signed_at": signed_at}
    digest = signoff_digest(request.record_id, signoff)
    return Prepared(idempotency_key(request.record_id, digest, SIGNOFF), request.record_id, digest,
                    {"verdict": SIGNOFF, "record_id": request.record_id}, {}, None, signoff)


def signoff_problem(content: Mapping[str, Any]) -> str | None:
    """What is wrong with a sign-off entry's content on its own, as the end of a sentence, or ``None``.

    Whether the entry it signs exists, is a verdict of the same record and has the
    hash it names is checked by :func:`conformance.ledger.verify` against the chain.
    """
    stub, signoff = content.get("verdict"), content.get("signoff")
    if not isinstance(signoff, Mapping) or set(signoff) != set(FIELDS):
        return f"is marked as a sign-off but holds no well-formed signoff object (with {', '.join(FIELDS)})"
    record_id = stub.get("record_id") if isinstance(stub, Mapping) else None
    if not isinstance(stub, Mapping) or dict(stub) != {"verdict": SIGNOFF, "record_id": record_id} \
            or not isinstance(record_id, str) or not record_id:
        return 'is a sign-off but its verdict is not {"verdict": "signoff", "record_id": RECORD_ID}'
    if content.get("record") != {} or content.get("batch") is not None:
        return "is a sign-off but carries a record or a batch"
    signed = signoff["seq"]
    if isinstance(signed, bool) or not isinstance(signed, int) or not isinstance(signoff["entry_hash"], str):
        return f"is a sign-off that names no entry (seq {signed!r}, entry_hash {signoff['entry_hash']!r})"
    if signoff["decision"] not in DECISIONS:
        return f"is a sign-off with decision {signoff['decision']!r}, which is not one of {', '.join(DECISIONS)}"
    trouble = reviewer_problem(signoff["by"])
    if trouble is None and signoff["by"] != signoff["by"].strip():
        trouble = "has white space around it"
    if trouble is not None:
        return f"is a sign-off whose reviewer's name {trouble}"
    if signoff["comment"] is not None and not isinstance(signoff["comment"], str):
        return f"is a sign-off whose comment is not text but {type(signoff['comment']).__name__}"
    if not utc_time(signoff["signed_at"]):
        return f"is a sign-off whose signed_at {signoff['signed_at']!r} is not a UTC time (ISO 8601)"
    if content.get("previous_seq") != signed:
        return f"is a sign-off of entry #{signed} but its previous_seq says {content.get('previous_seq')!r}"
    if content.get("record_digest") != signoff_digest(record_id, signoff):
        return "is a sign-off whose record_digest does not match what it says"
    return None


def utc_time(value: Any) -> bool:
    """Whether ``value`` is an ISO 8601 time in UTC (offset zero), as entries record their times."""
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    offset = parsed.utcoffset()
    return offset is not None and offset.total_seconds() == 0


@dataclass(frozen=True)
class SignOff:
    """One recorded sign-off, as its ledger entry says (``seq`` and ``entry_hash`` are the sign-off's own;
    ``signed_seq`` and ``signed_hash`` name the verdict entry it signs)."""

    seq: int
    entry_hash: str
    record_id: str
    signed_seq: int
    signed_hash: str
    decision: str
    by: str
    comment: str | None
    signed_at: str

    @classmethod
    def from_entry(cls, entry: Entry) -> SignOff:
        content = entry.content
        try:
            s = content["signoff"]
            comment = s["comment"]
            return cls(entry.seq, entry.entry_hash, str(content["verdict"]["record_id"]), int(s["seq"]),
                       str(s["entry_hash"]), str(s["decision"]), str(s["by"]),
                       None if comment is None else str(comment), str(s["signed_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"ledger entry #{entry.seq} is not a well-formed sign-off ({type(exc).__name__}: "
                              f"{exc}); run `conformance ledger verify`") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
