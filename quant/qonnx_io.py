"""QONNX in and out: our integer graph as a QONNX model, and QONNX models as integer graphs.

``to_qonnx`` writes an integer graph in QONNX's integer (FINN "streamlined") form, which the
``qonnx`` package executes bit for bit: the float input is scaled in float64 and quantized by a
``Quant`` node (round half to even, as ``IntGraph.quantize_input``); every tensor after it holds
integers; each layer's weights are an integer initializer behind one ``Quant`` node per weight
format (its rows' bit width, scale 1; the exact per-row formats, PoT and SP2 included, are in the
metadata ``rmsmp.formats``); a Conv or Gemm sums them exactly in float32 (every accumulator
bound below 2^24 is checked); the requantisation is a ``MultiThreshold`` whose thresholds are
computed in integers from (bias, mult, shift), so it equals ``numerics.requant`` for every
accumulator; a residual layer thresholds ``acc * mult + res * res_mult``, exact in float64. The
outputs are ``y`` (integers times the output scale) and ``y_int`` (the integers).

``from_qonnx`` reads a QONNX model quantized elsewhere (Brevitas' ``export_qonnx``): Quant'ed
input, Conv/Gemm/MatMul on Quant'ed weights (+ bias on the accumulator grid) (+ ReLU), Quant'ed
outputs, MaxPool, Flatten/Reshape. Each layer becomes an ``IntLayer`` whose requantisation
reproduces qonnx's float execution exactly; where our requant cannot (a scale ratio that is not
a power of two, round-half-to-even where ties occur, a weight row that is no level set of the
preset), a one-line ``QonnxError`` names the node.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..arch import numerics
from ..arch.config import AccelConfig
from ..boards import target_config
from ..compiler.ir import IntAvgPool, IntGraph, IntLayer, IntMaxPool, IntPool, Node
from .export import export, export_qat
from .quantize import QuantizedModel

QONNX_DOMAIN = "qonnx.custom_op.general"
OPSET = 17
FORMAT_ORDER = ("fixed4", "pot4", "sp2-4", "fixed8")
"""Which format an imported weight row gets: the first whose levels hold all its integers."""
_F32, _F64 = 1 << 24, 1 << 53
_MAX_THRESHOLDS = 1 << 16


class QonnxError(ValueError):
    """A model that has no exact QONNX or integer-graph form; the message names the node."""


def _require() -> tuple[Any, Any]:
    try:
        import onnx
        from qonnx.core.modelwrapper import ModelWrapper
    except ImportError:
        raise ImportError(
            "QONNX exchange needs onnx and qonnx: pip install 'rmsmp[qonnx]'"
        ) from None
    return onnx, ModelWrapper


# ---- out ----------------------------------------------------------------------------------------


def _graph_of(qmodel: object, example_input: torch.Tensor) -> IntGraph:
    """The integer graph of any quantized model of ours (8-bit logits for a QAT CNN)."""
    if isinstance(qmodel, IntGraph):
        return qmodel
    if isinstance(qmodel, QuantizedModel):
        return export(qmodel)
    if isinstance(qmodel, nn.Module):
        return export_qat(qmodel, tuple(example_input.shape[1:]), logits_from=example_input)
    raise TypeError(
        "to_qonnx takes a QuantizedModel (rmsmp.quantize), a QAT-prepared CNN or an IntGraph, "
        f"got {type(qmodel).__name__}"
    )


def _range_bits(lo: int, hi: int) -> tuple[int, bool, bool]:
    """(bits, signed, narrow) of a Quant node whose integer range is exactly [lo, hi]."""
    signed = lo < 0
    bits = max(1, hi.bit_length() + signed, (-lo - 1).bit_length() + 1 if signed else 0)
    narrow = signed and lo == -hi
    if (lo, hi) != (-(1 << (bits - 1)) + narrow if signed else 0, (1 << (bits - signed)) - 1):
        raise QonnxError(f"range [{lo}, {hi}] is no Quant node's integer range")
    return bits, signed, narrow


def _dtype_name(lo: int, hi: int) -> str:
    """qonnx DataType name of the smallest integer type holding [lo, hi]."""
    if lo >= 0:
        return f"UINT{max(1, hi.bit_length())}"
    return f"INT{max((-lo - 1).bit_length(), hi.bit_length()) + 1}"


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def acc_thresholds(bias: int, mult: int, shift: int, lo: int, hi: int) -> list[int]:
    """Smallest accumulator with ``requant(acc) >= k``, for k = lo+1 .. hi (exact integers)."""
    half = (1 << shift) >> 1
    out = []
    for k in range(lo + 1, hi + 1):
        v = _ceil_div(k * (1 << shift) - half, mult)  # smallest v = acc*2^F + bias reaching k
        out.append(_ceil_div(v - bias, 1 << numerics.BIAS_FRAC_BITS))
    return out


def sum_thresholds(bias: int, mult: int, shift: int, lo: int, hi: int) -> list[int]:
    """Smallest ``u = acc*mult + res*res_mult`` with ``requant_residual >= k``, k = lo+1 .. hi."""
    half = (1 << shift) >> 1
    return [
        _ceil_div(k * (1 << shift) - half - bias * mult, 1 << numerics.BIAS_FRAC_BITS)
        for k in range(lo + 1, hi + 1)
    ]


class _Builder:
    """ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.onnx, _ = _require()
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, arr: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], base: str, domain: str = "", **attrs: Any) -> str:
        out = self.name(base)
        self.nodes.append(
            self.onnx.helper.make_node(
                op, inputs, [out], name=self.name(op), domain=domain or None, **attrs
            )
        )
        return out

    def quant(self, x: str, scale: float, bits: int, signed: bool, narrow: bool, base: str) -> str:
        ins = [
            x,
            self.const("scale", np.float32(scale)),
            self.const("zeropt", np.float32(0)),
            self.const("bitwidth", np.float32(bits)),
        ]
        return self.node(
            "Quant",
            ins,
            base,
            QONNX_DOMAIN,
            signed=int(signed),
            narrow=int(narrow),
            rounding_mode="ROUND",
        )

    def threshold(self, x: str, t: np.ndarray, lo: int, hi: int, layout: str, base: str) -> str:
        return self.node(
            "MultiThreshold",
            [x, self.const("thresholds", t)],
            base,
            QONNX_DOMAIN,
            out_dtype=_dtype_name(lo, hi),
            out_bias=float(lo),
            out_scale=1.0,
            data_layout=layout,
        )


