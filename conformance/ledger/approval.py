"""Baselines' approvals and revocations: a person's decision about a registered baseline version, as a ledger entry.

Every approval and every revocation is appended to the same hash chain as the verdicts and the reviewers'
sign-offs, so the chain covers who approved what, and against which content. The content has the shape of a
verdict entry (the schema is unchanged, and everything that walks the chain reads it the same way):

``verdict``        ``{"verdict": "approval" | "revocation", "model_version", "input_class", "baseline":
                   "models:/<name>/<version>", "baseline_digest"}``
``approval``       ``action`` (``approval`` or ``revocation``), ``name`` (the registered model), ``model_version``,
                   ``input_class``, ``version``, ``digest`` (the baseline's content digest, computed from the
                   artifact as loaded, never taken from a registry tag), ``by``, ``at`` (UTC, ISO 8601),
                   ``replaced`` (the version approved before, or null), ``reason`` (a revocation's, else null)
``previous_seq``   the newest earlier approval or revocation entry of the same registered model, or null
``record``         ``{}``; ``batch`` is null
``record_digest``  SHA-256 of what the entry says, its time left out, with ``previous_seq``: the same
                   decision taken again after another one is a new entry, and a retry (the newest entry of
                   the registered model already says it) is recorded once.

``score`` reads the newest entry of a registered version (:func:`standing`) and refuses a baseline whose
loaded content has another digest, or that no approval entry covers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select

from conformance.ledger import schema
from conformance.ledger.canonical import canonical_json, idempotency_key, sha256_hex
from conformance.ledger.entry import APPROVAL, REVOCATION, Entry, Prepared, chain, target_of
from conformance.ledger.errors import LedgerError
from conformance.ledger.signoff import reviewer_problem, utc_time
from conformance.ledger.store import Ledger, new_run_id
from conformance.ledger.witness import record_head

ACTIONS = (APPROVAL, REVOCATION)
FIELDS = ("action", "name", "model_version", "input_class", "version", "digest", "by", "at", "replaced", "reason")
"""The keys of an approval entry's ``approval`` object."""


@dataclass(frozen=True)
class ApprovalRequest:
    """An approval or revocation to record, as the registry describes the version it concerns."""

    action: str
    name: str
    model_version: str
    input_class: str
    version: int
    digest: str
    by: str
    replaced: int | None = None
    reason: str | None = None

    def problem(self) -> str | None:
        """What is wrong with the request, as a sentence, or ``None``."""
        said = {"action": self.action, "name": self.name, "model_version": self.model_version,
                "input_class": self.input_class, "version": self.version, "digest": self.digest, "by": self.by,
                "at": "2000-01-01T00:00:00+00:00", "replaced": self.replaced, "reason": self.reason}
        return _fields_problem(said)


@dataclass(frozen=True)
class ApprovalRecord:
    """One recorded approval or revocation (``seq`` and ``entry_hash`` of its own entry)."""

    seq: int
    entry_hash: str
    action: str
    name: str
    model_version: str
    input_class: str
    version: int
    digest: str
    by: str
    at: str
    replaced: int | None
    reason: str | None
    added: bool = True

    @classmethod
    def from_entry(cls, entry: Entry, *, added: bool = True) -> ApprovalRecord:
        try:
            a = entry.content["approval"]
            return cls(entry.seq, entry.entry_hash, str(a["action"]), str(a["name"]), str(a["model_version"]),
                       str(a["input_class"]), int(a["version"]), str(a["digest"]), str(a["by"]), str(a["at"]),
                       None if a["replaced"] is None else int(a["replaced"]),
                       None if a["reason"] is None else str(a["reason"]), added)
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"ledger entry #{entry.seq} is not a well-formed approval ({type(exc).__name__}: "
                              f"{exc}); run `conformance ledger verify`") from exc

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def approval_digest(approval: Mapping[str, Any], previous_seq: int | None) -> str:
    """SHA-256 of what an approval entry says, its time left out, with the entry it follows."""
    said = {name: approval.get(name) for name in FIELDS if name != "at"}
    return sha256_hex(canonical_json({**said, "previous_seq": previous_seq}))


