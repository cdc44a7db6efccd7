"""The embedding cache: exact (the wrapped embedder's bits), each distinct text embedded once, a corrupt row a
miss, another embedder a miss, nothing written unless asked; and the real embedder's second pass served from it."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import conformance
from conformance.embedder import EmbeddedTexts
from conformance.embedding_cache import CACHE_FILE, CachedEmbedder, default_cache_path, text_key
from tests.conftest import read_jsonl

DIM = 6


class CountingEmbedder:
    """A text becomes ``1 + len(text) // 40`` chunks of seeded unit vectors; every text embedded is counted."""

    def __init__(self, model: str = "counting") -> None:
        self.fingerprint = {"model": model, "source": "tests", "dimension": DIM}
        self.seen: list[str] = []
        self.calls = 0

    def embed(self, texts: list[str], **_: object) -> EmbeddedTexts:
        self.calls += 1
        self.seen.extend(texts)
        rows, owner = [], []
        for j, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            block = np.random.default_rng(seed).normal(size=(1 + len(text) // 40, DIM))
            rows.append(block / np.linalg.norm(block, axis=1, keepdims=True))
            owner.extend([j] * block.shape[0])
        chunks = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, DIM), np.float32)
        return EmbeddedTexts(chunks=chunks, owner=np.asarray(owner, dtype=np.int64),
                             n_tokens=np.asarray([len(t.split()) for t in texts], dtype=np.int64))


TEXTS = ["short", "a long text " * 20, "short", "another", "a long text " * 20, "", "short"]


def same(a: EmbeddedTexts, b: EmbeddedTexts) -> bool:
    return (a.chunks.dtype == b.chunks.dtype and a.chunks.tobytes() == b.chunks.tobytes()
            and np.array_equal(a.owner, b.owner) and np.array_equal(a.n_tokens, b.n_tokens))


def test_without_a_store_each_distinct_text_is_embedded_once_and_the_result_is_exact(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch
                                                                                     ) -> None:
    monkeypatch.chdir(tmp_path)
    inner = CountingEmbedder()
    got = CachedEmbedder(inner).embed(TEXTS)  # type: ignore[arg-type]
    assert sorted(inner.seen) == sorted(set(TEXTS))
    assert same(got, CountingEmbedder().embed(TEXTS))
    assert got.chunks.shape[0] > len(TEXTS)  # the long text has several chunks
    assert list(tmp_path.iterdir()) == []  # no store, no file


def test_a_second_embedder_on_the_same_file_is_served_from_it(tmp_path: Path) -> None:
    path = tmp_path / "store" / CACHE_FILE
    first = CachedEmbedder(CountingEmbedder(), path=path)  # type: ignore[arg-type]
    assert not path.exists()  # opened on first use only
    a = first.embed(TEXTS)
    first.close()
    assert path.exists() and (first.misses, first.hits) == (len(set(TEXTS)), 0)
    inner = CountingEmbedder()
    second = CachedEmbedder(inner, path=path)  # type: ignore[arg-type]
    b = second.embed(TEXTS[::-1])
    assert inner.calls == 0 and (second.hits, second.misses) == (len(set(TEXTS)), 0)
    assert same(b, CountingEmbedder().embed(TEXTS[::-1]))
    assert same(second.embed(TEXTS), a)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_only_the_texts_not_yet_cached_are_embedded(tmp_path: Path) -> None:
    path = tmp_path / CACHE_FILE
    CachedEmbedder(CountingEmbedder(), path=path).embed(["one", "two"])  # type: ignore[arg-type]
    inner = CountingEmbedder()
    got = CachedEmbedder(inner, path=path).embed(["two", "three", "one", "three"])  # type: ignore[arg-type]
    assert inner.seen == ["three"]
    assert same(got, CountingEmbedder().embed(["two", "three", "one", "three"]))