def _weights(b: _Builder, layer: IntLayer) -> str:
    """The layer's integer weights: one Quant node (its bit width, scale 1) per weight format."""
    parts = []
    for f in dict.fromkeys(layer.formats):
        rows = np.array([g == f for g in layer.formats])
        w = np.where(rows.reshape(-1, *[1] * (layer.weight.ndim - 1)), layer.weight, 0)
        bits = numerics.weight_format(f).max_level.bit_length() + 1
        parts.append(b.quant(b.const(f"w_{f}", w.astype(np.float32)), 1.0, bits, True, True, "w"))
    return parts[0] if len(parts) == 1 else b.node("Sum", parts, "w")


def _check_bound(name: str, bound: int, limit: int, what: str) -> None:
    if bound >= limit:
        kind = "float32" if limit == _F32 else "float64"
        raise QonnxError(
            f"layer {name!r}: {what} may reach {bound}, beyond exact {kind} arithmetic in "
            "qonnx's execution; use narrower weights or activations"
        )


def _layer(b: _Builder, layer: IntLayer, x: str, x_max: int, res: str | None, r_max: int) -> str:
    """A conv/linear layer on integer input ``x``: exact accumulators, then its requant."""
    w = _weights(b, layer)
    row_abs = np.abs(layer.weight).reshape(layer.out_channels, -1).sum(1)
    bound = int(row_abs.max(initial=0)) * x_max
    _check_bound(layer.name, bound, _F32, "accumulators")
    if layer.kind == "conv":
        (ph, pw), (sh, sw) = layer.padding, layer.stride
        acc = b.node("Conv", [x, w], "acc", pads=[ph, pw, ph, pw], strides=[sh, sw])
        layout = "NCHW"
    else:
        if layer.flatten:
            x = b.node("Flatten", [x], "flat", axis=1)
        acc = b.node("Gemm", [x, w], "acc", transB=1)
        layout = "NC"
    n = layer.out_channels
    rows = zip(layer.bias.tolist(), layer.mult.tolist(), layer.shift.tolist(), strict=True)
    if layer.hi - layer.lo > _MAX_THRESHOLDS:
        raise QonnxError(
            f"layer {layer.name!r}: output range [{layer.lo}, {layer.hi}] needs more than "
            f"{_MAX_THRESHOLDS} thresholds; export 8-bit outputs (export_qat(..., logits_from=x))"
        )
    if layer.res_from is None:
        t = [acc_thresholds(bb, m, s, layer.lo, layer.hi) for bb, m, s in rows]
        t32 = np.clip(np.array(t, dtype=np.float64), -bound - 1, bound + 1).astype(np.float32)
        return b.threshold(acc, t32, layer.lo, layer.hi, layout, "act")
    view = (1, n, 1, 1)
    mult, res_mult = layer.mult.astype(np.float64), np.asarray(layer.res_mult, np.float64)
    u_bound = bound * int(layer.mult.max()) + r_max * int(np.max(layer.res_mult))
    _check_bound(layer.name, u_bound, _F64, "acc * mult + res * res_mult")
    if layer.res_stride > 1:
        s = layer.res_stride
        res = b.node(
            "Slice",
            [
                res,
                b.const("starts", np.array([0, 0], np.int64)),
                b.const("ends", np.array([_F64, _F64], np.int64)),
                b.const("axes", np.array([2, 3], np.int64)),
                b.const("steps", np.array([s, s], np.int64)),
            ],
            "res",
        )
    if layer.res_pad:
        p = layer.res_pad
        res = b.node(
            "Pad", [res, b.const("pads", np.array([0, p, 0, 0, 0, p, 0, 0], np.int64))], "res"
        )
    acc64 = b.node("Cast", [acc], "acc64", to=11)
    res64 = b.node("Cast", [res], "res64", to=11)
    u = b.node(
        "Add",
        [
            b.node("Mul", [acc64, b.const("mult", mult.reshape(view))], "u"),
            b.node("Mul", [res64, b.const("res_mult", res_mult.reshape(view))], "u"),
        ],
        "u",
    )
    t = np.array([sum_thresholds(bb, m, s, layer.lo, layer.hi) for bb, m, s in rows], np.float64)
    out = b.threshold(u, np.clip(t, -u_bound - 1, u_bound + 1), layer.lo, layer.hi, layout, "act")
    return b.node("Cast", [out], "act", to=1)


