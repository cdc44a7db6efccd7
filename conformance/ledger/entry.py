"""Ledger entries: what one entry holds, and how it is built from a verdict.

An entry's *content* is a JSON object, stored as canonical text and hashed:

``ledger_format``  format of the content (1)
``seq``            position in the chain, from 1
``prev_hash``      hash of entry ``seq - 1`` (64 zeros for the first)
``run_id``         the scoring run that appended it
``recorded_at``    when it was appended (UTC, ISO 8601)
``previous_seq``   the latest earlier verdict entry of the same ``record_id``, if any
``record_digest``  SHA-256 of the record's canonical JSON
``verdict``        the verdict's own fields (:class:`~conformance.verdict.Verdict` without ``record``)
``record``         the record's own fields, as read (input, output, context, sampling, policy, ...)
``batch``          the batch-level test of the record's (model_version, input_class) group in that run

A reviewer's sign-off is an entry of the same shape (``verdict`` is then
``{"verdict": "signoff", "record_id": ...}``, ``record`` empty, ``batch`` null,
``previous_seq`` the entry it signs) with a ``signoff`` object beside them; see
:mod:`conformance.ledger.signoff`. A baseline's approval or revocation is one too
(``verdict`` ``approval`` or ``revocation``, with an ``approval`` object); see
:mod:`conformance.ledger.approval`.

``key_format``     2 on verdict entries whose exactly-once key covers the baseline's digest (a verdict
                   against other baseline content is a new entry); absent on older entries, whose key
                   covers the baseline's URI only. ``verify`` recomputes each key by its own format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from conformance.ledger.canonical import canonical_json, entry_hash, idempotency_key, plain, record_digest
from conformance.verdict import Verdict

LEDGER_FORMAT = 1
SIGNOFF = "signoff"
"""The ``verdict`` of a sign-off entry (its indexed column too): a reviewer's decision, not a verdict."""
APPROVAL = "approval"
REVOCATION = "revocation"
"""The ``verdict`` of a baseline's approval and revocation entries: a person's decision, not a verdict."""
NOT_VERDICTS = (SIGNOFF, APPROVAL, REVOCATION)
"""Entries of the chain that are not verdicts: verdict queries and ``reconstruct`` skip them."""
KEY_FORMAT = 2
"""The exactly-once key of new verdict entries: record id, record digest, baseline URI and baseline digest."""
_URI = re.compile(r"^models:/(?P<name>.+)/(?P<version>\d+)$")


def parse_baseline_uri(uri: str | None) -> tuple[str | None, int | None]:
    """``models:/<name>/<version>`` -> ``(name, version)``; ``(None, None)`` for no baseline."""
    if not uri:
        return None, None
    match = _URI.match(uri)
    if match is None:
        return uri, None
    return match["name"], int(match["version"])


def verdict_fields(verdict: Verdict) -> dict[str, Any]:
    """The verdict's own fields as plain JSON data (the record is kept apart)."""
    out = {f.name: getattr(verdict, f.name) for f in fields(verdict) if f.name != "record"}
    out["nearest"] = list(verdict.nearest)
    return plain(out)


def is_signoff(content: Mapping[str, Any]) -> bool:
    """Whether an entry's content is a sign-off (by either of the two marks it must carry both of)."""
    verdict = content.get("verdict")
    return "signoff" in content or (isinstance(verdict, Mapping) and verdict.get("verdict") == SIGNOFF)


def is_approval(content: Mapping[str, Any]) -> bool:
    """Whether an entry's content is a baseline's approval or revocation."""
    verdict = content.get("verdict")
    return "approval" in content or (isinstance(verdict, Mapping) and verdict.get("verdict") in (APPROVAL, REVOCATION))


def target_of(verdict: Mapping[str, Any], key_format: Any = None) -> str:
    """What a verdict was judged against: the versioned baseline URI (with ``key_format`` 2 also the
    baseline's digest), or the verdict when there was none."""
    target = str(verdict.get("baseline") or verdict["verdict"])
    if key_format == KEY_FORMAT and verdict.get("baseline"):
        target += "#" + str(verdict.get("baseline_digest"))
    return target


@dataclass(frozen=True)
class Prepared:
    """A verdict made ready to append, before its place in the chain is known."""

    key: str
    record_id: str | None
    digest: str
    verdict: dict[str, Any]
    record: dict[str, Any]
    batch: dict[str, Any] | None
    signoff: dict[str, Any] | None = None
    approval: dict[str, Any] | None = None
    key_format: int | None = None


