"""Embedding cache for the validation study: embed each distinct text once, keep it on disk.

Embedding is the slow part here (about 30 texts a second on two cores), so the
benchmark embeds every distinct text once with the project's own embedder and
keeps the chunk embeddings in shards under a cache folder outside the
repository (default ``/tmp/conformance_validation_cache``), keyed by the text's
SHA-256 and the embedder's fingerprint digest.

    /work/venv/bin/python benchmarks/validation_cache.py   # warm the cache with the MT-bench rows
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from conformance.embedder import EmbeddedTexts, get_embedder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mt_bench_answers.jsonl.gz"
CACHE = Path(os.environ.get("CONFORMANCE_VALIDATION_CACHE", "/tmp/conformance_validation_cache"))


def load_rows(path: Path = DATA) -> list[dict[str, str]]:
    """The MT-bench rows, or an empty list when the shared data is absent."""
    if not path.exists():
        return []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Chunk embeddings of texts, embedded once and stored in ``.npz`` shards."""

    def __init__(self, folder: Path = CACHE) -> None:
        self.embedder = get_embedder()
        self.folder = folder / self.embedder.fingerprint_digest
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store: dict[str, tuple[np.ndarray, int]] = {}
        for shard in sorted(self.folder.glob("shard-*.npz")):
            with np.load(shard, allow_pickle=False) as npz:
                keys, chunks, owner, n_tokens = npz["keys"], npz["chunks"], npz["owner"], npz["n_tokens"]
            for j, key in enumerate(keys):
                self.store[str(key)] = (chunks[owner == j], int(n_tokens[j]))

    def embed(self, texts: list[str]) -> EmbeddedTexts:
        """Embeddings of ``texts`` (missing ones are embedded and stored first)."""
        missing = sorted({_key(t): t for t in texts if _key(t) not in self.store}.items())
        step = 256
        for start in range(0, len(missing), step):
            part = missing[start : start + step]
            got = self.embedder.embed([t for _, t in part], progress=False)
            keys = np.array([k for k, _ in part])
            path = self.folder / f"shard-{len(list(self.folder.glob('shard-*.npz'))):05d}.npz"
            np.savez(path, keys=keys, chunks=got.chunks, owner=got.owner, n_tokens=got.n_tokens)
            for j, key in enumerate(keys):
                self.store[str(key)] = (got.chunks[got.owner == j], int(got.n_tokens[j]))
            print(f"embedded {min(start + step, len(missing))}/{len(missing)} new texts", flush=True)
        chunks, owner, n_tokens = [], [], []
        for j, text in enumerate(texts):
            c, n = self.store[_key(text)]
            chunks.append(c)
            owner.append(np.full(c.shape[0], j, dtype=np.int64))
            n_tokens.append(n)
        dim = int(self.embedder.fingerprint["dimension"])
        return EmbeddedTexts(
            chunks=np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32),
            owner=np.concatenate(owner) if owner else np.zeros(0, np.int64),
            n_tokens=np.asarray(n_tokens, dtype=np.int64),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    rows = load_rows()
    if not rows:
        print(f"{DATA} is absent; nothing to cache")
        return
    cache = EmbeddingCache()
    cache.embed(sorted({r["input"] for r in rows}))
    cache.embed([r["output"] for r in rows])
    print(f"cache ready in {cache.folder}: {len(cache.store)} texts")


if __name__ == "__main__":
    main()
