"""Text descriptors of an output: length, refusal markers, script, formatting, window coverage.

Each descriptor is a fixed function of the output text (and its length in word
pieces; the two ``*_vs_input`` descriptors also of its input), so a score built
from them keeps the conformal guarantee whatever they are. They catch what an
embedding blurs: a truncated answer, a refusal, an answer in another language or
script than it was asked in, a wall of code where prose was usual.
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
    "foreign_function_words",  # share of words that are function words of another European language
)
#: The language descriptors measured against the input: how far the output's share exceeds its input's (0 when it
#: does not). An answer in Spanish to a question in Spanish is 0; an answer in German to a question in English is
#: not; an answer in English to a question that quotes a Chinese poem is 0 too (the input's share above the output's
#: is common, a request to translate into English, and would only widen the scale of the descriptor).
INPUT_RELATIVE = ("non_ascii_letters_vs_input", "foreign_function_words_vs_input")
#: The descriptors of the per-output score of baselines built since 0.8.0: the language is taken against the
#: input's. In a cell whose approved prompts are partly in other languages, the output-only shares of the answers
#: to those prompts set the calibration part's largest scores, above most answers to another question
#: (docs/validation.md, section 10.3). The conditional batch test keeps :data:`DESCRIPTORS` (it removes what the
#: input predicts itself).
SCORE_DESCRIPTORS = (*DESCRIPTORS, *INPUT_RELATIVE)
#: Every descriptor :func:`describe` computes (today the score's).
KNOWN_DESCRIPTORS = SCORE_DESCRIPTORS

_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:'|no)?t|i cannot|i am unable|i'?m unable|"
    r"as an ai|as a language model|i (?:do not|don'?t) have (?:the ability|access)|"
    r"i won'?t be able|not able to (?:help|assist|provide))\b",
    re.IGNORECASE,
)
#: The smallest difference of each descriptor that matters, in its own unit: 0.1 in log length (about
#: 10 % longer or shorter), one refusal phrase, list line, heading or code block, a share of 0.05. The
#: combined score's scale of a descriptor is never below its unit / 2.576 (see ``CombinedScorer.fit``).
DESCRIPTOR_UNITS = {
    "log_tokens": 0.1, "log_chars": 0.1, "refusal_markers": 1.0, "non_ascii_letters": 0.05,
    "list_lines": 1.0, "heading_lines": 1.0, "code_blocks": 1.0, "window_coverage": 0.05,
    "foreign_function_words": 0.05, "non_ascii_letters_vs_input": 0.05, "foreign_function_words_vs_input": 0.05,
}

#: Common function words of German, French, Spanish, Italian, Portuguese and Dutch, minus words that
#: also occur in English text or mathematics ("in", "an", "was", "will", "die", "war", "per", "non", "son",
#: "sin", "al" as in "et al.", one-letter words such as "y" or "a"). A language switch to one of these
#: keeps the Latin script, so the share of non-ASCII letters barely moves (about 2 % for German); the
#: share of these words moves far more (docs/validation.md, section 3.3).
_FOREIGN = frozenset("""
der das und ist nicht sie ich mit von zu dem des ein eine einen einer eines auf für sich auch werden wird
sind oder wenn dass kann können aus bei nach wie über noch nur durch zum zur diese dieser dieses wir ihr
sein haben ihre unter
le la les une est dans pour pas sur avec cette sont vous nous elle ils aux par mais être avoir leur été peut
comme qui que du au ces ses lui très aussi sans entre
los las del por con para una se su como más pero sus ya este esta cuando muy sobre también hasta hay
donde desde todo nos durante puede tiene ser
il di che della delle dei degli nel nella alla anche più questo questa sono gli ha hanno essere molto tra
fra
não uma são muito pelo pela mais seu sua
het een niet ook zijn maar voor dat wordt deze naar bij worden
""".split())
_WORD = re.compile(r"[^\W\d_]{2,}")
_LIST = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.MULTILINE)
_HEADING = re.compile(r"^\s*#{1,6}\s+\S", re.MULTILINE)
_FENCE = re.compile(r"^\s*```", re.MULTILINE)


def describe(
    texts: Sequence[str], n_tokens: Sequence[int] | None = None, *, window: int = 254,
    names: Sequence[str] = DESCRIPTORS, inputs: Sequence[str] | None = None,
) -> np.ndarray:
    """Descriptor matrix of ``texts``, one row per text, columns as ``names`` (:data:`DESCRIPTORS`
    by default; a baseline built before a descriptor existed asks for the ones it was fitted with).

    Parameters
    ----------
    texts : sequence of str
        The outputs.
    n_tokens : sequence of int, optional
        Their lengths in the embedder's word pieces; without it, whitespace
        words stand in.
    window : int, default 254
        Word pieces one embedder window holds.
    names : sequence of str, default DESCRIPTORS
        Which descriptors (of :data:`KNOWN_DESCRIPTORS`), in which order.
    inputs : sequence of str, optional
        The outputs' inputs, one per text: needed for the :data:`INPUT_RELATIVE` descriptors.

    Examples
    --------
    >>> d = describe(["I'm sorry, I cannot help with that.", "# Plan\\n- one\\n- two"], [10, 8])
    >>> dict(zip(DESCRIPTORS, d[0].round(2)))["refusal_markers"], int(d[1, DESCRIPTORS.index("list_lines")])
    (np.float64(2.0), 2)
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    unknown = [n for n in names if n not in KNOWN_DESCRIPTORS]
    if unknown:
        raise ValueError(f"unknown descriptor(s) {unknown}; known: {', '.join(KNOWN_DESCRIPTORS)}")
    if n_tokens is not None and len(n_tokens) != len(texts):
        raise ValueError(f"n_tokens must have one length per text ({len(texts)}), got {len(n_tokens)}")
    relative = any(n in INPUT_RELATIVE for n in names)
    if relative and (inputs is None or len(inputs) != len(texts)):
        raise ValueError(f"the descriptors {', '.join(INPUT_RELATIVE)} need the inputs, one per text "
                         f"({len(texts)}), got {'none' if inputs is None else len(inputs)}: pass inputs=[...] "
                         "in the texts' order, or leave those descriptors out of names")
    out = np.zeros((len(texts), len(KNOWN_DESCRIPTORS)), dtype=np.float64)
    for i, text in enumerate(texts):
        tokens = int(n_tokens[i]) if n_tokens is not None else len(text.split())
        non_ascii, foreign = _language(text)
        in_non_ascii, in_foreign = _language(inputs[i]) if relative and inputs is not None else (0.0, 0.0)
        out[i] = (
            np.log1p(tokens),
            np.log1p(len(text)),
            len(_REFUSAL.findall(text)),
            non_ascii,
            len(_LIST.findall(text)),
            len(_HEADING.findall(text)),
            len(_FENCE.findall(text)) // 2 + len(_FENCE.findall(text)) % 2,
            min(1.0, window / tokens) if tokens > 0 else 1.0,
            foreign,
            max(0.0, non_ascii - in_non_ascii),
            max(0.0, foreign - in_foreign),
        )
    return out[:, [KNOWN_DESCRIPTORS.index(n) for n in names]]


def _language(text: str) -> tuple[float, float]:
    """The share of letters outside ASCII, and of words that are :data:`_FOREIGN` function words."""
    letters = [c for c in text if c.isalpha()]
    non_ascii = sum(1 for c in letters if not c.isascii()) / len(letters) if letters else 0.0
    words = [w.lower() for w in _WORD.findall(text)]
    return non_ascii, sum(1 for w in words if w in _FOREIGN) / len(words) if words else 0.0