def prepare(verdict: Verdict, batch: Mapping[str, Any] | None = None) -> Prepared:
    record = plain(verdict.record)
    digest = record_digest(record)
    own = verdict_fields(verdict)
    key = idempotency_key(verdict.record_id, digest, target_of(own, KEY_FORMAT))
    return Prepared(key, verdict.record_id, digest, own, record, plain(dict(batch)) if batch else None,
                    key_format=KEY_FORMAT)


def chain(p: Prepared, *, seq: int, prev_hash: str, run_id: str, recorded_at: str,
          previous_seq: int | None) -> tuple[str, str, dict[str, Any]]:
    """Place a prepared verdict in the chain: ``(content_text, entry_hash, row)``."""
    content = {
        "ledger_format": LEDGER_FORMAT,
        "seq": seq,
        "prev_hash": prev_hash,
        "run_id": run_id,
        "recorded_at": recorded_at,
        "previous_seq": previous_seq,
        "record_digest": p.digest,
        "verdict": p.verdict,
        "record": p.record,
        "batch": p.batch,
    }
    if p.signoff is not None:
        content["signoff"] = p.signoff
    if p.approval is not None:
        content["approval"] = p.approval
    if p.key_format is not None:
        content["key_format"] = p.key_format
    text = canonical_json(content)
    digest = entry_hash(text)
    row = index_of(content) | {"entry_hash": digest, "idem_key": p.key, "content": text}
    return text, digest, row


def index_of(content: Mapping[str, Any]) -> dict[str, Any]:
    """The indexed columns of an entry, as its content says they must be."""
    v = content["verdict"]
    name, version = parse_baseline_uri(v.get("baseline"))
    return {
        "seq": content["seq"],
        "prev_hash": content["prev_hash"],
        "run_id": content["run_id"],
        "record_id": v.get("record_id"),
        "record_digest": content["record_digest"],
        "model_version": v.get("model_version"),
        "input_class": v.get("input_class"),
        "verdict": v["verdict"],
        "baseline_name": name,
        "baseline_version": version,
        "score": v.get("score"),
        "p_value": v.get("p_value"),
        "alpha": v.get("alpha"),
        "scored_at": v.get("scored_at") or content["recorded_at"],
        "recorded_at": content["recorded_at"],
        "previous_seq": content["previous_seq"],
    }


@dataclass(frozen=True)
class Entry:
    """One stored ledger entry, as read back (nothing in it is ever executed)."""

    seq: int
    entry_hash: str
    content_text: str

    @property
    def content(self) -> dict[str, Any]:
        value = json.loads(self.content_text)
        if not isinstance(value, dict):
            raise ValueError(f"ledger entry #{self.seq}: content is not a JSON object")
        return value

    @property
    def is_signoff(self) -> bool:
        """A reviewer's sign-off rather than a verdict."""
        return is_signoff(self.content)

    def verdict(self) -> Verdict:
        """The recorded verdict, with its record, as a :class:`Verdict`."""
        content = self.content
        if is_signoff(content):
            raise ValueError(f"ledger entry #{self.seq} is a reviewer's sign-off, not a verdict")
        if is_approval(content):
            raise ValueError(f"ledger entry #{self.seq} is a baseline's {content['verdict']['verdict']}, not a verdict")
        fields = dict(content["verdict"])
        fields["nearest"] = tuple(fields.get("nearest") or ())
        return Verdict(**fields, record=dict(content["record"]))

    def to_row(self) -> dict[str, Any]:
        """A flat summary for tables, CSV and JSON listings."""
        content = self.content
        v = content["verdict"]
        return {
            "seq": self.seq,
            "record_id": v.get("record_id"),
            "model_version": v.get("model_version"),
            "input_class": v.get("input_class"),
            "verdict": v.get("verdict"),
            "score": v.get("score"),
            "p_value": v.get("p_value"),
            "alpha": v.get("alpha"),
            "baseline": v.get("baseline"),
            "baseline_digest": v.get("baseline_digest"),
            "embedder": v.get("embedder"),
            "code_version": v.get("code_version"),
            "scored_at": v.get("scored_at"),
            "recorded_at": content.get("recorded_at"),
            "run_id": content.get("run_id"),
            "previous_seq": content.get("previous_seq"),
            "reason": v.get("reason"),
            "entry_hash": self.entry_hash,
            "prev_hash": content.get("prev_hash"),
        }
