"""Random token models for the hybrid (host + accelerator) tests: MLPs over (B, T, D) and
BERT-style encoder layers, quantized W4A8 by one of our methods (``methods.prepare``)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from rmsmp.quant.methods import prepare
from rmsmp.quant.nlp import minilm_method
from rmsmp.quant.qat import ActQuantizer


class TokenMLP(nn.Module):
    """Linears over the last dim of (B, T, D), ReLU between them (all on the accelerator)."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k + 1 < len(self.layers):
                x = F.relu(x)
        return x


class EncoderLayer(nn.Module):
    """A post-LayerNorm BERT encoder layer: multi-head attention (optionally masked), residual
    + LayerNorm, a GELU feed-forward, residual + LayerNorm."""

    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.up, self.down = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)
        ctx = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(x.shape)
        h = self.ln1(x + self.o(ctx))
        return self.ln2(h + self.down(F.gelu(self.up(h))))


def token_mlp(rng: np.random.Generator) -> tuple[nn.Module, tuple[int, ...]]:
    """A random MLP (2-4 Linears, widths 4-40) and its per-sample input shape (T, D) or
    (T1, T2, D)."""
    widths = [int(w) for w in rng.integers(4, 41, size=int(rng.integers(3, 6)))]
    lead = tuple(int(t) for t in rng.integers(1, 7, size=int(rng.integers(1, 3))))
    torch.manual_seed(int(rng.integers(1 << 30)))
    return TokenMLP(widths), (*lead, widths[0])


def encoder_layer(rng: np.random.Generator) -> tuple[nn.Module, int, int]:
    """A random encoder layer (1-4 heads of width 4-12, FFN 1-3x wider), its width and a
    sequence length (3-12)."""
    heads, dh = int(rng.integers(1, 5)), int(rng.integers(4, 13))
    d = heads * dh
    torch.manual_seed(int(rng.integers(1 << 30)))
    return EncoderLayer(d, heads, d * int(rng.integers(1, 4))), d, int(rng.integers(3, 13))


def quantize(model: nn.Module, calib: tuple[torch.Tensor, ...], method: str) -> nn.Module:
    """``model`` with every Linear W4A8 by ``method`` (MiniLM's recipe), steps calibrated.

    The accelerator stores signed 8-bit activations, so an unsigned (post-ReLU) input gets 7
    bits, as ``prepare`` gives an unsigned end layer.
    """
    prepare(model, minilm_method(method), calib)
    for m in model.modules():
        if isinstance(getattr(m, "aq", None), ActQuantizer) and not m.aq.signed:
            m.aq = ActQuantizer(7, signed=False)
    model.eval()
    with torch.no_grad():
        model(*calib)
    return model
