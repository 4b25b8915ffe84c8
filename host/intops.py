"""Integer softmax, LayerNorm and GELU for the host (I-BERT: Kim et al., ICML 2021), in int64.

The float host ops (``hostops``) are the default; these are what a host without a fast float
unit (or a future on-chip unit) would run instead. Each takes the float32 value the graph
holds at that point, puts it on a fixed-point grid once at entry (a power-of-two scale:
``rint(x * 2**F)``, exact in float64), computes in int64 only, and returns float32 again
(the integer result times its scale) for the ops that follow. So the result is a function of
the input's fixed-point integers alone: bit-identical on every machine, and for a row whatever
else is in the batch.

- ``i_exp``: exp(p) = 2^-z exp(r), r in (-ln 2, 0], exp(r) by the second-order polynomial
  0.3585 (r + 1.353)^2 + 0.344 (I-BERT Algorithm 2).
- ``i_softmax``: i_exp of x - max(x), divided by its integer sum to ``SOFTMAX_OUT_BITS``.
- ``i_sqrt``: floor(sqrt(n)) by integer Newton iterations (I-BERT Algorithm 4).
- ``i_layernorm``: integer mean and variance, ``i_sqrt``, gamma and beta on fixed-point grids.
- ``i_gelu``: x/2 (1 + erf(x/sqrt 2)), erf(u) = sgn(u) [-0.2888 (min(|u|, 1.769) - 1.769)^2 + 1]
  (I-BERT Algorithm 3).
"""

from __future__ import annotations

import math

import numpy as np

SOFTMAX_IN_FRAC = 12
"""Softmax input grid: 2^-12 (the scores, around +-10, to 0.0001)."""
SOFTMAX_OUT_BITS = 16
"""Softmax output grid: 2^-16 (probabilities to 0.00002)."""
SOFTMAX_FLOOR = -64.0
"""x - max(x) below this gives exp 0 (2^-92): masked scores (float32 min) end here."""
LAYERNORM_IN_FRAC = 10
"""LayerNorm input grid: 2^-10."""
LAYERNORM_NORM_FRAC = 16
"""Grid of the normalised value (x - mean) / std: 2^-16."""
LAYERNORM_GAMMA_FRAC = 12
"""Grid of LayerNorm's gain: 2^-12 (beta sits on the product's grid, 2^-28)."""
GELU_IN_FRAC = 10
"""GELU input grid: 2^-10."""
_INT_RANGE = float(1 << 40)
"""Fixed-point inputs are clipped to +-2^40 before the cast (far beyond any used value)."""

_EXP_A, _EXP_B, _EXP_C = 0.3585, 1.353, 0.344
_ERF_A, _ERF_B = -0.2888, -1.769


def to_fixed(x: np.ndarray, frac: int) -> np.ndarray:
    """``x`` on the grid 2^-frac as int64 (round half to even; exact in float64)."""
    y = np.asarray(x, np.float64) * float(1 << frac)
    return np.rint(np.clip(y, -_INT_RANGE, _INT_RANGE)).astype(np.int64)


def _from_fixed(q: np.ndarray, scale: float) -> np.ndarray:
    return (q.astype(np.float64) * scale).astype(np.float32)


def _round_div(num: np.ndarray, den: np.ndarray | int) -> np.ndarray:
    """num / den rounded half up, for den > 0 (floor division of int64)."""
    return (2 * num + den) // (2 * np.asarray(den, np.int64))


def i_exp(q: np.ndarray, frac: int) -> tuple[np.ndarray, float]:
    """exp of x = q 2^-frac for q <= 0: (integers, their scale)."""
    s = 2.0**-frac
    q_ln2 = math.floor(math.log(2) / s)
    q_b = math.floor(_EXP_B / s)
    q_c = math.floor(_EXP_C / (_EXP_A * s * s))
    z = (-q) // q_ln2
    r = q + z * q_ln2
    poly = (r + q_b) ** 2 + q_c
    return poly >> np.minimum(z, 62), _EXP_A * s * s


def i_softmax(x: np.ndarray, dim: int) -> np.ndarray:
    """Softmax along ``dim`` in integers: i_exp of x - max, over its sum, to 2^-16."""
    q = to_fixed(x, SOFTMAX_IN_FRAC)
    q = np.maximum(q - q.max(axis=dim, keepdims=True), int(SOFTMAX_FLOOR * (1 << SOFTMAX_IN_FRAC)))
    e, _ = i_exp(q, SOFTMAX_IN_FRAC)
    total = e.sum(axis=dim, keepdims=True)
    return _from_fixed(_round_div(e << SOFTMAX_OUT_BITS, total), 2.0**-SOFTMAX_OUT_BITS)


def i_sqrt(n: np.ndarray) -> np.ndarray:
    """floor(sqrt(n)) of int64 n >= 0 by Newton iterations from a power of two above it."""
    n = np.asarray(n, np.int64)
    if (n < 0).any():
        raise ValueError("i_sqrt of a negative integer")
    bits = np.frexp(n.astype(np.float64) + 1.0)[1].astype(np.int64)  # >= bit length of n
    x = np.left_shift(np.int64(1), (bits + 1) // 2)
    while True:
        y = (x + n // np.maximum(x, 1)) >> 1
        smaller = y < x
        if not smaller.any():
            return x
        x = np.where(smaller, y, x)


def i_layernorm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the trailing ``weight.ndim`` dims in integers (biased variance)."""
    q = to_fixed(x, LAYERNORM_IN_FRAC)
    axes = tuple(range(-weight.ndim, 0))
    d = math.prod(weight.shape)
    c = q - _round_div(q.sum(axis=axes, keepdims=True), d)
    var = (c * c).sum(axis=axes, keepdims=True) // d
    std = i_sqrt(var + math.floor(eps * 4.0**LAYERNORM_IN_FRAC))
    norm = _round_div(c << LAYERNORM_NORM_FRAC, np.maximum(std, 1))
    gamma = to_fixed(weight, LAYERNORM_GAMMA_FRAC)
    out_frac = LAYERNORM_NORM_FRAC + LAYERNORM_GAMMA_FRAC
    return _from_fixed(norm * gamma + to_fixed(bias, out_frac), 2.0**-out_frac)


def i_gelu(x: np.ndarray) -> np.ndarray:
    """GELU (the erf form) in integers, with I-BERT's second-order erf."""
    q = to_fixed(x, GELU_IN_FRAC)
    s = 2.0**-GELU_IN_FRAC
    s_erf = s / math.sqrt(2.0)
    q_b = math.floor(_ERF_B / s_erf)
    q_one = math.floor(1.0 / (_ERF_A * s_erf * s_erf))
    erf = np.sign(q) * ((np.minimum(np.abs(q), -q_b) + q_b) ** 2 + q_one)
    return _from_fixed(q * (erf + q_one), s * _ERF_A * s_erf * s_erf / 2.0)


__all__ = ["i_exp", "i_gelu", "i_layernorm", "i_softmax", "i_sqrt", "to_fixed"]
