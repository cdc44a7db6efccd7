"""Style counts of an output: how often it uses each word, punctuation mark and pair of them, and how its lines
and the answer open and close.

A silent model update often keeps what a model says and changes how it says it: the words it reaches for
("certainly", "however", "overall"), its punctuation, how it opens and closes an answer. Stylometry has long
told authors apart by the relative frequencies of their most frequent words (Burrows 2002, "Delta: a measure of
stylistic difference and a guide to likely authorship"); this module gives the batch test the same view.

Each output is split into tokens (runs of letters, with an apostrophe suffix such as "'s"; runs of digits; any
other single character but white space), letters lower-cased. Its **style counts** are the relative frequencies
of its tokens (unigrams) and of its pairs of adjacent tokens (bigrams), each hashed into :data:`BUCKETS` buckets
by a fixed function (SHA-256, :func:`style_counts`), so the columns mean the same in every baseline and release
and need no vocabulary fitted on anything. A third block of columns holds its **shape tokens**: the first two
tokens of each of its non-empty lines (a list item's "- **", a numbered step's "1 .", a heading's "# #", a
paragraph's first word), as a share of its lines, and its first three and last three tokens, each at its
position (the opener "certainly !" and the closer "help ."). The counts are a fixed function of the text: a
batch test on them stays exact.

The batch test (:mod:`conformance.stats.conditional_batch`) then keeps, of the pooled sample (the batch and the
reference together, label-blind), the :data:`TOP` unigram buckets and the :data:`TOP` bigram buckets that the most
outputs use for one statistic, and the :data:`TOP` shape buckets for another (:func:`frequent_columns`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import sparse

#: Hash buckets per block: the first ``BUCKETS`` columns hold unigrams, the next ``BUCKETS`` bigrams, the last
#: ``BUCKETS`` shape tokens (enough that the frequent ones rarely share a bucket with each other).
BUCKETS = 1 << 16
#: The blocks of the style counts, in column order.
BLOCKS = ("unigrams", "bigrams", "shape")
#: Columns of the style counts. Baselines of format 5-7 stored the first two blocks only; read with this width,
#: their shape block is empty, and their batch tests use the first two.
WIDTH = len(BLOCKS) * BUCKETS
#: Tokens at the start of each line, and at the start and the end of the answer, that the shape block keeps.
LINE_TOKENS, END_TOKENS = 2, 3
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


def shape_tokens(text: str) -> dict[str, float]:
    """The shape tokens of ``text`` and their weights: ``line:<first two tokens>`` of each non-empty line, weighted
    by its share of the lines, and ``open<k>:<token>`` / ``close<k>:<token>`` for the first and last three tokens
    (``k`` counted from the start and from the end), weight one each.

    Examples
    --------
    >>> shape = shape_tokens("Sure! Here:\\n- one\\n- two")
    >>> [(key, round(weight, 3)) for key, weight in shape.items() if key.startswith("line:")]
    [('line:sure !', 0.333), ('line:- one', 0.333), ('line:- two', 0.333)]
    >>> [key for key in shape if not key.startswith("line:")]
    ['open0:sure', 'open1:!', 'open2:here', 'close0:two', 'close1:-', 'close2:one']
    """
    out: dict[str, float] = {}
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        key = "line:" + " ".join(tokens(line)[:LINE_TOKENS])
        out[key] = out.get(key, 0.0) + 1.0 / len(lines)
    toks = tokens(text)
    for k, token in enumerate(toks[:END_TOKENS]):
        out[f"open{k}:{token}"] = 1.0
    for k, token in enumerate(toks[::-1][:END_TOKENS]):
        out[f"close{k}:{token}"] = 1.0
    return out


def style_counts(texts: Sequence[str]) -> sparse.csr_matrix:
    """Relative frequencies of the hashed unigrams and bigrams of each text, and its hashed shape tokens
    (:func:`shape_tokens`): a sparse matrix of shape ``(len(texts), WIDTH)``, float32 (a text without tokens is a
    row of zeros).

    A token's hash is the first 64 bits of the SHA-256 of its UTF-8 bytes, ``H``; a unigram's bucket is
    ``H(t) mod BUCKETS``, a bigram's ``(H(a) * m + H(b)) mod 2**64 mod BUCKETS`` with ``m`` a fixed odd constant, a
    shape token's ``H(key) mod BUCKETS`` in the third block.

    Examples
    --------
    >>> counts = style_counts(["Sure! Sure."])
    >>> float(counts[0, :BUCKETS].sum()), float(counts[0, BUCKETS:2 * BUCKETS].sum()), counts[0, 2 * BUCKETS:].nnz
    (1.0, 1.0, 7)
    """
    rows, cols, weights = [], [], []
    for i, text in enumerate(texts):
        toks = tokens(text)
        n = len(toks)
        if n == 0:
            continue
        h = np.fromiter((_hash64(t) for t in toks), dtype=np.uint64, count=n)
        shape = shape_tokens(text)
        rows.append(np.full(2 * n - 1 + len(shape), i, dtype=np.int64))
        cols.append(np.concatenate([(h % np.uint64(BUCKETS)).astype(np.int64),
                                    BUCKETS + ((h[:-1] * _MIX + h[1:]) % np.uint64(BUCKETS)).astype(np.int64),
                                    2 * BUCKETS + np.array([_hash64(k) % BUCKETS for k in shape], dtype=np.int64)]))
        weights.append(np.concatenate([np.full(n, 1.0 / n), np.full(n - 1, 1.0 / max(n - 1, 1)),
                                       np.fromiter(shape.values(), dtype=np.float64, count=len(shape))]))
    if not rows:
        return sparse.csr_matrix((len(texts), WIDTH), dtype=np.float32)
    # Duplicates (a token's every occurrence) are summed per row, in float64, then stored as float32.
    counts = sparse.coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(len(texts), WIDTH)).tocsr()
    counts.sum_duplicates()
    counts.sort_indices()
    return sparse.csr_matrix((counts.data.astype(np.float32), counts.indices.astype(np.int32),
                              counts.indptr.astype(np.int64)), shape=counts.shape)


def frequent_columns(counts: sparse.spmatrix, top: int = TOP, blocks: Sequence[str] = BLOCKS[:2]) -> np.ndarray:
    """The columns of ``counts`` a batch statistic keeps: of each of ``blocks`` (of :data:`BLOCKS`; by default the
    unigrams and bigrams), the ``top`` buckets that the most rows use (ties broken by column; never a bucket no row
    uses), in block order. Sees no labels."""
    if counts.ndim != 2 or counts.shape[1] != WIDTH:
        raise ValueError(f"style counts must have shape (n, {WIDTH}), got {counts.shape}")
    unknown = [b for b in blocks if b not in BLOCKS]
    if unknown:
        raise ValueError(f"unknown style block(s) {unknown}; known: {', '.join(BLOCKS)}")
    total = np.asarray((sparse.csr_matrix(counts) > 0).sum(axis=0)).ravel().astype(np.float64)
    keep = []
    for start in (BLOCKS.index(b) * BUCKETS for b in blocks):
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
    return sparse.csr_matrix((values, columns, indptr), shape=(len(rows), WIDTH))