def _pool(
    b: _Builder, op: str, x: str, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple
) -> str:
    return b.node(
        op, [x], "pool", kernel_shape=list(kernel), strides=list(stride), pads=[*pad, *pad]
    )


def qonnx_model(graph: IntGraph, batch: int = 1) -> Any:
    """The QONNX ``ModelWrapper`` of an integer graph (shapes inferred, ready to execute)."""
    onnx, model_wrapper = _require()
    from qonnx.transformation.infer_shapes import InferShapes

    b = _Builder()
    bits, signed, narrow = _range_bits(graph.input_lo, graph.input_hi)
    x = b.node("Cast", ["x"], "x64", to=11)
    x = b.node("Div", [x, b.const("input_scale", np.float64(graph.input_scale))], "x")
    outs = [b.quant(x, 1.0, bits, signed, narrow, "x_int")]
    ranges = [max(-graph.input_lo, graph.input_hi)]
    for i, node in enumerate(graph.layers):
        x, x_max = outs[graph.source(i) + 1], ranges[graph.source(i) + 1]
        if isinstance(node, IntLayer):
            r = None if node.res_from is None else node.res_from + 1
            y = _layer(
                b, node, x, x_max, None if r is None else outs[r], 0 if r is None else ranges[r]
            )
            y_max = max(-node.lo, node.hi)
        elif isinstance(node, IntMaxPool):
            y, y_max = _pool(b, "MaxPool", x, node.kernel, node.stride, node.padding), x_max
        elif isinstance(node, IntAvgPool):
            mean = _pool(b, "AveragePool", x, node.kernel, node.stride, (0, 0))
            half = b.node("Add", [mean, b.const("half", np.float32(0.5))], "pool")
            y, y_max = b.node("Floor", [half], "pool"), x_max
        elif isinstance(node, IntPool):
            total = b.node(
                "ReduceSum", [x, b.const("axes", np.array([2, 3], np.int64))], "sum", keepdims=0
            )
            t = [acc_thresholds(0, node.mult, node.shift, node.lo, node.hi)]
            y = b.threshold(total, np.array(t, np.float32), node.lo, node.hi, "NC", "act")
            y_max = max(-node.lo, node.hi)
        else:
            raise QonnxError(f"node {node.name!r}: {type(node).__name__} has no QONNX form yet")
        outs.append(y)
        ranges.append(y_max)
    b.nodes.append(onnx.helper.make_node("Identity", [outs[-1]], ["y_int"], name="y_int"))
    b.nodes.append(
        onnx.helper.make_node(
            "Mul",
            [outs[-1], b.const("output_scale", np.float32(graph.output_scale))],
            ["y"],
            name="y",
        )
    )
    shapes = graph.shapes()
    f32 = onnx.TensorProto.FLOAT
    g = onnx.helper.make_graph(
        b.nodes,
        "rmsmp",
        [onnx.helper.make_tensor_value_info("x", f32, [batch, *graph.input_shape])],
        [
            onnx.helper.make_tensor_value_info("y", f32, [batch, *shapes[-1]]),
            onnx.helper.make_tensor_value_info("y_int", f32, [batch, *shapes[-1]]),
        ],
        b.inits,
    )
    proto = onnx.helper.make_model(
        g,
        opset_imports=[
            onnx.helper.make_opsetid("", OPSET),
            onnx.helper.make_opsetid(QONNX_DOMAIN, 1),
        ],
        producer_name="rmsmp",
    )
    model = model_wrapper(proto).transform(InferShapes())
    formats = {n.name: n.formats for n in graph.layers if isinstance(n, IntLayer)}
    model.set_metadata_prop("rmsmp.formats", json.dumps(formats))
    model.set_metadata_prop("rmsmp.output_scale", repr(graph.output_scale))
    return model


