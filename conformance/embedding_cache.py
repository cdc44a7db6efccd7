"""An embedding cache: each text's chunk embeddings, kept by (embedder fingerprint, SHA-256 of the text).

A text's chunk embeddings depend on its own text only (see :mod:`conformance.embedder`), so what a
cache returns is exactly what the embedder would compute again: the same float32 bits, the same
number of word pieces. :class:`CachedEmbedder` wraps an embedder and

* embeds each distinct text of a call once, however often it appears (with or without a store);
* with a store (``<store>/embeddings.db``, SQLite in WAL mode), serves texts embedded before by an
  embedder of the same fingerprint, and records the new ones in one transaction per call.

A row that does not read back as a well-formed float32 matrix (a truncated blob, another shape, a
non-finite value) is a miss: the text is embedded again and the row overwritten. A database that
cannot be opened or written is bypassed with a warning; the cache never fails a run. Rows hold raw
float32 bytes and integers, never pickles. Deleting the file is always safe: it only costs time.
"""

from __future__ import annotations

import hashlib
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from conformance.defaults import default_store_dir
from conformance.embedder import EmbeddedTexts, Embedder, fingerprint_digest

#: The cache file's name inside the store folder.
CACHE_FILE = "embeddings.db"
#: Bumped when the table's layout changes; a file of another version is set aside, never misread.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    fingerprint TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL,
    dimension INTEGER NOT NULL,
    chunks BLOB NOT NULL,
    PRIMARY KEY (fingerprint, text_sha256)
) WITHOUT ROWID
"""
_FLOAT32 = np.dtype("<f4")


def default_cache_path() -> Path:
    """``./conformance_store/embeddings.db``, beside the embedded MLflow store and the ledger."""
    return default_store_dir() / CACHE_FILE


def text_key(text: str) -> str:
    """The SHA-256 of a text's UTF-8 bytes, in hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingStore:
    """The SQLite file behind the cache; opened on first use, so an unused cache creates nothing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._broken = False

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._broken:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise sqlite3.DatabaseError(f"cache schema version {version}, this code reads {SCHEMA_VERSION}")
                conn.execute(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self._conn = conn
            except (sqlite3.Error, OSError) as exc:
                self._give_up("cannot be opened", exc)
        return self._conn

    def _give_up(self, what: str, exc: BaseException) -> None:
        self._broken = True
        self._conn = None
        warnings.warn(f"the embedding cache {self.path} {what} ({type(exc).__name__}: {exc}); embedding without "
                      "it. Deleting the file is safe: it only holds embeddings that can be computed again",
                      stacklevel=3)

    def get(self, fingerprint: str, keys: list[str], dimension: int | None) -> dict[str, tuple[np.ndarray, int]]:
        """The well-formed rows of ``keys``: ``key -> (chunks, n_tokens)``; a malformed row is left out."""
        conn = self._connect()
        found: dict[str, tuple[np.ndarray, int]] = {}
        if conn is None or not keys:
            return found
        try:
            for start in range(0, len(keys), 500):  # below SQLite's limit on bound parameters
                part = keys[start : start + 500]
                rows = conn.execute(
                    "SELECT text_sha256, n_tokens, n_chunks, dimension, chunks FROM embeddings WHERE fingerprint = ? "
                    f"AND text_sha256 IN ({','.join('?' * len(part))})", [fingerprint, *part]).fetchall()
                for key, n_tokens, n_chunks, dim, blob in rows:
                    chunks = _decode(n_tokens, n_chunks, dim, blob, dimension)
                    if chunks is not None:
                        found[key] = (chunks, int(n_tokens))
        except sqlite3.Error as exc:
            self._give_up("cannot be read", exc)
            return {}
        return found

    def put(self, fingerprint: str, rows: list[tuple[str, np.ndarray, int]]) -> None:
        """Record ``(key, chunks, n_tokens)`` rows in one transaction (all or none)."""
        conn = self._connect()
        if conn is None or not rows:
            return
        try:
            with self._transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO embeddings (fingerprint, text_sha256, n_tokens, n_chunks, dimension, "
                    "chunks) VALUES (?, ?, ?, ?, ?, ?)",
                    [(fingerprint, key, int(n), int(c.shape[0]), int(c.shape[1]),
                      np.ascontiguousarray(c, dtype=_FLOAT32).tobytes()) for key, c, n in rows])
        except sqlite3.Error as exc:
            self._give_up("cannot be written", exc)

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _decode(n_tokens: Any, n_chunks: Any, dim: Any, blob: Any, dimension: int | None) -> np.ndarray | None:
    """A row's chunk matrix, or None when the row is not what this module writes."""
    if not all(isinstance(v, int) for v in (n_tokens, n_chunks, dim)) or not isinstance(blob, bytes):
        return None
    if n_tokens < 0 or n_chunks < 1 or dim < 1 or (dimension is not None and dim != dimension):
        return None
    if len(blob) != n_chunks * dim * _FLOAT32.itemsize:
        return None
    chunks = np.frombuffer(blob, dtype=_FLOAT32).reshape(n_chunks, dim)
    if not np.isfinite(chunks).all():
        return None
    return chunks.astype(np.float32)  # a native, writable copy


