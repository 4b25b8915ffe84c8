"""The ops a hybrid (host + accelerator) model runs on the host, in numpy.

Each op is a function of its input arrays and its parameters. Float ops (softmax, LayerNorm,
GELU, a float Linear) compute in float32, as the torch model does; with the parameter
``integer`` (``with_numerics(..., "integer")``) softmax, LayerNorm and GELU run as I-BERT's
integer approximations instead (``intops``); the attention matmuls take
integer operands and sum exactly in int64. Layout ops (reshape, permute, index) never touch
the batch dimension, so one recorded op runs on any batch. The same functions serve the
reference (``compiler.hybrid.HybridGraph.evaluate``) and every backend, so host results are
identical wherever the device part runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..arch import numerics
from .intops import i_gelu, i_layernorm, i_softmax

F32 = np.float32

# Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, below float32's resolution near 1): numpy has
# no erf, and the host side needs numpy only.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, in float64, to 1.5e-7."""
    x = np.asarray(x, dtype=np.float64)
    t = 1.0 / (1.0 + _ERF_P * np.abs(x))
    poly = t * (_ERF_A[0] + t * (_ERF_A[1] + t * (_ERF_A[2] + t * (_ERF_A[3] + t * _ERF_A[4]))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of integer arrays, exact in int64 (summed in float64 where that is exact)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    bound = int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0)) * a.shape[-1]
    if bound < 1 << 53:
        return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a @ b


def softmax(x: np.ndarray, dim: int) -> np.ndarray:
    """Softmax along ``dim`` in float32 (max subtracted)."""
    x = _float(x)
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def layernorm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the trailing ``weight.ndim`` dims, in float32 (biased variance)."""
    x = _float(x)
    axes = tuple(range(-weight.ndim, 0))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return ((x - mean) / np.sqrt(var + F32(eps)) * weight + bias).astype(F32)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """GELU: exact (erf) or torch's tanh approximation."""
    x = _float(x)
    if approximate == "tanh":
        inner = np.sqrt(2.0 / np.pi) * (x + 0.044715 * x.astype(np.float64) ** 3)
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(F32)
    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(F32)


def _binary(fn: Callable) -> Callable[[list[np.ndarray], dict], np.ndarray]:
    """An elementwise op of two inputs, or of one input and the constant ``other``."""

    def op(xs: list[np.ndarray], p: dict) -> np.ndarray:
        if len(xs) == 2:
            a, b = xs
        elif p["const_first"]:
            a, b = p["other"], xs[0]
        else:
            a, b = xs[0], p["other"]
        out = fn(np.asarray(a), np.asarray(b))
        return out if out.dtype == bool or np.issubdtype(out.dtype, np.integer) else _float(out)

    return op


def _reshape(xs: list[np.ndarray], p: dict) -> np.ndarray:
    return xs[0].reshape(xs[0].shape[0], *p["shape"])


def _permute(xs: list[np.ndarray], p: dict) -> np.ndarray:
    return np.ascontiguousarray(xs[0].transpose(p["dims"]))


def _index(xs: list[np.ndarray], p: dict) -> np.ndarray:
    return xs[0][p["key"]]


def _cast(xs: list[np.ndarray], p: dict) -> np.ndarray:
    return xs[0].astype(p["dtype"])


def _sum(xs: list[np.ndarray], p: dict) -> np.ndarray:
    return xs[0].sum(axis=p["dims"], keepdims=p["keepdim"]).astype(xs[0].dtype)


def _mean(xs: list[np.ndarray], p: dict) -> np.ndarray:
    return _float(xs[0].mean(axis=p["dims"], keepdims=p["keepdim"]))


def _clamp(xs: list[np.ndarray], p: dict) -> np.ndarray:
    return np.clip(xs[0], p["min"], p["max"]).astype(xs[0].dtype)


def _linear(xs: list[np.ndarray], p: dict) -> np.ndarray:
    y = _float(xs[0]) @ p["weight"].T
    return _float(y if p["bias"] is None else y + p["bias"])


def _softmax(xs: list[np.ndarray], p: dict) -> np.ndarray:
    return i_softmax(xs[0], p["dim"]) if p.get("integer") else softmax(xs[0], p["dim"])


def _layernorm(xs: list[np.ndarray], p: dict) -> np.ndarray:
    fn = i_layernorm if p.get("integer") else layernorm
    return fn(xs[0], p["weight"], p["bias"], p["eps"])


def _gelu(xs: list[np.ndarray], p: dict) -> np.ndarray:
    return i_gelu(xs[0]) if p.get("integer") else gelu(xs[0], p["approximate"])


HOST_OPS: dict[str, Callable[[list[np.ndarray], dict], np.ndarray]] = {
    "quantize": lambda xs, p: numerics.quantize_activation(xs[0], p["scale"], p["lo"], p["hi"]),
    "dequantize": lambda xs, p: _float(np.asarray(xs[0], np.float64) * p["scale"]),
    "matmul": lambda xs, p: exact_matmul(xs[0], xs[1]),
    "linear": _linear,
    "layernorm": _layernorm,
    "gelu": _gelu,
    "relu": lambda xs, p: np.maximum(xs[0], 0).astype(xs[0].dtype),
    "softmax": _softmax,
    "embedding": lambda xs, p: p["table"][np.asarray(xs[0], np.int64)],
    "masked_fill": lambda xs, p: np.where(xs[1], F32(p["value"]), _float(xs[0])),
    "not": lambda xs, p: ~np.asarray(xs[0], bool),
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "div": _binary(np.true_divide),
    "reshape": _reshape,
    "permute": _permute,
    "index": _index,
    "cast": _cast,
    "sum": _sum,
    "mean": _mean,
    "clamp": _clamp,
}
"""Host op kind -> numpy function of (inputs, params)."""

LAYOUT = ("reshape", "permute", "index")
"""Ops that only move values: an integer value keeps its grid through them."""

NUMERICS = ("float", "integer")
"""How the host runs softmax, LayerNorm and GELU: float32, or I-BERT's integer forms."""
INTEGER_KINDS = ("softmax", "layernorm", "gelu")
"""The host ops that have an integer form (``intops``)."""


def with_numerics(kind: str, params: dict, mode: str) -> dict:
    """``params`` of a ``kind`` op set to run in ``mode`` ("float" or "integer")."""
    if mode not in NUMERICS:
        raise ValueError(f"host numerics {mode!r} unknown; use one of {', '.join(NUMERICS)}")
    if kind not in INTEGER_KINDS:
        return params
    return {k: v for k, v in params.items() if k != "integer"} | (
        {"integer": True} if mode == "integer" else {}
    )
