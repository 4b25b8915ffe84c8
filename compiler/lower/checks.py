"""What the lowering refuses, each with an error that names the layer and the fix: a graph whose
values do not fit the config's number formats, an accumulator that could overflow, a shape the
instruction fields cannot express."""

from __future__ import annotations

import numpy as np

from ...arch import AccelConfig, numerics
from ...host.tensors import conv_out_hw
from ..ir import IntGraph, IntLayer


class CompileError(ValueError):
    """A graph that cannot run on the given AccelConfig; the message names the layer and fix."""


def act_max(lo: int, hi: int) -> int:
    """The largest magnitude a value in [lo, hi] can have."""
    return max(abs(lo), abs(hi))


def check_input(graph: IntGraph, cfg: AccelConfig, batch: object) -> int:
    """``batch`` as an int, once the config, the batch and the graph's input range are valid."""
    if not isinstance(cfg, AccelConfig):
        raise TypeError(f"cfg must be an AccelConfig, got {type(cfg).__name__}")
    if not isinstance(batch, int | np.integer) or batch < 1:
        raise CompileError(f"batch must be a positive int, got {batch!r}")
    a_lo, a_hi = numerics.act_range(cfg.act_bits, signed=True)
    if not (a_lo <= graph.input_lo <= graph.input_hi <= a_hi):
        raise CompileError(
            f"graph input range [{graph.input_lo}, {graph.input_hi}] does not fit the "
            f"{cfg.act_bits}-bit signed activations [{a_lo}, {a_hi}]"
        )
    return int(batch)


def check_numerics(layer: IntLayer, cfg: AccelConfig, x_max: int) -> None:
    """The layer's output range, requant fields and accumulators fit ``cfg``."""
    a_lo, a_hi = numerics.act_range(cfg.act_bits, signed=True)
    if not (a_lo <= layer.lo and layer.hi <= a_hi):
        raise CompileError(
            f"layer {layer.name}: output range [{layer.lo}, {layer.hi}] does not fit the "
            f"{cfg.act_bits}-bit signed activations [{a_lo}, {a_hi}]; re-export with "
            "activations of at most 8 bits"
        )
    mult_range = (-(1 << (numerics.MULT_BITS - 1)), (1 << (numerics.MULT_BITS - 1)) - 1)
    checks = (
        ("bias", layer.bias, -(1 << (numerics.BIAS_BITS - 1)), (1 << (numerics.BIAS_BITS - 1)) - 1),
        ("mult", layer.mult, *mult_range),
        ("res_mult", np.zeros(0) if layer.res_mult is None else layer.res_mult, *mult_range),
        ("shift", layer.shift, 0, numerics.MAX_SHIFT),
    )
    for name, v, lo, hi in checks:
        v = np.asarray(v, dtype=np.int64)
        if v.size and (v.min() < lo or v.max() > hi):
            raise CompileError(
                f"layer {layer.name}: {name} values must lie in [{lo}, {hi}], got "
                f"[{v.min()}, {v.max()}]; re-export with numerics.requant_multiplier"
            )
    row_abs = np.abs(layer.weight.astype(np.int64)).reshape(layer.out_channels, -1).sum(axis=1)
    check_acc(layer.name, cfg, int((row_abs * x_max).max()), f"sum|w| * {x_max}")


def check_acc(name: str, cfg: AccelConfig, bound: int, how: str) -> None:
    """An accumulator bound of ``bound`` (reached as ``how`` says) fits ``cfg.acc_bits``."""
    if bound >= 1 << (cfg.acc_bits - 1):
        raise CompileError(
            f"layer {name}: accumulators may reach {bound} ({how}), which overflows the "
            f"{cfg.acc_bits}-bit accumulator; use a config with larger acc_bits or split the layer"
        )


def out_hw(name: str, h: int, w: int, kernel, stride, pad) -> tuple[int, int]:
    """Output height and width of a ``kernel`` window walk; a CompileError naming ``name``."""
    try:
        return conv_out_hw(h, w, *kernel, stride, pad)
    except ValueError as e:
        raise CompileError(f"layer {name}: {e}") from None
