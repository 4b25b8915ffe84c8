"""Export quantized torch models to the integer graph: PTQ chains and QAT ResNets."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..arch import numerics
from .ir import IntGraph, IntLayer, IntPool
from .quant import INPUT_HI, INPUT_LO, QuantizedModel, UnsupportedLayerError


def export(qmodel: QuantizedModel) -> IntGraph:
    """The integer graph of a quantized model: levels, per-row bias/mult/shift, scales."""
    if not isinstance(qmodel, QuantizedModel):
        raise TypeError(
            f"export takes the QuantizedModel that quantize() returns, got {type(qmodel).__name__}"
        )
    layers = [
        IntLayer(
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
        )
        for q in qmodel.layers
    ]
    return IntGraph(
        layers,
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
    name: str,
    conv: nn.Module,
    bn: nn.Module | None,
    s_in: float,
    s_out: float,
    lo: int,
    hi: int,
    res: tuple[int, float, int, int] | None = None,
) -> IntLayer:
    """Integer form of a QAT conv/linear (+BN, + optional residual) feeding a grid of ``s_out``.

    A negative BN gain flips the row's integer weights (the level sets are symmetric), so every
    multiplier is positive. ``res`` = (source node, its scale, stride, channel pad).
    """
    w = conv.wq.integer(conv.weight).double()
    alpha = conv.wq.alpha.detach().double().abs()
    g, b = _fold(conv, bn)
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
        name=name,
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
        relu=lo == 0,
        res_from=res[0] if res else None,
        res_mult=res_mult if res else None,
        res_stride=res[2] if res else 1,
        res_pad=res[3] if res else 0,
    )


def export_qat(model: nn.Module) -> IntGraph:
    """Integer graph of a QAT-prepared CIFAR ResNet (BN folded, per-row requant, residuals).

    The logits come out on a grid finer than any row's accumulator step (int32 range), so the
    integer argmax is the fake-quant model's up to rounding at near ties.
    """
    from .models.resnet_cifar import ResNetCifar

    if not isinstance(model, ResNetCifar) or not hasattr(model.linear, "wq"):
        raise UnsupportedLayerError(
            "export_qat takes a QAT-prepared CIFAR ResNet (rmsmp.compiler.methods.prepare); "
            "use export(quantize(...)) for Sequential chains"
        )
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3) for b in stage]
    lo_u, hi_u = 0, blocks[0].quant_in.hi
    s0 = _step(model.conv1.aq)
    s = _step(blocks[0].quant_in)
    nodes: list = [_qat_layer("conv1", model.conv1, model.bn1, s0, s, lo_u, hi_u)]
    names = [f"layer{i // 3 + 1}.{i % 3}" for i in range(len(blocks))]
    for i, (blk, name) in enumerate(zip(blocks, names, strict=True)):
        block_in = len(nodes) - 1
        s_mid = _step(blk.conv2.aq)
        nxt = blocks[i + 1].quant_in if i + 1 < len(blocks) else model.quant_out
        s_next = _step(nxt)
        stride = blk.conv1.stride[0]
        nodes.append(_qat_layer(f"{name}.conv1", blk.conv1, blk.bn1, s, s_mid, 0, blk.conv2.aq.hi))
        res = (block_in, s, stride, blk.pad)
        nodes.append(_qat_layer(f"{name}.conv2", blk.conv2, blk.bn2, s_mid, s_next, 0, nxt.hi, res))
        s = s_next
    aq = model.linear.aq
    side = 32
    for blk in blocks:
        side = -(-side // blk.conv1.stride[0])
    hw = side * side
    s_lin = _step(aq)
    mult, shift = numerics.requant_multiplier(s / (hw * s_lin))
    nodes.append(IntPool("avgpool", mult, shift, aq.lo, aq.hi, s, s_lin))
    alpha = model.linear.wq.alpha.detach().double().abs()
    s_logit = float(alpha.min()) * s_lin / 4
    nodes.append(_qat_layer("linear", model.linear, None, s_lin, s_logit, -(2**31), 2**31 - 1))
    return IntGraph(nodes, (3, 32, 32), s0, -128, 127, meta={"model": "resnet20"})
