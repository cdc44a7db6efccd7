"""Text descriptors of an output: length, refusal markers, script, formatting, window coverage.

Each descriptor is a fixed function of the output text (and its length in word
pieces), so a score built from them keeps the conformal guarantee whatever they
are. They catch what an embedding blurs: a truncated answer, a refusal, an
answer in another language or script, a wall of code where prose was usual.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

DESCRIPTORS = (
    "log_tokens",        # log(1 + word pieces)
    "log_chars",         # log(1 + characters)
    "refusal_markers",   # phrases such as "I'm sorry", "I cannot", "as an AI"
    "non_ascii_letters",  # share of letters outside ASCII (another script or language)
    "list_lines",        # lines that start with a bullet or a number
    "heading_lines",     # Markdown headings
    "code_blocks",       # fenced code blocks
    "window_coverage",   # share of the word pieces inside the embedder's first window
)

_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:'|no)?t|i cannot|i am unable|i'?m unable|"
    r"as an ai|as a language model|i (?:do not|don'?t) have (?:the ability|access)|"
    r"i won'?t be able|not able to (?:help|assist|provide))\b",
    re.IGNORECASE,
)
_LIST = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.MULTILINE)
_HEADING = re.compile(r"^\s*#{1,6}\s+\S", re.MULTILINE)
_FENCE = re.compile(r"^\s*```", re.MULTILINE)


def describe(texts: Sequence[str], n_tokens: Sequence[int] | None = None, *, window: int = 254) -> np.ndarray:
    """Descriptor matrix of ``texts``, one row per text, columns as :data:`DESCRIPTORS`.

    Parameters
    ----------
    texts : sequence of str
        The outputs.
    n_tokens : sequence of int, optional
        Their lengths in the embedder's word pieces; without it, whitespace
        words stand in.
    window : int, default 254
        Word pieces one embedder window holds.

    Examples
    --------
    >>> d = describe(["I'm sorry, I cannot help with that.", "# Plan\\n- one\\n- two"], [10, 8])
    >>> dict(zip(DESCRIPTORS, d[0].round(2)))["refusal_markers"], int(d[1, DESCRIPTORS.index("list_lines")])
    (np.float64(2.0), 2)
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if n_tokens is not None and len(n_tokens) != len(texts):
        raise ValueError(f"n_tokens must have one length per text ({len(texts)}), got {len(n_tokens)}")
    out = np.zeros((len(texts), len(DESCRIPTORS)), dtype=np.float64)
    for i, text in enumerate(texts):
        tokens = int(n_tokens[i]) if n_tokens is not None else len(text.split())
        letters = [c for c in text if c.isalpha()]
        non_ascii = sum(1 for c in letters if not c.isascii()) / len(letters) if letters else 0.0
        out[i] = (
            np.log1p(tokens),
            np.log1p(len(text)),
            len(_REFUSAL.findall(text)),
            non_ascii,
            len(_LIST.findall(text)),
            len(_HEADING.findall(text)),
            len(_FENCE.findall(text)) // 2 + len(_FENCE.findall(text)) % 2,
            min(1.0, window / tokens) if tokens > 0 else 1.0,
        )
    return out
