"""The packaged embedder: an embedding depends on its own text only, never on its batch."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_an_embedding_is_the_same_bits_in_any_batch(embedder) -> None:
    # Re-embedding one stored output (`conformance reconstruct`) must give the bits it had in its original
    # batch. Without filling every batch to the same number of rows, a text embedded with 2-6 others of
    # its length differed from the same text alone in the seventh digit (torch 2.13, transformers 5.24).
    rng = np.random.default_rng(0)
    words = "the parcel refund order arrive business days account please contact support sorry delay".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(5, 25)))) for _ in range(80)]
    target = texts[0]
    alone = embedder.embed([target], progress=False).chunks[0]
    for size in (2, 3, 4, 5, 6, 7, 17, 65, 80):  # within one batch, and across batch boundaries
        others = [texts[i] for i in rng.permutation(np.arange(1, 80))[: size - 1]]
        position = int(rng.integers(0, size))
        batch = others[:position] + [target] + others[position:]
        got = embedder.embed(batch, progress=False)
        assert np.array_equal(got.chunks[got.owner == position][0], alone), (size, position)


@pytest.mark.slow
def test_the_fingerprint_needs_no_model_load_and_matches_the_loaded_model() -> None:
    """A run whose texts are all in the embedding cache never loads the model: the fingerprint comes from
    the model folder's files, and is the same once the model is loaded."""
    import subprocess
    import sys

    code = ("import sys\nfrom conformance.embedder import Embedder\ne = Embedder()\nbefore = e.fingerprint\n"
            "assert 'sentence_transformers' not in sys.modules and 'torch' not in sys.modules, 'loaded'\n"
            "e.model\ne._fingerprint = None\nassert e.fingerprint == before, (e.fingerprint, before)\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "ok", done.stderr