def execute(model: Any, x: np.ndarray) -> np.ndarray:
    """qonnx's own execution of a model from ``qonnx_model``: the integer output ``y_int``."""
    from qonnx.core.onnx_exec import execute_onnx

    out = execute_onnx(model, {"x": np.asarray(x, dtype=np.float32)})
    return np.asarray(out["y_int"])


def to_qonnx(
    qmodel: object, example_input: torch.Tensor, path: str | Path, check: bool = True
) -> Path:
    """Write a quantized model of ours (``rmsmp.quantize``'s, a QAT-prepared CNN, or an
    IntGraph) as a QONNX file for ``example_input``'s batch size; returns the path.

    With ``check``, qonnx executes the file on ``example_input`` and the integers must equal
    ``IntGraph.evaluate``'s, else a QonnxError.
    """
    graph = _graph_of(qmodel, example_input)
    model = qonnx_model(graph, int(example_input.shape[0]))
    path = Path(path)
    model.save(str(path))
    if check:
        x = example_input.detach().cpu().numpy().astype(np.float32)
        want = graph.evaluate(graph.quantize_input(x))
        got = execute(model, x)
        if not np.array_equal(got.astype(np.int64), want) or not np.array_equal(got, want):
            raise QonnxError(f"{path}: qonnx's execution differs from the integer graph's")
    return path


# ---- in -----------------------------------------------------------------------------------------


_SUPPORTED_IN = (
    "Quant (zero point 0), Conv (groups 1, dilation 1, symmetric pads), Gemm, MatMul, Add of a "
    "bias, Relu, MaxPool, Flatten/Reshape before a Gemm/MatMul, Identity, Dropout"
)