def prepare_approval(request: ApprovalRequest, *, at: str, previous_seq: int | None) -> Prepared:
    """An approval or revocation ready to be chained (with ``previous_seq``)."""
    approval = {"action": request.action, "name": request.name, "model_version": request.model_version,
                "input_class": request.input_class, "version": request.version, "digest": request.digest,
                "by": request.by, "at": at, "replaced": request.replaced, "reason": request.reason}
    digest = approval_digest(approval, previous_seq)
    stub = _stub(approval)
    return Prepared(idempotency_key(None, digest, target_of(stub)), None, digest, stub, {}, None,
                    approval=approval)


def _stub(approval: Mapping[str, Any]) -> dict[str, Any]:
    return {"verdict": approval["action"], "model_version": approval["model_version"],
            "input_class": approval["input_class"], "baseline": f"models:/{approval['name']}/{approval['version']}",
            "baseline_digest": approval["digest"]}


def _fields_problem(a: Mapping[str, Any]) -> str | None:
    if a.get("action") not in ACTIONS:
        return f"its action {a.get('action')!r} is not one of {', '.join(ACTIONS)}"
    for name in ("name", "model_version", "input_class", "digest"):
        if not isinstance(a.get(name), str) or not a[name]:
            return f"its {name} is not a non-empty text ({a.get(name)!r})"
    version = a.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return f"its version {version!r} is not a positive integer"
    replaced = a.get("replaced")
    if replaced is not None and (isinstance(replaced, bool) or not isinstance(replaced, int) or replaced < 1):
        return f"its replaced version {replaced!r} is not a positive integer or null"
    trouble = reviewer_problem(a.get("by"))
    if trouble is None and a["by"] != a["by"].strip():
        trouble = "has white space around it"
    if trouble is not None:
        return f"the approver's name (by) {trouble}"
    reason = a.get("reason")
    if a["action"] == REVOCATION and (not isinstance(reason, str) or not reason.strip()):
        return "is a revocation without a reason"
    if a["action"] == APPROVAL and reason is not None:
        return "is an approval with a reason (only a revocation has one)"
    if not utc_time(a.get("at")):
        return f"its time (at) {a.get('at')!r} is not a UTC time (ISO 8601)"
    return None


def approval_problem(content: Mapping[str, Any]) -> str | None:
    """What is wrong with an approval entry's content on its own, as the end of a sentence, or ``None``."""
    approval = content.get("approval")
    if not isinstance(approval, Mapping) or set(approval) != set(FIELDS):
        return f"is marked as an approval but holds no well-formed approval object (with {', '.join(FIELDS)})"
    problem = _fields_problem(approval)
    if problem is not None:
        return f"is a malformed {approval.get('action', 'approval')} entry: {problem}"
    if content.get("verdict") != _stub(approval):
        return "is an approval whose verdict does not say what its approval object says"
    if content.get("record") != {} or content.get("batch") is not None:
        return "is an approval but carries a record or a batch"
    if content.get("record_digest") != approval_digest(approval, content.get("previous_seq")):
        return "is an approval whose record_digest does not match what it says"
    return None


def approval_link_problem(seq: int, content: Mapping[str, Any],
                          lookup: Callable[[int], Mapping[str, Any] | None]) -> str | None:
    """What is wrong with the link from an approval entry to the earlier one it follows, or ``None``."""
    earlier = content.get("previous_seq")
    if earlier is None:
        return None
    if isinstance(earlier, bool) or not isinstance(earlier, int) or earlier >= seq:
        return f"entry #{seq} is an approval that follows entry #{earlier!r}, which does not come before it"
    row = lookup(earlier)
    if row is None:
        return None
    name = content["approval"]["name"]
    if row["verdict"] not in ACTIONS or row["baseline_name"] != name:
        return (f"entry #{seq} is an approval of {name!r} that follows entry #{earlier}, which is not an approval or "
                f"revocation of {name!r}")
    return None




