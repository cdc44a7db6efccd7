"""Canonical JSON and the hashes of the chain.

An entry's hash covers its canonical content, and the content names the
previous entry's hash, so every entry commits to the whole chain before it.
Canonical JSON is ``json.dumps`` with sorted keys, no insignificant white
space and UTF-8 text; floats are written by Python's shortest round-trip
``repr``, so a float read back from the ledger is bit-identical. Stored text is
only ever parsed as JSON, never evaluated or unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

HASH_DOMAIN = b"conformance-ledger/1\n"
"""Prefix of every hashed entry, so a ledger hash can never equal some other SHA-256 of the same text."""

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""


def plain(value: Any) -> Any:
    """Turn ``value`` into JSON-representable plain data, deterministically.

    Non-finite floats become the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"`` (JSON has no such numbers); numpy scalars and arrays become
    Python numbers and lists; anything else that is not JSON becomes ``str(value)``.
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return plain(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` (sorted keys, compact, UTF-8, finite numbers).

    >>> canonical_json({"b": 1, "a": [1.5, None, "é"]})
    '{"a":[1.5,null,"é"],"b":1}'
    """
    try:  # the common case: already plain data; one pass, no copy
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_not_plain)
    except (ValueError, TypeError):  # a non-finite float or a non-string key: normalise first
        return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)


def _not_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return plain(value)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_hash(content_text: str) -> str:
    """The hash of an entry from its canonical content text (which names the previous hash)."""
    return hashlib.sha256(HASH_DOMAIN + content_text.encode("utf-8")).hexdigest()


def record_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON: two records with the same digest have the same content."""
    return sha256_hex(canonical_json(record))


def idempotency_key(record_id: str | None, digest: str, target: str) -> str:
    """What makes two entries the same: record id, record content and what it was judged against.

    ``target`` is the baseline's versioned registry URI, or the verdict
    (``no_baseline``, ``invalid``) when no baseline was used.
    """
    return sha256_hex(canonical_json([record_id, digest, target]))


def parse_json(text: str) -> Any:
    """Parse stored JSON text; data only (JSON never runs code)."""
    return json.loads(text)
