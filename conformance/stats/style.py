"""Style counts of an output: how often it uses each word, punctuation mark and pair of them.

A silent model update often keeps what a model says and changes how it says it: the words it reaches for
("certainly", "however", "overall"), its punctuation, how it opens and closes an answer. Stylometry has long
told authors apart by the relative frequencies of their most frequent words (Burrows 2002, "Delta: a measure of
stylistic difference and a guide to likely authorship"); this module gives the batch test the same view.

Each output is split into tokens (runs of letters, with an apostrophe suffix such as "'s"; runs of digits; any
other single character but white space), letters lower-cased. Its **style counts** are the relative frequencies
of its tokens (unigrams) and of its pairs of adjacent tokens (bigrams), each hashed into :data:`BUCKETS` buckets
by a fixed function (SHA-256, :func:`style_counts`), so the columns mean the same in every baseline and release
and need no vocabulary fitted on anything. The counts are a fixed function of the text: a batch test on them stays
exact.

The batch test (:mod:`conformance.stats.conditional_batch`) then keeps, of the pooled sample (the batch and the
reference together, label-blind), the :data:`TOP` unigram buckets and the :data:`TOP` bigram buckets that the most
outputs use (:func:`frequent_columns`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import sparse

#: Hash buckets per n-gram order: the first ``BUCKETS`` columns hold unigrams, the next ``BUCKETS`` bigrams (enough
#: that the frequent ones rarely share a bucket with each other).
BUCKETS = 1 << 16
#: Columns per order the batch test keeps: the most frequent of the pooled sample.
TOP = 200
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+|[^\w\s]|_")


def tokens(text: str) -> list[str]:
    """The style tokens of ``text``: words (lower-cased), numbers and single punctuation marks, in order."""
    return [t.lower() for t in _TOKEN.findall(text)]


@lru_cache(maxsize=200_000)
def _hash64(token: str) -> int:
    return int.from_bytes(hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()[:8], "big")


#: Odd 64-bit multiplier (the golden ratio's) that mixes a bigram's first token into its hash.
_MIX = np.uint64(0x9E3779B97F4A7C15)


def style_counts(texts: Sequence[str]) -> sparse.csr_matrix:
    """Relative frequencies of the hashed unigrams and bigrams of each text: a sparse matrix of shape
    ``(len(texts), 2 * BUCKETS)``, float32 (a text without tokens is a row of zeros).

    A token's hash is the first 64 bits of the SHA-256 of its UTF-8 bytes, ``H``; a unigram's bucket is
    ``H(t) mod BUCKETS``, a bigram's ``(H(a) * m + H(b)) mod 2**64 mod BUCKETS`` with ``m`` a fixed odd constant.

    Examples
    --------
    >>> counts = style_counts(["Sure! Sure."])
    >>> float(counts[0, :BUCKETS].sum()), float(counts[0, BUCKETS:].sum()), counts.nnz
    (1.0, 1.0, 6)
    """
    rows, cols, weights = [], [], []
    for i, text in enumerate(texts):
        toks = tokens(text)
        n = len(toks)
        if n == 0:
            continue
        h = np.fromiter((_hash64(t) for t in toks), dtype=np.uint64, count=n)
        rows.append(np.full(2 * n - 1, i, dtype=np.int64))
        cols.append(np.concatenate([(h % np.uint64(BUCKETS)).astype(np.int64),
                                    BUCKETS + ((h[:-1] * _MIX + h[1:]) % np.uint64(BUCKETS)).astype(np.int64)]))
        weights.append(np.concatenate([np.full(n, 1.0 / n), np.full(n - 1, 1.0 / max(n - 1, 1))]))
    if not rows:
        return sparse.csr_matrix((len(texts), 2 * BUCKETS), dtype=np.float32)
    # Duplicates (a token's every occurrence) are summed per row, in float64, then stored as float32.
    counts = sparse.coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(len(texts), 2 * BUCKETS)).tocsr()
    counts.sum_duplicates()
    counts.sort_indices()
    return sparse.csr_matrix((counts.data.astype(np.float32), counts.indices.astype(np.int32),
                              counts.indptr.astype(np.int64)), shape=counts.shape)


def frequent_columns(counts: sparse.spmatrix, top: int = TOP) -> np.ndarray:
    """The columns of ``counts`` the batch test keeps: the ``top`` unigram and the ``top`` bigram buckets that the
    most rows use (ties broken by column; never a bucket no row uses), unigrams first. Sees no labels."""
    if counts.ndim != 2 or counts.shape[1] != 2 * BUCKETS:
        raise ValueError(f"style counts must have shape (n, {2 * BUCKETS}), got {counts.shape}")
    total = np.asarray((sparse.csr_matrix(counts) > 0).sum(axis=0)).ravel().astype(np.float64)
    keep = []
    for start in (0, BUCKETS):
        part = total[start:start + BUCKETS]
        order = np.lexsort((np.arange(BUCKETS), -part))[:top]
        keep.append(start + np.sort(order[part[order] > 0]))
    return np.concatenate(keep)


def style_rows(counts: sparse.csr_matrix) -> list[np.ndarray]:
    """Each row of sparse style counts as a ``(2, nnz)`` array, its columns and values (exact: float32 values and
    integer columns below 2**53 survive float64), the form a batch's accumulator keeps (:func:`style_matrix`)."""
    return [np.vstack([counts.indices[a:b].astype(np.float64), counts.data[a:b].astype(np.float64)])
            for a, b in zip(counts.indptr[:-1], counts.indptr[1:])]


def style_matrix(rows: Sequence[np.ndarray]) -> sparse.csr_matrix:
    """The sparse style counts of rows made by :func:`style_rows`, values float32 as the baseline's."""
    indptr = np.cumsum([0] + [r.shape[1] for r in rows])
    columns = np.concatenate([r[0] for r in rows]).astype(np.int32) if rows else np.zeros(0, np.int32)
    values = np.concatenate([r[1] for r in rows]).astype(np.float32) if rows else np.zeros(0, np.float32)
    return sparse.csr_matrix((values, columns, indptr), shape=(len(rows), 2 * BUCKETS))
