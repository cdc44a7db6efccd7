"""Embedding cache of the validation study: embed each distinct text once, keep it on disk.

Measures nothing itself. Embedding is the slow part of the study (about 30 texts a second on two
cores), so the study embeds every distinct text once with the package's own embedder and keeps
the chunk embeddings in ``.npz`` shards under ``--cache DIR``, keyed by the text's SHA-256 and the
embedder's fingerprint digest. Run on its own, it warms the cache with every MT-bench input and
output (../shared/data, see ``python -m benchmarks.data``), or with ``--arena`` every arena input and
output; ``validation_package`` and ``validation_arena`` use the same folder given as their ``--cache``
and embed whatever is missing.

Cost: about 5-8 minutes on two cores for the 5,120 MT-bench rows the first time; seconds after.

    python -m benchmarks.validation_cache --cache results/embedding_cache [--arena]
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from benchmarks.data import arena_rows, mt_bench_rows
from conformance.embedder import EmbeddedTexts, get_embedder


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Chunk embeddings of texts, embedded once with the packaged embedder and stored in ``.npz`` shards
    under ``folder/<embedder fingerprint digest>``."""

    def __init__(self, folder: Path) -> None:
        self.embedder = get_embedder()
        self.folder = Path(folder) / self.embedder.fingerprint_digest
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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation_cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, metavar="DIR",
                        help="folder of the embedding shards (created if absent; reused by later runs)")
    parser.add_argument("--arena", action="store_true",
                        help="warm it with the arena answers (../shared/data/arena_answers.jsonl.gz) instead")
    args = parser.parse_args()
    rows = arena_rows() if args.arena else mt_bench_rows()
    cache = EmbeddingCache(args.cache)
    cache.embed(sorted({r["input"] for r in rows}))
    cache.embed([r["output"] for r in rows])
    print(f"cache ready in {cache.folder}: {len(cache.store)} texts")


if __name__ == "__main__":
    main()