class CachedEmbedder(Embedder):
    """An embedder that embeds each distinct text once and, with a store, remembers it across runs.

    It is an :class:`~conformance.embedder.Embedder` (the same ``fingerprint``, ``window``,
    ``model`` and ``embed``), so every caller that takes one takes this; the wrapped embedder
    does the work. ``path=None`` keeps nothing on disk: only the duplicates of a call are saved.

    Examples
    --------
    >>> cached = CachedEmbedder(get_embedder(), path=default_cache_path())  # doctest: +SKIP
    >>> cached.embed(["a text", "a text"]).n_texts                           # doctest: +SKIP
    2
    """

    def __init__(self, embedder: Embedder, *, path: str | Path | None = None) -> None:
        # No super().__init__: this object loads no model; it hands every question to ``embedder``.
        if isinstance(embedder, CachedEmbedder):
            raise TypeError("embedder is already a CachedEmbedder; wrap the plain embedder once")
        self.embedder = embedder
        self.store = EmbeddingStore(path) if path is not None else None
        #: Texts served from the store and texts embedded, over this object's life.
        self.hits = 0
        self.misses = 0

    @property
    def model(self) -> Any:
        return self.embedder.model

    @property
    def window(self) -> int:
        return self.embedder.window

    @property
    def backend(self) -> str:  # type: ignore[override]  # read from the wrapped embedder, never set
        return self.embedder.backend

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        return int(self.embedder.batch_size)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.embedder.fingerprint

    def embed(self, texts: list[str], *, progress: bool | None = None, desc: str = "embedding") -> EmbeddedTexts:
        """The wrapped embedder's result for ``texts``, bit for bit; each distinct text embedded at most once."""
        if not texts:
            return self.embedder.embed(texts, progress=progress, desc=desc)
        keys = [text_key(t) for t in texts]
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        fingerprint = self.fingerprint
        digest = fingerprint_digest(fingerprint)
        dimension = fingerprint.get("dimension")
        known = (self.store.get(digest, list(first), dimension if isinstance(dimension, int) else None)
                 if self.store is not None else {})
        missing = [key for key in first if key not in known]
        if missing:
            fresh = self.embedder.embed([texts[first[k]] for k in missing], progress=progress, desc=desc)
            new = list(zip(missing, _split(fresh), fresh.n_tokens.tolist()))
            if self.store is not None:
                self.store.put(digest, new)
            known.update((key, (chunks, int(n))) for key, chunks, n in new)
        self.hits += len(first) - len(missing)
        self.misses += len(missing)
        parts = [known[key] for key in keys]
        return EmbeddedTexts(
            chunks=np.concatenate([chunks for chunks, _ in parts]).astype(np.float32, copy=False),
            owner=np.repeat(np.arange(len(texts), dtype=np.int64), [chunks.shape[0] for chunks, _ in parts]),
            n_tokens=np.asarray([n for _, n in parts], dtype=np.int64),
        )

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _split(embedded: EmbeddedTexts) -> list[np.ndarray]:
    """Each text's chunk rows, in text order."""
    order = np.argsort(embedded.owner, kind="stable")
    counts = np.bincount(embedded.owner, minlength=embedded.n_texts)
    rows = np.asarray(embedded.chunks, dtype=np.float32)[order]
    return np.split(rows, np.cumsum(counts)[:-1])