def _same(entry: Entry, request: ApprovalRequest) -> bool:
    a = entry.content["approval"]
    return (a["action"], a["name"], a["version"], a["digest"], a["by"]) == \
        (request.action, request.name, request.version, request.digest, request.by)


def record(ledger: Ledger, requests: Iterable[ApprovalRequest]) -> list[ApprovalRecord]:
    """Append approvals and revocations in one transaction: all of them are recorded, or none.

    A request that the newest entry of its registered model already says (a retry) is not appended
    again: that entry is returned, with ``added`` false.

    Raises
    ------
    LedgerError
        A request that is not well formed, or the ledger refused; nothing is recorded.
    """
    todo = list(requests)
    for request in todo:
        problem = request.problem()
        if problem is not None:
            raise LedgerError(f"the {request.action} of models:/{request.name}/{request.version}: {problem}; "
                              "nothing was recorded")
    table = schema.entries
    done: list[ApprovalRecord] = []
    rows: list[dict[str, Any]] = []
    with ledger._transaction(write=True) as conn:
        at = datetime.now(timezone.utc).isoformat(timespec="microseconds")  # once the lock is held
        head = ledger._head(conn)
        seq, prev = head.seq, head.entry_hash
        run_id = new_run_id()
        newest: dict[str, Entry] = {}
        for request in todo:
            if request.name not in newest:
                found = conn.execute(select(table.c.seq, table.c.entry_hash, table.c.content)
                                     .where(table.c.baseline_name == request.name, table.c.verdict.in_(ACTIONS))
                                     .order_by(table.c.seq.desc()).limit(1)).first()
                if found is not None:
                    newest[request.name] = Entry(int(found[0]), str(found[1]), str(found[2]))
            last = newest.get(request.name)
            if last is not None and _same(last, request):
                done.append(ApprovalRecord.from_entry(last, added=False))
                continue
            p = prepare_approval(request, at=at, previous_seq=None if last is None else last.seq)
            seq += 1
            text_, prev, row = chain(p, seq=seq, prev_hash=prev, run_id=run_id, recorded_at=at,
                                     previous_seq=None if last is None else last.seq)
            rows.append(row)
            entry = Entry(seq, prev, text_)
            newest[request.name] = entry
            done.append(ApprovalRecord.from_entry(entry))
        if rows:
            conn.execute(insert(table), rows)
    if rows:
        record_head(ledger.witness_path, seq, prev, ledger.signer)
    return done


def history(ledger: Ledger, name: str | None = None) -> list[ApprovalRecord]:
    """Every approval and revocation (of one registered model, or all), in chain order."""
    t = schema.entries
    query = select(t.c.seq, t.c.entry_hash, t.c.content).where(t.c.verdict.in_(ACTIONS)).order_by(t.c.seq)
    if name is not None:
        query = query.where(t.c.baseline_name == name)
    with ledger._transaction(write=False) as conn:
        found = conn.execute(query).all()
    return [ApprovalRecord.from_entry(Entry(int(r[0]), str(r[1]), str(r[2]))) for r in found]


def approval_of(ledger: Ledger, name: str, version: int, digest: str) -> ApprovalRecord | None:
    """The newest approval of one registered version with this content digest, or ``None``."""
    for rec in reversed(history(ledger, name)):
        if rec.action != REVOCATION and rec.version == version and rec.digest == digest:
            return rec
    return None


def standing(ledger: Ledger, name: str, version: int) -> ApprovalRecord | None:
    """The newest approval or revocation entry of one registered version, or ``None`` when there is none."""
    t = schema.entries
    with ledger._transaction(write=False) as conn:
        found = conn.execute(select(t.c.seq, t.c.entry_hash, t.c.content)
                             .where(t.c.baseline_name == name, t.c.baseline_version == version,
                                    t.c.verdict.in_(ACTIONS))
                             .order_by(t.c.seq.desc()).limit(1)).first()
    return None if found is None else ApprovalRecord.from_entry(Entry(int(found[0]), str(found[1]), str(found[2])))
