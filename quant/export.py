"""Export quantized torch models to the integer graph: PTQ models and QAT models, as DAGs."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..arch import numerics
from ..compiler.ir import IntAvgPool, IntGraph, IntLayer, IntMaxPool, IntPool, Node
from .capture import Captured, Step, UnsupportedLayerError, capture
from .qat import ActQuantizer
from .quantize import INPUT_HI, INPUT_LO, QuantAvgPool, QuantizedModel, QuantMaxPool, QuantNode


def _int_node(q: QuantNode) -> Node:
    if isinstance(q, QuantMaxPool):
        return IntMaxPool(q.name, q.kernel, q.stride, q.padding, q.s_in, q.src)
    if isinstance(q, QuantAvgPool):
        return IntAvgPool(q.name, q.kernel, q.stride, q.s_in, q.src)
    res = q.res_from is not None
    return IntLayer(
        name=q.name,
        kind=q.kind,
        weight=q.w_int.numpy().copy(),
        formats=list(q.formats),
        bias=q.bias_int.numpy().copy(),
        mult=q.mult.numpy().copy(),
        shift=q.shift.numpy().copy(),
        lo=q.lo,
        hi=q.hi,
        in_scale=q.s_in,
        out_scale=q.s_out,
        stride=q.stride,
        padding=q.padding,
        flatten=q.flatten,
        relu=q.relu,
        res_from=q.res_from,
        res_mult=q.res_mult.numpy().copy() if res else None,
        res_stride=q.res_stride,
        res_pad=q.res_pad,
        src=q.src,
    )


def export(qmodel: QuantizedModel) -> IntGraph:
    """The integer graph of a quantized model: levels, per-row bias/mult/shift, scales, and
    its DAG (sources, residuals, pools) as the fake-quant model has it."""
    if not isinstance(qmodel, QuantizedModel):
        raise TypeError(
            f"export takes the QuantizedModel that quantize() returns, got {type(qmodel).__name__}"
        )
    return IntGraph(
        [_int_node(q) for q in qmodel.layers],
        qmodel.input_shape,
        qmodel.input_scale,
        INPUT_LO,
        INPUT_HI,
        meta={"ratio": dict(qmodel.ratio)},
    )


def _fold(conv: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row BN gain and the folded bias (float64)."""
    n = conv.weight.shape[0]
    bias = (
        conv.bias.detach().double()
        if conv.bias is not None
        else torch.zeros(n, dtype=torch.float64)
    )
    if bn is None:
        return torch.ones(n, dtype=torch.float64), bias
    g = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return g, bn.bias.detach().double() + (bias - bn.running_mean.double()) * g


def _step(q: nn.Module) -> float:
    return float(q.step.detach().abs().clamp_min(1e-8))


def _qat_layer(
    step: Step,
    s_in: float,
    s_out: float,
    lo: int,
    hi: int,
    res: tuple[int, float, int, int] | None,
    src: int | None,
) -> IntLayer:
    """Integer form of a QAT conv/linear step (+BN, + optional residual) onto a grid of ``s_out``.

    A negative BN gain flips the row's integer weights (the level sets are symmetric), so every
    multiplier is positive. ``res`` = (source node, its scale, stride, channel pad).
    """
    conv = step.op
    w = conv.wq.integer(conv.weight).double()
    alpha = conv.wq.alpha.detach().double().abs()
    g, b = _fold(conv, step.bn)
    scale = alpha * g * s_in
    sign = torch.where(scale < 0, -1.0, 1.0).double()
    w = w * sign.view(-1, *([1] * (w.ndim - 1)))
    scale = scale.abs().clamp_min(1e-30)
    n = w.shape[0]
    mult, shift, res_mult = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    for r in range(n):
        reals = [float(scale[r]) / s_out] + ([res[1] / s_out] if res else [])
        ms, shift[r] = numerics.quantize_multipliers_shared(reals)
        mult[r] = ms[0]
        if res:
            res_mult[r] = ms[1]
    is_conv = isinstance(conv, nn.Conv2d)
    return IntLayer(
        name=step.name,
        kind="conv" if is_conv else "linear",
        weight=w.round().long().numpy(),
        formats=list(conv.wq.formats),
        bias=torch.round(b / scale * (1 << numerics.BIAS_FRAC_BITS)).long().numpy(),
        mult=mult,
        shift=shift,
        lo=lo,
        hi=hi,
        in_scale=s_in,
        out_scale=s_out,
        stride=tuple(conv.stride) if is_conv else (1, 1),
        padding=tuple(conv.padding) if is_conv else (0, 0),
        flatten=step.flatten,
        relu=step.relu,
        res_from=res[0] if res else None,
        res_mult=res_mult if res else None,
        res_stride=res[2] if res else 1,
        res_pad=res[3] if res else 0,
        src=src,
    )