def _pow2(ratio: float) -> int | None:
    """e where ``ratio == 2^e`` exactly, else None."""
    if not ratio > 0:
        return None
    m, e = math.frexp(ratio)
    return e - 1 if m == 0.5 else None


def _rounding_bias(node: str, mode: str, e: int, lo: int) -> int:
    """What to add to the bias (units of 2^-F accumulator steps) so that requant's round half
    up gives ``mode`` on values ``t = (acc + bias) * 2^e``, or a QonnxError naming the node."""
    half = 1 << (numerics.BIAS_FRAC_BITS - 1 - e) if e < 0 else 0
    mode = mode.upper()
    if e >= 0:  # t is an integer: every rounding leaves it alone
        return 0
    step = 1 << numerics.BIAS_FRAC_BITS  # one accumulator step, 2^e in t
    offsets = {"FLOOR": -half, "CEIL": half - step}
    if lo >= 0:  # t < 0 clamps to lo either way: only t >= 0 matters
        offsets |= {"HALF_UP": 0, "HALF_DOWN": -step, "DOWN": -half, "UP": half - step}
    if mode in offsets:
        return offsets[mode]
    raise QonnxError(
        f"node {node!r}: rounding {mode} of values on a 2^{e} grid has ties that the "
        "accelerator's requant (round half up) rounds otherwise; quantize with FLOOR or CEIL "
        "rounding (or HALF_UP after a ReLU), or with scales whose ratio is at least 1"
    )