def test_another_fingerprint_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / CACHE_FILE
    CachedEmbedder(CountingEmbedder("model-a"), path=path).embed(["one", "two"])  # type: ignore[arg-type]
    other = CountingEmbedder("model-b")
    CachedEmbedder(other, path=path).embed(["one", "two"])  # type: ignore[arg-type]
    assert other.seen == ["one", "two"]
    assert sqlite3.connect(path).execute("SELECT count(*) FROM embeddings").fetchone()[0] == 4


@pytest.mark.parametrize("damage", [
    "UPDATE embeddings SET chunks = substr(chunks, 1, 7) WHERE text_sha256 = :key",  # truncated
    "UPDATE embeddings SET dimension = 3, n_chunks = 2 WHERE text_sha256 = :key",  # another shape
    "UPDATE embeddings SET chunks = 'text' WHERE text_sha256 = :key",  # not bytes
    "UPDATE embeddings SET n_tokens = -1 WHERE text_sha256 = :key",
    "UPDATE embeddings SET chunks = 42 WHERE text_sha256 = :key",  # an integer
])
def test_a_corrupt_row_is_a_miss_embedded_again_and_overwritten(tmp_path: Path, damage: str) -> None:
    path = tmp_path / CACHE_FILE
    CachedEmbedder(CountingEmbedder(), path=path).embed(["one", "two"])  # type: ignore[arg-type]
    with sqlite3.connect(path) as conn:
        conn.execute(damage, {"key": text_key("one")})
    inner = CountingEmbedder()
    got = CachedEmbedder(inner, path=path).embed(["one", "two"])  # type: ignore[arg-type]
    assert inner.seen == ["one"]
    assert same(got, CountingEmbedder().embed(["one", "two"]))
    again = CountingEmbedder()
    CachedEmbedder(again, path=path).embed(["one", "two"])  # type: ignore[arg-type]
    assert again.seen == []  # the row was overwritten with a good one


def test_a_non_finite_row_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / CACHE_FILE
    CachedEmbedder(CountingEmbedder(), path=path).embed(["one"])  # type: ignore[arg-type]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE embeddings SET chunks = ?", (np.full(DIM, np.nan, dtype="<f4").tobytes(),))
    inner = CountingEmbedder()
    CachedEmbedder(inner, path=path).embed(["one"])  # type: ignore[arg-type]
    assert inner.seen == ["one"]


def test_a_file_that_is_not_a_cache_is_bypassed_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / CACHE_FILE
    path.write_bytes(b"not a database at all " * 100)
    inner = CountingEmbedder()
    with pytest.warns(UserWarning, match="embedding cache .* Deleting the file is safe"):
        got = CachedEmbedder(inner, path=path).embed(TEXTS)  # type: ignore[arg-type]
    assert same(got, CountingEmbedder().embed(TEXTS))
    assert path.read_bytes() == b"not a database at all " * 100


def test_wrapping_twice_is_refused_and_the_fingerprint_is_the_wrapped_ones() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner)  # type: ignore[arg-type]
    assert cached.fingerprint == inner.fingerprint
    with pytest.raises(TypeError, match="already a CachedEmbedder"):
        CachedEmbedder(cached)


# -- the doors: the API's default, and the command line's --no-cache ----------------------------------

def _audited(n: int) -> list[dict[str, str]]:
    return [{"record_id": f"r{i}", "model_version": "m", "input_class": "c", "input": "q", "output": f"0:{i % 5}"}
            for i in range(n)]


def test_in_memory_score_writes_no_cache_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_stat_fdr import FakeEmbedder, _baseline

    monkeypatch.chdir(tmp_path)
    baseline = _baseline()
    fake = FakeEmbedder()
    plain = conformance.score(_audited(20), baselines=[baseline], embedder=fake, progress=False)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    cached = conformance.score(_audited(20), baselines=[baseline], embedder=fake, progress=False,  # type: ignore[arg-type]
                               cache=True)
    assert default_cache_path().is_file() and default_cache_path().parent == tmp_path / "conformance_store"
    again = conformance.score(_audited(20), baselines=[baseline], embedder=fake, progress=False,  # type: ignore[arg-type]
                              cache=True)
    assert [v.p_value for v in plain.verdicts] == [v.p_value for v in cached.verdicts] == \
        [v.p_value for v in again.verdicts]


