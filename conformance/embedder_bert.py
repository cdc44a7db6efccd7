"""The packaged model's torch backend without sentence-transformers or transformers' model classes.

all-MiniLM-L6-v2 is three sentence-transformers modules: a BERT encoder, mean pooling and
normalisation. Loading it through sentence-transformers (or transformers' ``AutoModel``) imports
several seconds of machinery that a forward pass does not use, and a one-record ``conformance score``
pays for it every time. :class:`MeanPooledBert` runs the same folder with two small pieces instead:

* :class:`WordPieces`, the folder's ``tokenizer.json`` run by the ``tokenizers`` library (the Rust
  tokenizer inside transformers' fast tokenizers), called with the subset of transformers' tokenizer
  API the embedder uses;
* :class:`BertEncoder`, the BERT forward pass written out in torch functions, operation for operation
  as transformers computes it in inference (embeddings, six layers of scaled-dot-product attention and
  a GELU feed-forward, each followed by layer normalisation), on the ``model.safetensors`` weights.

The mean pooling and normalisation are sentence-transformers' own arithmetic. The result is the same
bits as sentence-transformers on the same batch (``tests/test_embedder.py`` compares them on short,
chunked, empty and non-Latin texts, and the tokenizers' outputs), so fingerprints and stored verdicts
are unchanged. A folder this module does not fit (another architecture, pooling or tokenizer) is
loaded by sentence-transformers, as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from conformance.errors import ConformanceError

#: sentence-transformers' module types, in order, of a folder this module runs.
MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
           "sentence_transformers.models.Normalize")


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def fits(path: Path) -> bool:
    """Whether ``path`` is a Transformer, mean Pooling, Normalize folder of an absolute-position BERT encoder with
    GELU, a WordPiece ``tokenizer.json`` and ``model.safetensors``: what :class:`MeanPooledBert` runs exactly."""
    try:
        modules = _json(path / "modules.json")
        pooling = _json(path / "1_Pooling" / "config.json")
        st_config = _json(path / "sentence_bert_config.json")
        config = _json(path / "config.json")
        tokenizer = _json(path / "tokenizer.json")
    except (OSError, ValueError):
        return False
    if not (isinstance(modules, list) and all(isinstance(m, dict) for m in modules) and isinstance(pooling, dict)
            and isinstance(st_config, dict) and isinstance(config, dict) and isinstance(tokenizer, dict)):
        return False
    modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode")}
    model = tokenizer.get("model")
    return (tuple(m.get("type") for m in modules) == MODULES
            and [m.get("path") for m in modules] == ["", "1_Pooling", "2_Normalize"]
            and modes.get("pooling_mode_mean_tokens") is True
            and not any(v for k, v in modes.items() if k != "pooling_mode_mean_tokens")
            and isinstance(st_config.get("max_seq_length"), int) and not st_config.get("do_lower_case", False)
            and config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and not config.get("is_decoder", False) and not config.get("add_cross_attention", False)
            and isinstance(model, dict) and model.get("type") == "WordPiece"
            and (path / "model.safetensors").is_file())


class WordPieces:
    """``tokenizer.json`` through ``tokenizers``, called like a transformers fast tokenizer (the calls the embedder
    makes: one text with offsets and no special tokens; several texts' ids; a padded, truncated batch)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        padding = _json(path / "tokenizer.json").get("padding") or {}
        self._pad_token = str(padding.get("pad_token", "[PAD]"))
        pad_id = self._tokenizer.token_to_id(self._pad_token)
        self._pad_id = int(padding.get("pad_id", 0 if pad_id is None else pad_id))
        self._pad_type_id = int(padding.get("pad_type_id", 0))

    def __call__(self, texts: str | list[str], *, add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False, padding: bool | str = False, max_length: int | None = None,
                 truncation: bool = False, return_tensors: str | None = None) -> dict[str, Any]:
        tokenizer = self._tokenizer
        if truncation:
            if max_length is None:
                raise ValueError("truncation needs max_length")
            tokenizer.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
        else:
            tokenizer.no_truncation()
        if padding == "max_length":
            if max_length is None:
                raise ValueError("padding='max_length' needs max_length")
            tokenizer.enable_padding(direction="right", pad_id=self._pad_id, pad_type_id=self._pad_type_id,
                                     pad_token=self._pad_token, length=max_length)
        elif not padding:
            tokenizer.no_padding()
        else:
            raise ValueError(f"padding={padding!r} is not supported; use 'max_length' or False")
        single = isinstance(texts, str)
        encodings = tokenizer.encode_batch([texts] if single else texts, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings],
                               "token_type_ids": [e.type_ids for e in encodings],
                               "attention_mask": [e.attention_mask for e in encodings]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        if return_tensors == "np":
            return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'np'")
        return {k: v[0] for k, v in out.items()} if single else out


class BertEncoder:
    """A BERT encoder's forward pass in inference (no dropout), on a ``model.safetensors`` of transformers' names.

    Returns the last hidden state, as ``transformers.BertModel`` with scaled-dot-product attention computes it:
    the same torch functions on tensors of the same shapes and layouts, so the same bits."""

    def __init__(self, path: Path) -> None:
        from safetensors.torch import load_file

        config = _json(path / "config.json")
        self.hidden_size = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.pad_token_id = int(config.get("pad_token_id", 0))
        if self.hidden_size % self.heads:
            raise ConformanceError(f"{path / 'config.json'}: hidden_size {self.hidden_size} is not a multiple of "
                                   f"num_attention_heads {self.heads}")
        self.head_size = self.hidden_size // self.heads
        weights = load_file(str(path / "model.safetensors"))
        # Some checkpoints name the encoder's weights under "bert.".
        self.weights = {name.removeprefix("bert."): tensor for name, tensor in weights.items()}
        layer = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
        needed = [f"embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings",
                                                      "token_type_embeddings", "LayerNorm")]
        needed += [f"encoder.layer.{i}.{n}.{p}" for i in range(self.layers) for n in layer for p in ("weight", "bias")]
        missing = [name for name in needed if name not in self.weights]
        if missing:
            raise ConformanceError(f"{path / 'model.safetensors'} lacks {len(missing)} BERT weights "
                                   f"(first: {missing[0]}); it is not the model its config.json describes")

    def _linear(self, x: Any, name: str) -> Any:
        import torch

        return torch.nn.functional.linear(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"])

    def _norm(self, x: Any, name: str) -> Any:
        import torch

        return torch.nn.functional.layer_norm(x, (self.hidden_size,), self.weights[f"{name}.weight"],
                                              self.weights[f"{name}.bias"], self.eps)

    def __call__(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        import torch

        functional = torch.nn.functional
        w = self.weights
        batch, length = input_ids.shape
        positions = torch.arange(w["embeddings.position_embeddings.weight"].shape[0])[None, :length]
        x = functional.embedding(input_ids, w["embeddings.word_embeddings.weight"], padding_idx=self.pad_token_id)
        x = x + functional.embedding(token_type_ids, w["embeddings.token_type_embeddings.weight"])
        x = x + functional.embedding(positions, w["embeddings.position_embeddings.weight"])
        x = self._norm(x, "embeddings.LayerNorm")
        # No mask when nothing is padded; else a boolean mask of the keys, broadcast as transformers builds it.
        mask = (None if bool(attention_mask.all())
                else attention_mask.bool()[:, None, None, :].expand(batch, -1, length, length))
        heads = (batch, length, -1, self.head_size)
        for i in range(self.layers):
            prefix = f"encoder.layer.{i}."
            query = self._linear(x, prefix + "attention.self.query").view(*heads).transpose(1, 2)
            key = self._linear(x, prefix + "attention.self.key").view(*heads).transpose(1, 2)
            value = self._linear(x, prefix + "attention.self.value").view(*heads).transpose(1, 2)
            attended = functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0,
                                                               scale=self.head_size**-0.5, is_causal=False)
            attended = attended.reshape(batch, -1, length, self.head_size).transpose(1, 2).contiguous()
            attended = attended.reshape(batch, length, -1).contiguous()
            x = self._norm(self._linear(attended, prefix + "attention.output.dense") + x,
                           prefix + "attention.output.LayerNorm")
            inner = functional.gelu(self._linear(x, prefix + "intermediate.dense"))
            x = self._norm(self._linear(inner, prefix + "output.dense") + x, prefix + "output.LayerNorm")
        return x


class MeanPooledBert:
    """A :func:`fits` folder: :class:`WordPieces`, :class:`BertEncoder`, then sentence-transformers' mean pooling
    and normalisation. Called on a batch of features (torch tensors), returns ``{"sentence_embedding": ...}``."""

    def __init__(self, path: Path) -> None:
        self.tokenizer = WordPieces(path)
        self.encoder = BertEncoder(path)
        self.max_seq_length = int(_json(path / "sentence_bert_config.json")["max_seq_length"])

    def get_embedding_dimension(self) -> int:
        return self.encoder.hidden_size

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        import torch

        mask_ids = features["attention_mask"]
        types = features.get("token_type_ids")
        hidden = self.encoder(features["input_ids"], mask_ids,
                              torch.zeros_like(features["input_ids"]) if types is None else types)
        # sentence-transformers' Pooling (mean) then Normalize, operation for operation.
        mask = mask_ids.unsqueeze(-1).to(hidden.dtype)
        total = (hidden * mask).sum(dim=1, dtype=hidden.dtype)
        count = torch.clamp(mask.sum(dim=1, dtype=hidden.dtype), min=1e-9)
        return {"sentence_embedding": torch.nn.functional.normalize(total / count, p=2, dim=-1)}
