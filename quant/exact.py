"""Exact fake-quant: integer layers and graphs evaluated in int64 torch ops.

A fake-quant model that computes its requantisation in float rounds the other way on a tie (or
within float error of one), and the flip spreads; the integer graph is the reference. Here the
accumulators are exact integers (float convolutions of integers while every partial sum stays
below 2^24 in float32 or 2^53 in float64, as ``IntLayer.accumulate`` does) and the
requantisation is ``numerics.round_sum_int64``, the integer definition the golden model and the
RTL use. So in eval mode the PTQ layers (``quant.QuantLayer``) and a QAT CNN made exact with
``exact_qat.exact_eval`` give the integer graph's outputs bit for bit; in training mode they
keep their float (STE) path.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from ..arch import numerics
from ..compiler.ir import IntAvgPool, IntGraph, IntLayer, IntMaxPool, IntPool

_FLOAT32_EXACT, _FLOAT64_EXACT = 1 << 24, 1 << 53
"""Integers below these magnitudes, and sums of them that stay below, are exact in float32 and
float64: the accumulators are summed in float32 where every partial sum provably fits (a conv
or GEMM of direct sums, no transform), else in float64."""


def accumulate(
    name: str,
    kind: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    flatten: bool = False,
) -> torch.Tensor:
    """Exact int64 accumulators of a conv/linear layer for a batch of integer inputs."""
    wf = weight.to(torch.float64)
    bound = float(wf.abs().reshape(len(wf), -1).sum(1).max()) if wf.numel() else 0.0
    bound *= float(x.abs().max()) if x.numel() else 0.0
    if bound >= _FLOAT64_EXACT:
        raise ValueError(
            f"layer {name!r}: accumulators may reach 2^53, beyond exact float64 sums; use "
            "narrower weights or activations"
        )
    # float32 only where it is IEEE float32: on a GPU (TF32 convolutions) or with a lowered
    # matmul precision, sums of integers may be rounded
    ieee = x.device.type == "cpu" and torch.get_float32_matmul_precision() == "highest"
    dt = torch.float32 if bound < _FLOAT32_EXACT and ieee else torch.float64
    w, xf = wf.to(dt), x.to(dt)
    if kind == "linear":
        acc = F.linear(xf.flatten(1) if flatten else xf, w)
    else:
        acc = F.conv2d(xf, w, stride=tuple(stride), padding=tuple(padding))
    return torch.round(acc).to(torch.int64)


def shortcut(res: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """A residual as added: subsampled by ``stride``, channels zero-padded by ``pad`` each side."""
    return F.pad(res[:, :, ::stride, ::stride], (0, 0, 0, 0, pad, pad))


def requant(
    name: str,
    acc: torch.Tensor,
    bias: torch.Tensor,
    mult: torch.Tensor,
    shift: torch.Tensor,
    lo: int,
    hi: int,
    res: torch.Tensor | None = None,
    res_mult: torch.Tensor | None = None,
) -> torch.Tensor:
    """``numerics.requant`` (with ``res``: ``requant_residual``) of per-row int64 operands."""
    view = (1, -1) + (1,) * (acc.ndim - 2)
    v = (acc << numerics.BIAS_FRAC_BITS) + bias.view(view)
    terms = [(v, mult.view(view))]
    if res is not None and res_mult is not None:
        terms.append((res << numerics.BIAS_FRAC_BITS, res_mult.view(view)))
    out = numerics.round_sum_int64(terms, shift.view(view))
    if out is None:
        raise ValueError(
            f"layer {name!r}: the requant product exceeds int64 (shift below 16 or bias and "
            "multiplier too wide); re-export the layer with a smaller bias or multiplier"
        )
    return out.clamp(lo, hi)


def _t(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)


def evaluate_layer(
    layer: IntLayer, x: torch.Tensor, res: torch.Tensor | None = None
) -> torch.Tensor:
    """``IntLayer.evaluate`` in int64 torch ops."""
    d = x.device
    acc = accumulate(
        layer.name, layer.kind, x, _t(layer.weight, d), layer.stride, layer.padding, layer.flatten
    )
    r = rm = None
    if layer.res_from is not None:
        if res is None or layer.res_mult is None:
            raise ValueError(f"layer {layer.name!r} adds a residual; pass it")
        r, rm = shortcut(res, layer.res_stride, layer.res_pad), _t(layer.res_mult, d)
    b, m, s = (_t(a, d) for a in (layer.bias, layer.mult, layer.shift))
    return requant(layer.name, acc, b, m, s, layer.lo, layer.hi, r, rm)


def evaluate(graph: IntGraph, x_int: torch.Tensor) -> torch.Tensor:
    """``IntGraph.evaluate`` in int64 torch ops: the last node's integers for a batch."""
    return outputs(graph, x_int)[-1]


def outputs(graph: IntGraph, x_int: torch.Tensor) -> list[torch.Tensor]:
    """The integer input, then every node's integer output, in int64 torch ops."""
    outs = [x_int.to(torch.int64)]
    for i, node in enumerate(graph.layers):
        x = outs[graph.source(i) + 1]
        if isinstance(node, IntLayer):
            res = None if node.res_from is None else outs[node.res_from + 1]
            outs.append(evaluate_layer(node, x, res))
        elif isinstance(node, IntMaxPool):
            y = F.max_pool2d(x.to(torch.float64), node.kernel, node.stride, node.padding)
            outs.append(y.to(torch.int64))
        elif isinstance(node, IntAvgPool):
            (kh, kw), (sh, sw) = node.kernel, node.stride
            total = x.unfold(2, kh, sh).unfold(3, kw, sw).sum(dim=(4, 5))
            outs.append(numerics.average_round(total, kh * kw))
        elif isinstance(node, IntPool):
            one = torch.ones(1, dtype=torch.int64, device=x.device)
            total = x.sum(dim=(2, 3))
            outs.append(
                requant(
                    node.name, total, 0 * one, node.mult * one, node.shift * one, node.lo, node.hi
                )
            )
        else:
            raise ValueError(
                f"node {node.name!r}: {type(node).__name__} has no exact torch evaluation yet; "
                "evaluate the integer graph with IntGraph.evaluate"
            )
    return outs


__all__ = ["accumulate", "evaluate", "evaluate_layer", "outputs", "requant", "shortcut"]