def test_the_command_line_passes_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance import api
    from conformance.cli import main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(api, "build", lambda *a, **kw: seen.setdefault("build", []).append(kw["cache"]) or [])
    monkeypatch.setattr(api, "score", lambda *a, **kw: seen.setdefault("score", []).append(kw["cache"])
                        or api.ScoreResult([], []))
    with contextlib.redirect_stdout(io.StringIO()):
        for extra in ([], ["--no-cache"]):
            assert main(["build", "approved.jsonl", *extra]) == 0
            assert main(["score", "audited.jsonl", "--out", str(tmp_path / "v.jsonl"), *extra]) == 0
    assert seen == {"build": [True, False], "score": [True, False]}


def test_reconstruct_passes_no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import conformance.ledger
    import conformance.reconstruct
    from conformance.cli.ledger import run
    from conformance.reconstruct import Reconstruction

    class NoLedger:
        def __init__(self, *_: object, **__: object) -> None: ...
        def __enter__(self) -> NoLedger: return self
        def __exit__(self, *_: object) -> None: ...

    seen = []
    monkeypatch.setattr(conformance.ledger, "Ledger", NoLedger)
    monkeypatch.setattr(conformance.reconstruct, "reconstruct", lambda *a, **kw: seen.append(kw["cache"]) or
                        Reconstruction("r", 1, "identical", {}))
    for no_cache in (False, True):
        args = argparse.Namespace(verb="reconstruct", ledger=None, record_id="r", seq=None, no_cache=no_cache,
                                  format="json")
        with contextlib.redirect_stdout(io.StringIO()):
            assert run(args) == 0
    assert seen == [True, False]


@pytest.mark.parametrize("verb", ["build", "score", "reconstruct"])
def test_help_names_the_flag(verb: str) -> None:
    from conformance.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([verb, "--help"])
    assert "--no-cache" in out.getvalue() and "embeddings.db" in out.getvalue()


# -- the real embedder ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_embedder_second_pass_is_served_from_the_cache_bit_identical(embedder, tmp_path: Path) -> None:
    long = " ".join(f"word{i} is followed by another clause about item {i}." for i in range(120))
    texts = ["Your parcel left the warehouse today.", long, "Refunds take 5 days.", long,
             "Your parcel left the warehouse today."]
    direct = embedder.embed(texts, progress=False)
    assert direct.chunks.shape[0] > len(texts)  # the long text spans several windows
    path = tmp_path / CACHE_FILE
    first = CachedEmbedder(embedder, path=path)
    assert same(first.embed(texts, progress=False), direct) and first.misses == 3
    second = CachedEmbedder(embedder, path=path)
    assert same(second.embed(texts, progress=False), direct)
    assert (second.hits, second.misses) == (3, 0)


@pytest.mark.slow
def test_score_twice_through_the_command_line_gives_the_same_verdicts(built: list[dict], audited_subset: Path,
                                                                     workdir: Path) -> None:
    from conformance.cli import main

    def run(name: str, *extra: str) -> list[dict]:
        out = workdir / f"cache-{name}.jsonl"
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["score", str(audited_subset), "--out", str(out), "--no-progress", "--ledger",
                         "sqlite:///" + str(workdir / f"cache-{name}-ledger.db"), *extra])
        assert code == 1
        return [{k: v for k, v in row.items() if k != "scored_at"} for row in read_jsonl(out)]

    uncached = run("none", "--no-cache")
    first, second = run("first"), run("second")
    assert first == second == uncached
    scored = {v["record_id"] for v in first if v["verdict"] in ("within_bounds", "out_of_bounds")}
    keys = {row[0] for row in sqlite3.connect(workdir / "conformance_store" / CACHE_FILE).execute(
        "SELECT text_sha256 FROM embeddings")}
    outputs = [r["output"] for r in read_jsonl(audited_subset) if r.get("record_id") in scored]
    assert outputs and all(text_key(o) in keys for o in outputs)
