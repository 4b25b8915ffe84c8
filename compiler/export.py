"""Export a fake-quant ``QuantizedModel`` to the integer graph the compiler lowers."""

from __future__ import annotations

from .ir import IntGraph, IntLayer
from .quant import INPUT_HI, INPUT_LO, QuantizedModel


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