class _Grids:
    """The activation quantizer that puts each value of a captured QAT model on its grid.

    A value's grid is the quantizer applied to it (a block's shared ``quant_in``, the model's
    ``quant_out``), else the one input quantizer of the Conv2d/Linear layers reading it; a max
    pool passes its input's grid through (max commutes with rounding).
    """

    def __init__(self, cap: Captured) -> None:
        self.cap = cap

    def get(self, i: int) -> ActQuantizer | None:
        """Quantizer of step i's output (-1: the graph input), None for none (the logits)."""
        steps = self.cap.steps
        q = self.cap.input_quant if i == -1 else steps[i].out_quant
        if q is not None:
            return q
        found = []
        for j, s in enumerate(steps):
            if s.src != i:
                continue
            if s.kind == "maxpool":
                found.append(self.get(j))
            elif s.kind in ("conv", "linear") and isinstance(
                getattr(s.op, "aq", None), ActQuantizer
            ):
                found.append(s.op.aq)
        found = list({id(f): f for f in found if f is not None}.values())
        if len(found) > 1:
            name = "the input" if i == -1 else steps[i].name
            raise UnsupportedLayerError(
                f"the output of {name} is read by layers with different input quantizers; "
                "quantize it once (one shared ActQuantizer) for an integer graph"
            )
        return found[0] if found else None

    def applied(self, i: int, user: str) -> float:
        """The step of the quantizer applied to value i itself, which ``user`` adds as is (a
        residual sees the value, not what a consumer's own quantizer makes of it)."""
        q = self.cap.input_quant if i == -1 else self.cap.steps[i].out_quant
        if q is None:
            name = "the graph input" if i == -1 else self.cap.steps[i].name
            raise UnsupportedLayerError(
                f"{user} adds {name}, which is not quantized where it is added; quantize it once "
                "for both of its readers (as share_input_quantizer does)"
            )
        return _step(q)

    def step(self, i: int, user: str) -> float:
        """The grid step of value i, which ``user`` reads; an error if it has no quantizer."""
        q = self.get(i)
        if q is None:
            name = "the graph input" if i == -1 else self.cap.steps[i].name
            raise UnsupportedLayerError(
                f"{user} reads {name}, which no activation quantizer puts on a grid"
            )
        return _step(q)


def export_qat(
    model: nn.Module,
    input_shape: tuple[int, ...] = (3, 32, 32),
    logits_from: torch.Tensor | None = None,
) -> IntGraph:
    """Integer graph of a QAT-prepared CNN (BN folded, per-row requant, residuals, pooling).

    The model goes through the same capture as ``quantize``; each value's grid is its QAT
    activation quantizer's step (``_Grids``). ``input_shape`` is per sample (CIFAR by default).
    The logits come out on a grid finer than any row's accumulator step (int32 range), so the
    integer argmax is the fake-quant model's up to rounding at near ties. The accelerator
    stores 8-bit values: with ``logits_from`` (a calibration batch) the logits get the signed
    8-bit grid whose largest level is the batch's largest |logit| instead.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if not layers or not all(hasattr(m, "wq") for m in layers):
        raise UnsupportedLayerError(
            "export_qat takes a QAT-prepared CNN, every Conv2d/Linear a QConv2d/QLinear (as in a "
            "QAT-prepared CIFAR ResNet from rmsmp.quant.methods.prepare); use "
            "export(quantize(...)) for float models"
        )
    dtype = next(model.parameters()).dtype
    cap = capture(model.eval(), torch.zeros(1, *input_shape, dtype=dtype))
    grids = _Grids(cap)
    logit_step = None
    if logits_from is not None:
        with torch.no_grad():
            peak = float(model(logits_from).abs().max())
        logit_step = max(peak, 1e-6) / 127
    nodes: list[Node] = []
    for i, s in enumerate(cap.steps):
        src = None if s.src == i - 1 else s.src
        s_in = grids.step(s.src, s.name)
        if s.kind == "maxpool":
            if grids.get(i) is not grids.get(s.src):
                raise UnsupportedLayerError(
                    f"{s.name}: a max pool keeps its input's grid; quantize before it, not after"
                )
            nodes.append(IntMaxPool(s.name, s.kernel, s.stride, s.padding, s_in, src))
            continue
        q = grids.get(i)
        if s.kind == "avgpool":
            full = (cap.input_shape if s.src == -1 else cap.steps[s.src].out_shape)[1:]
            if q is None or tuple(full) != s.kernel:
                raise UnsupportedLayerError(
                    f"{s.name}: a QAT model's average pool must be global and feed a quantized "
                    "layer; use AdaptiveAvgPool2d(1) before the classifier"
                )
            hw = s.kernel[0] * s.kernel[1]
            mult, shift = numerics.requant_multiplier(s_in / (hw * _step(q)))
            nodes.append(IntPool(s.name, mult, shift, q.lo, q.hi, s_in, _step(q), src))
            continue
        if q is None and logit_step is not None:
            s_out, lo, hi = logit_step, -128, 127
        elif q is None:  # the logits: a grid finer than any row's accumulator step
            alpha = s.op.wq.alpha.detach().double().abs()
            s_out, lo, hi = float(alpha.min()) * s_in / 4, -(2**31), 2**31 - 1
        else:
            s_out, lo, hi = _step(q), 0 if s.relu else q.lo, q.hi
        aq = getattr(s.op, "aq", None)
        if isinstance(aq, ActQuantizer) and grids.get(s.src) is not aq:
            raise UnsupportedLayerError(
                f"{s.name}: its input is quantized twice (by its own quantizer and before it)"
            )
        res = None
        if s.res is not None:
            res = (s.res, grids.applied(s.res, s.name), s.res_stride, s.res_pad)
        nodes.append(_qat_layer(s, s_in, s_out, lo, hi, res, src))
    q0 = grids.get(-1)
    lo, hi = (q0.lo, q0.hi) if q0 is not None else (-128, 127)
    return IntGraph(
        nodes,
        tuple(input_shape),
        grids.step(-1, cap.steps[0].name),
        lo,
        hi,
        meta={"model": type(model).__name__},
    )
