"""The host's integer softmax, LayerNorm and GELU (I-BERT): against float within stated
tolerances, deterministic (a row's result does not depend on its batch), and behind the
host-numerics flag of hybrid programs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rmsmp.host import hostops, intops
from rmsmp.host.hybrid import HostOp, host_numerics

SOFTMAX_TOL = 2e-3
"""|integer - float| of a probability: i-exp's polynomial (I-BERT: < 2e-3) and the grids."""
LAYERNORM_TOL = 1e-3
"""|integer - float| per unit of |normalised value| + 1 (the 2^-10 input grid, i_sqrt)."""
GELU_TOL = 0.02
"""|integer - float|: I-BERT's second-order erf is within 0.0186 of GELU."""


def _scores(rng: np.random.Generator) -> np.ndarray:
    x = (rng.standard_normal((3, 4, 16, 64)) * 4).astype(np.float32)
    x[0, 0, :, 40:] = np.finfo(np.float32).min  # masked keys, as masked_fill writes them
    return x


def test_i_sqrt_is_the_integer_square_root() -> None:
    rng = np.random.default_rng(0)
    n = np.concatenate(
        [np.arange(300), rng.integers(0, 1 << 62, 2000), np.arange(1, 3000) ** 2 - 1]
    ).astype(np.int64)
    assert [int(v) for v in intops.i_sqrt(n)] == [math.isqrt(int(m)) for m in n]
    with pytest.raises(ValueError, match="negative"):
        intops.i_sqrt(np.array([-1]))


def test_i_softmax_is_near_float_and_masks_exactly() -> None:
    x = _scores(np.random.default_rng(1))
    got, want = intops.i_softmax(x, -1), hostops.softmax(x, -1)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= SOFTMAX_TOL
    assert (got[0, 0, :, 40:] == 0).all()
    assert np.abs(got.sum(-1) - 1).max() <= 64 * 2.0**-intops.SOFTMAX_OUT_BITS


def test_i_layernorm_is_near_float_with_outlier_features() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 32, 384)) * 3).astype(np.float32)
    x[..., 7] *= 30  # BERT's outlier dimensions
    w = (rng.standard_normal(384) * 0.3 + 1).astype(np.float32)
    b = (rng.standard_normal(384) * 0.3).astype(np.float32)
    got, want = intops.i_layernorm(x, w, b, 1e-12), hostops.layernorm(x, w, b, 1e-12)
    norm = np.abs((want - b) / w)
    assert (np.abs(got - want) <= LAYERNORM_TOL * (norm + 1)).all()


def test_i_gelu_is_near_float() -> None:
    x = np.linspace(-12, 12, 48001, dtype=np.float32)
    got = intops.i_gelu(x)
    assert np.abs(got - hostops.gelu(x)).max() <= GELU_TOL
    assert np.abs(got - hostops.gelu(x, "tanh")).max() <= GELU_TOL
    # erf saturates at |x| = 1.769 sqrt(2) < 2.51: GELU is then exactly 0, or x on its grid
    assert (got[x <= -2.51] == 0).all()
    assert np.abs(got[x >= 2.51] - x[x >= 2.51]).max() <= 2.0**-intops.GELU_IN_FRAC


def test_integer_ops_are_deterministic_per_row() -> None:
    rng = np.random.default_rng(3)
    x = _scores(rng)
    h = (rng.standard_normal((5, 8, 48)) * 2).astype(np.float32)
    w, b = np.ones(48, np.float32), np.zeros(48, np.float32)
    cases = [
        (lambda v: intops.i_softmax(v, -1), x),
        (lambda v: intops.i_layernorm(v, w, b, 1e-5), h),
        (intops.i_gelu, h),
    ]
    for fn, v in cases:
        whole = fn(v)
        assert np.array_equal(whole, fn(v.copy()))
        for i in range(len(v)):
            assert np.array_equal(fn(v[i : i + 1])[0], whole[i])


def test_host_numerics_flag_switches_only_softmax_layernorm_gelu() -> None:
    x = np.random.default_rng(4).standard_normal((2, 8, 16)).astype(np.float32)
    ops = [
        HostOp("s", "softmax", [0], {"dim": 2}),
        HostOp("g", "gelu", [0], {"approximate": "none"}),
        HostOp("n", "layernorm", [0], {"weight": np.ones(16), "bias": np.zeros(16), "eps": 1e-5}),
        HostOp("r", "relu", [0]),
    ]
    integer = host_numerics(ops, "integer")
    assert [op.params.get("integer", False) for op in integer] == [True, True, True, False]
    assert [op.params for op in host_numerics(integer, "float")] == [op.params for op in ops]
    for f, i in zip(ops, integer, strict=True):
        a, b = hostops.HOST_OPS[f.kind]([x], f.params), hostops.HOST_OPS[i.kind]([x], i.params)
        assert np.array_equal(a, b) == (f.kind == "relu")
    with pytest.raises(ValueError, match="host numerics 'fixed' unknown"):
        host_numerics(ops, "fixed")