class _Importer:
    """One pass over a QONNX graph in topological order, building the integer graph."""

    def __init__(self, model: Any, formats: tuple[str, ...]) -> None:
        self.model, self.formats = model, formats
        self.values: dict[str, tuple] = {}
        self.layers: list[Node] = []
        self.input: tuple[float, int, int] | None = None
        for init in model.graph.initializer:
            self.values[init.name] = ("const", model.get_initializer(init.name))

    def const(self, node: Any, i: int) -> np.ndarray:
        v = self.values.get(node.input[i]) if i < len(node.input) else None
        if v is None or v[0] != "const":
            raise QonnxError(f"node {node.name!r}: input {i} must be a constant")
        return v[1]

    def get(self, node: Any, i: int, kind: str) -> tuple:
        v = self.values.get(node.input[i])
        if v is None or v[0] != kind:
            want = {"act": "a quantized activation", "weight": "Quant'ed weights"}.get(kind, kind)
            raise QonnxError(f"node {node.name!r} ({node.op_type}): input {i} must be {want}")
        return v

    def attr(self, node: Any, name: str, default: Any = None) -> Any:
        from onnx import helper

        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def run(self, graph_input: str) -> None:
        self.values[graph_input] = ("float",)
        for node in self.model.graph.node:
            op = getattr(self, f"op_{node.op_type.lower()}", None)
            if op is None:
                raise QonnxError(
                    f"node {node.name!r}: {node.op_type} has no integer form in rmsmp; supported: "
                    + _SUPPORTED_IN
                )
            self.values[node.output[0]] = op(node)

    # -- ops --------------------------------------------------------------------------------------
    def op_quant(self, node: Any) -> tuple:
        from qonnx.custom_op.general.intquant import int_quant, max_int, min_int

        scale, zeropt = self.const(node, 1), self.const(node, 2)
        bitwidth = self.const(node, 3)
        bits = int(bitwidth)
        signed, narrow = bool(self.attr(node, "signed", 1)), bool(self.attr(node, "narrow", 0))
        mode = self.attr(node, "rounding_mode", b"ROUND")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if np.any(zeropt != 0):
            raise QonnxError(f"node {node.name!r}: zero point must be 0 (symmetric quantization)")
        lo, hi = int(min_int(signed, narrow, bits)), int(max_int(signed, narrow, bits))
        kind = self.values.get(node.input[0], ("?",))[0]
        if kind == "const":
            w = self.values[node.input[0]][1]
            wq = int_quant(w, scale, zeropt, bitwidth, signed, narrow, mode)
            w_int = np.rint(wq / scale)
            if not np.array_equal(w_int * scale, wq):
                raise QonnxError(f"node {node.name!r}: weights are not integers times the scale")
            return ("weight", w_int.astype(np.int64), np.broadcast_to(scale, w.shape), node.name)
        s = float(np.asarray(scale).reshape(-1)[0])
        if np.asarray(scale).size != 1:
            raise QonnxError(f"node {node.name!r}: an activation needs one (per-tensor) scale")
        if kind == "float":
            if self.input is not None:
                raise QonnxError(f"node {node.name!r}: the graph input is quantized twice")
            if _pow2(s) is None or mode.upper() not in ("ROUND", "HALF_EVEN"):
                raise QonnxError(
                    f"node {node.name!r}: the input quantizer needs a power-of-two scale and "
                    f"ROUND (got {s:g}, {mode}): qonnx divides in float32, rmsmp in float64, and "
                    "only then do they round alike"
                )
            self.input = (s, lo, hi)
            return ("act", -1, s, lo, hi, False)
        if kind == "acc":
            return self.requant(node, self.values[node.input[0]][1], s, lo, hi, mode)
        raise QonnxError(
            f"node {node.name!r}: a Quant must follow the graph input, a Conv/Gemm/MatMul (+ bias, "
            "+ ReLU) or stand on constant weights"
        )

    def _acc(self, node: Any, kind: str, x: tuple, w_int: np.ndarray, s_w: np.ndarray, **kw: Any):
        n = w_int.shape[0]
        s_rows = np.asarray(s_w, dtype=np.float64).reshape(n, -1)[:, 0]
        if not np.all(np.asarray(s_w, np.float64).reshape(n, -1) == s_rows[:, None]):
            raise QonnxError(f"node {node.name!r}: weight scales must be per output row")
        return (
            "acc",
            {
                "name": node.name,
                "kind": kind,
                "src": x[1],
                "s_in": x[2],
                "x_max": max(-x[3], x[4]),
                "weight": w_int,
                "s_acc": x[2] * s_rows,
                "bias": np.zeros(n),
                "relu": False,
                "flatten": x[5],
                **kw,
            },
        )

    def op_conv(self, node: Any) -> tuple:
        x = self.get(node, 0, "act")
        _, w_int, s_w, _ = self.get(node, 1, "weight")
        pads = list(self.attr(node, "pads", [0, 0, 0, 0]))
        if (
            self.attr(node, "group", 1) != 1
            or any(d != 1 for d in self.attr(node, "dilations", [1, 1]))
            or pads[:2] != pads[2:]
            or x[5]
        ):
            raise QonnxError(
                f"node {node.name!r}: Conv needs groups 1, dilation 1 and symmetric pads"
            )
        acc = self._acc(
            node,
            "conv",
            x,
            w_int,
            s_w,
            stride=tuple(self.attr(node, "strides", [1, 1])),
            padding=tuple(pads[:2]),
        )
        if len(node.input) > 2:
            self.add_bias(node, acc[1], self.bias_input(node, 2))
        return acc

    def _linear(self, node: Any, w_t: bool) -> tuple:
        x = self.get(node, 0, "act")
        _, w_int, s_w, _ = self.get(node, 1, "weight")
        if w_t:
            w_int, s_w = w_int.T, np.asarray(s_w).T
        return self._acc(node, "linear", x, w_int, s_w)

    def op_gemm(self, node: Any) -> tuple:
        if self.attr(node, "transA", 0) or self.attr(node, "alpha", 1.0) != 1.0:
            raise QonnxError(f"node {node.name!r}: Gemm needs transA 0 and alpha 1")
        acc = self._linear(node, not self.attr(node, "transB", 0))
        if len(node.input) > 2:
            if self.attr(node, "beta", 1.0) != 1.0:
                raise QonnxError(f"node {node.name!r}: Gemm's bias needs beta 1")
            self.add_bias(node, acc[1], self.bias_input(node, 2))
        return acc

    def op_matmul(self, node: Any) -> tuple:
        return self._linear(node, True)

    def bias_input(self, node: Any, i: int) -> np.ndarray:
        """A float bias, or a Quant'ed one (e.g. Brevitas' Int32 bias) as its real values."""
        v = self.values.get(node.input[i], ("?",))
        if v[0] == "weight":
            return v[1] * np.asarray(v[2], np.float64)
        return self.const(node, i)

    def add_bias(self, node: Any, acc: dict, b: np.ndarray) -> None:
        b = np.broadcast_to(np.asarray(b, np.float64).reshape(-1), acc["bias"].shape)
        b_int = np.rint(b / acc["s_acc"])
        if not np.array_equal(b_int * acc["s_acc"], b) or acc["relu"]:
            raise QonnxError(
                f"node {node.name!r}: the bias must be a multiple of the accumulator scale (input "
                "scale x weight scale), added before the ReLU; quantize it with an Int32 bias "
                "quantizer"
            )
        acc["bias"] = acc["bias"] + b_int

    def op_add(self, node: Any) -> tuple:
        a, c = (self.values.get(i, ("?",)) for i in node.input[:2])
        if a[0] == "const":
            a, c = c, a
        if a[0] != "acc" or c[0] != "const":
            raise QonnxError(
                f"node {node.name!r}: only a constant bias can be added (residual adds are not "
                "imported yet)"
            )
        acc = dict(a[1])
        self.add_bias(node, acc, c[1])
        return ("acc", acc)

    def op_relu(self, node: Any) -> tuple:
        v = self.values.get(node.input[0], ("?",))
        if v[0] == "act" and v[3] >= 0:
            return v
        if v[0] != "acc":
            raise QonnxError(f"node {node.name!r}: a Relu must follow a Conv/Gemm/MatMul")
        return ("acc", dict(v[1], relu=True))

    def op_maxpool(self, node: Any) -> tuple:
        x = self.get(node, 0, "act")
        pads = list(self.attr(node, "pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:] or x[5]:
            raise QonnxError(f"node {node.name!r}: MaxPool needs symmetric pads")
        kernel = tuple(self.attr(node, "kernel_shape"))
        self.layers.append(
            IntMaxPool(
                node.name,
                kernel,
                tuple(self.attr(node, "strides", kernel)),
                tuple(pads[:2]),
                x[2],
                self.src(x),
            )
        )
        return ("act", len(self.layers) - 1, *x[2:5], False)

    def op_flatten(self, node: Any) -> tuple:
        x = self.get(node, 0, "act")
        if self.attr(node, "axis", 1) != 1:
            raise QonnxError(f"node {node.name!r}: Flatten must keep the batch axis (axis 1)")
        return (*x[:5], True)

    def op_reshape(self, node: Any) -> tuple:
        x = self.get(node, 0, "act")
        shape = [int(s) for s in self.const(node, 1)]
        if len(shape) != 2 or shape[1] in (0,) or (shape[0] not in (0, 1, -1) and shape[1] != -1):
            raise QonnxError(
                f"node {node.name!r}: only a flatten to (batch, features) is supported"
            )
        return (*x[:5], True)

    def op_identity(self, node: Any) -> tuple:
        return self.values[node.input[0]]

    op_dropout = op_identity

    # -- layers ---------------------------------------------------------------------------------
    def src(self, x: tuple) -> int | None:
        return None if x[1] == len(self.layers) - 1 else x[1]

    def requant(self, node: Any, acc: dict, s_out: float, lo: int, hi: int, mode: str) -> tuple:
        """The IntLayer of an accumulator quantized by ``node``: exactly qonnx's float result."""
        name = acc["name"]
        if acc["relu"]:
            lo = max(lo, 0)
        w = acc["weight"]
        bound = int(np.abs(w).reshape(len(w), -1).sum(1).max()) * acc["x_max"]
        bound += int(np.abs(acc["bias"]).max(initial=0))
        if bound >= _F32:
            raise QonnxError(
                f"node {name!r}: accumulators may reach {bound}, beyond exact float32 sums in "
                "qonnx's execution"
            )
        n = len(w)
        mult, shift, bias = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        for r in range(n):
            e = _pow2(float(acc["s_acc"][r]) / s_out)
            if e is None or math.ldexp(s_out, e) != acc["s_acc"][r]:
                raise QonnxError(
                    f"node {name!r}: row {r}'s scale ratio (input x weight / output) "
                    f"{acc['s_acc'][r] / s_out:.6g} is not a power of two, which the requant "
                    "(integer multiplier and shift) and qonnx's float32 division do not round "
                    "alike; use power-of-two (fixed-point) scales"
                )
            mult[r], shift[r] = 1 << 30, 30 + numerics.BIAS_FRAC_BITS - e
            if not 0 <= shift[r] <= numerics.MAX_SHIFT:
                raise QonnxError(f"node {name!r}: row {r}'s scale ratio 2^{e} is out of range")
            bias[r] = int(acc["bias"][r]) * (1 << numerics.BIAS_FRAC_BITS)
            bias[r] += _rounding_bias(node.name, mode, e, lo)
        self.layers.append(
            IntLayer(
                name=name,
                kind=acc["kind"],
                weight=w,
                formats=[self.row_format(name, r, w[r]) for r in range(n)],
                bias=bias,
                mult=mult,
                shift=shift,
                lo=lo,
                hi=hi,
                in_scale=acc["s_in"],
                out_scale=s_out,
                stride=acc.get("stride", (1, 1)),
                padding=acc.get("padding", (0, 0)),
                flatten=acc["flatten"],
                relu=acc["relu"],
                src=None if acc["src"] == len(self.layers) - 1 else acc["src"],
            )
        )
        return ("act", len(self.layers) - 1, s_out, lo, hi, False)

    def row_format(self, name: str, r: int, row: np.ndarray) -> str:
        for f in self.formats:
            if np.isin(row, numerics.weight_format(f).levels()).all():
                return f
        raise QonnxError(
            f"node {name!r}: row {r}'s weights (range [{row.min()}, {row.max()}]) are levels of "
            f"none of the formats {list(self.formats)}"
        )


def from_qonnx(path: str | Path, config: AccelConfig | str | None = None) -> IntGraph:
    """The integer graph of a QONNX file (e.g. Brevitas' ``export_qonnx``), for rmsmp.compile.

    Each weight row gets the first format of ``FORMAT_ORDER`` whose levels hold it, among the
    formats of ``config`` (an AccelConfig or a board/preset name) when given.
    """
    _, model_wrapper = _require()
    from qonnx.transformation.general import GiveUniqueNodeNames, RemoveStaticGraphInputs
    from qonnx.transformation.infer_shapes import InferShapes

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such QONNX file")
    model = model_wrapper(str(path))
    model = model.transform(RemoveStaticGraphInputs()).transform(InferShapes())
    model = model.transform(GiveUniqueNodeNames())
    if config is None:
        formats = FORMAT_ORDER
    else:
        cfg = config if isinstance(config, AccelConfig) else target_config(config)
        formats = tuple(f for f in FORMAT_ORDER if f in {g.fmt for g in cfg.groups})
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise QonnxError(f"{path}: the model must have one input and one output")
    imp = _Importer(model, formats)
    inp = model.graph.input[0].name
    imp.run(inp)
    out = imp.values.get(model.graph.output[0].name, ("?",))
    if out[0] != "act" or out[1] < 0 or imp.input is None:
        raise QonnxError(
            f"{path}: the output {model.graph.output[0].name!r} is not a quantized layer output; "
            "end the model with an output quantizer (e.g. QuantLinear(..., output_quant=...))"
        )
    if out[1] != len(imp.layers) - 1:
        raise QonnxError(f"{path}: the output must be the last layer's")
    shape = tuple(int(d) for d in model.get_tensor_shape(inp)[1:])
    s, lo, hi = imp.input
    return IntGraph(imp.layers, shape, s, lo, hi, meta={"source": str(path)})


__all__ = ["QonnxError", "from_qonnx", "qonnx_model", "to_qonnx"]
