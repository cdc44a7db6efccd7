"""Witnessed heads: every append also writes the new head outside the ledger's own database.

The hash chain shows that no entry in the middle was altered, removed or inserted. It cannot show, on its
own, that the newest entries were not removed, or that the whole chain was not rewritten with fresh hashes:
a shorter or rewritten chain is consistent in itself. So each append (a chunk of verdicts, a sign-off)
appends its new head (``seq``, ``entry_hash``, when) as one JSON line to a *heads file* that the database does
not hold, and :func:`conformance.ledger.verify.verify` checks the chain against every head the file
witnessed: a witnessed entry must still be in the chain with the same hash.

Where the file is: in the folder ``CONFORMANCE_LEDGER_WITNESS`` names, when set (put it where whoever
administers the ledger's database cannot write, e.g. another machine's mount), as
``ledger-heads-<digest of the ledger URL>.jsonl``, so that one folder serves many ledgers; else beside a
SQLite ledger (``ledger.db`` -> ``ledger.db.heads.jsonl``); else, for a server ledger, in this machine's
store folder (``./conformance_store/ledger-heads-<digest of the URL>.jsonl``). Each machine that appends
witnesses its own appends. A head that could not be written (a full disk, a read-only folder) is a warning,
never a lost verdict: the ledger has committed, and a witness that lags behind the chain is no problem; only
a chain that disagrees with what was witnessed is. With ``CONFORMANCE_LEDGER_SIGNING_KEY`` set, each line is
also signed (:mod:`conformance.ledger.signing`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conformance.ledger.signing import Signer

WITNESS_ENV = "CONFORMANCE_LEDGER_WITNESS"


@dataclass(frozen=True)
class Witnessed:
    """One head as the heads file saw it."""

    seq: int
    entry_hash: str
    at: str
    line: int
    #: The Ed25519 signature (base64) and the id of the key that made it, when the head was signed.
    sig: str | None = None
    key: str | None = None


def default_witness_path(url: str, dialect: str, database: str | None) -> Path:
    """Where the heads file of a ledger is (see the module doc)."""
    name = f"ledger-heads-{hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]}.jsonl"
    override = os.environ.get(WITNESS_ENV, "").strip()
    if override:
        return Path(override) / name
    if dialect == "sqlite" and database:
        return Path(database + ".heads.jsonl")
    from conformance.defaults import default_store_dir

    return default_store_dir() / name


def record_head(path: Path, seq: int, entry_hash: str, signer: Signer | None = None) -> None:
    """Append one head to the heads file (created if absent), synced to disk; a failure is a warning.

    With ``signer`` (:mod:`conformance.ledger.signing`) the line also carries ``sig``, the Ed25519 signature of
    its ``seq``, ``entry_hash`` and ``at``, and ``key``, the id of the key.
    """
    at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    head: dict[str, object] = {"seq": seq, "entry_hash": entry_hash, "at": at}
    if signer is not None:
        head |= {"sig": signer.sign(seq, entry_hash, at), "key": signer.key_id}
    line = json.dumps(head, sort_keys=True) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        warnings.warn(f"the ledger committed head #{seq}, but its witness {path} could not be written ({exc}); "
                      "ledger verify checks the heads it did witness", stacklevel=3)


def read_heads(path: Path) -> tuple[list[Witnessed], list[str]]:
    """The heads a file witnessed, and its lines that are not heads (each named by line number)."""
    heads: list[Witnessed] = []
    problems: list[str] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):  # nothing witnessed here (yet)
        return [], []
    except OSError as exc:  # there, but unreadable: what it witnessed cannot be checked
        return [], [f"the witness {path} cannot be read ({exc.strerror or exc})"]
    lines = text.splitlines()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            sig, key = item.get("sig"), item.get("key")
            heads.append(Witnessed(int(item["seq"]), str(item["entry_hash"]), str(item.get("at", "")), number,
                                   None if sig is None else str(sig), None if key is None else str(key)))
        except (ValueError, KeyError, TypeError):
            if number == len(lines) and not text.endswith("\n"):
                continue  # a line cut short by a crash while it was written: that head was never witnessed
            problems.append(f"{path}, line {number}: not a witnessed head (the heads file was edited)")
    return heads, problems
