"""Capture of token models (an MLP over (B, T, D), a BERT-style encoder) into a hybrid graph.

``torch.fx`` cannot trace a transformer as written (``b, n, d = x.shape``, ``torch.finfo`` of a
dtype), so the model is run once on its example inputs under a ``TorchFunctionMode`` that
records every torch op reached from an input: shape queries (``x.shape``, ``x.size()``) yield
plain ints and are no ops at all, and the head split/merge (view, reshape, transpose, permute,
flatten) becomes host layout ops. As with ``torch.jit.trace``, Python control flow is taken as
it ran on the example (the sequence length, for one, is fixed by it).

Every QAT Linear (``QLinear``, from ``methods.prepare``) runs on the accelerator as a 1x1
convolution over the tokens; a chain of them joined only by ReLUs is one device op whose
intermediate grids are the next layer's input quantizer. A device op's own output gets a
signed 8-bit grid calibrated on the example (largest |value| / 127); it is an 8-bit value as
the accelerator stores it. The attention matmuls (Q.K^T, A.V) take 8-bit operands: a device
output as it is, a float value (the softmax output) quantized on a grid calibrated the same way
(unsigned where it is never negative), and sum exactly in int64 on the host. Softmax,
LayerNorm, GELU, embeddings and float Linears run on the host in float32. See
``benchmarks/transformer.py`` for the host vs. on-chip cost of the attention matmuls.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..arch import numerics
from ..compiler.hybrid import HybridGraph
from ..compiler.ir import IntGraph
from ..host.hybrid import DeviceOp, HostOp
from .capture import Step, UnsupportedLayerError
from .export import _qat_layer

MATMUL_BITS = 8
"""Width of the attention matmuls' operands."""

_ALIAS = {"contiguous", "clone", "detach", "dropout", "alpha_dropout"}
_RESHAPE = {"view", "reshape", "flatten", "unsqueeze", "squeeze", "view_as", "reshape_as"}
_BINARY = {
    "__add__": ("add", False),
    "__radd__": ("add", True),
    "__iadd__": ("add", False),
    "add": ("add", False),
    "__sub__": ("sub", False),
    "__rsub__": ("sub", True),
    "sub": ("sub", False),
    "__mul__": ("mul", False),
    "__rmul__": ("mul", True),
    "mul": ("mul", False),
    "__truediv__": ("div", False),
    "__rtruediv__": ("div", True),
    "div": ("div", False),
}
_CAST = {"to", "float", "bool", "long", "int", "type_as", "type", "double", "half"}


@dataclass
class _Node:
    """One recorded op: what it is, which recorded values it reads, its example output."""

    name: str
    kind: str
    inputs: list[int]
    params: dict
    out: torch.Tensor
    module: nn.Module | None = None
    users: int = 0


class _Recorder(TorchFunctionMode):
    """Records the ops reached from the inputs; the ops inside a QAT Linear are its own."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[_Node] = []
        self.values: dict[int, int] = {}
        self.keep: list[torch.Tensor] = []
        self.errors: list[str] = []
        self.path: list[str] = []
        self.depth = 0

    def add(self, node: _Node) -> None:
        """Append ``node``; its example output is now a recorded value."""
        for i in node.inputs:
            if i >= 0:
                self.nodes[i].users += 1
        self.nodes.append(node)
        self.keep.append(node.out)
        self.values[id(node.out)] = len(self.nodes) - 1

    def where(self) -> str:
        """The module path the recording is in."""
        return self.path[-1] if self.path else "model"

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth or not isinstance(out, torch.Tensor):
            return out
        flat, _ = tree_flatten((args, kwargs))
        tracked = [a for a in flat if isinstance(a, torch.Tensor) and id(a) in self.values]
        if not tracked:
            return out  # a constant (parameters, torch.arange(T), ...)
        name = getattr(func, "__name__", str(func))
        try:
            kind, inputs, params = _classify(name, args, kwargs, out, self.values)
        except _RefusedError as e:
            self.errors.append(f"{name} at {self.where()!r}: {e}")
            kind, inputs, params = "refused", tracked, {}  # still followed: later ops report too
        if kind == "alias":
            self.values[id(out)] = self.values[id(inputs[0])]
            self.keep.append(out)
            return out
        ids = [self.values[id(t)] for t in inputs]
        self.add(_Node(f"{self.where()}.{kind}", kind, ids, params, out))
        return out


class _RefusedError(Exception):
    """An op that has no hybrid form; the message says why and what to do."""


def _per_sample(t: torch.Tensor, out: torch.Tensor, what: str) -> None:
    if out.ndim == 0 or t.ndim == 0 or out.shape[0] != t.shape[0]:
        raise _RefusedError(f"{what} must keep the batch dimension first; reshape only per sample")


def _dims(dims: Any, ndim: int) -> tuple[int, ...]:
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    out = tuple(d % ndim for d in dims)
    if 0 in out:
        raise _RefusedError("reduces or moves the batch dimension; keep dim 0 the batch")
    return out


def _classify(
    name: str, args: tuple, kwargs: dict, out: torch.Tensor, values: dict[int, int]
) -> tuple[str, list[torch.Tensor], dict]:
    """(kind, tensor inputs, params) of a recorded op; kind 'alias' passes its input through."""
    x = args[0] if args else next(iter(kwargs.values()))

    def arg(i: int, key: str, default: Any = None) -> Any:
        return args[i] if len(args) > i else kwargs.get(key, default)

    if name in _ALIAS:
        if name in ("dropout", "alpha_dropout") and arg(2, "training", False):
            raise _RefusedError("dropout in training mode; capture the model in eval mode")
        return "alias", [x], {}
    if name in _RESHAPE:
        _per_sample(x, out, name)
        if tuple(out.shape) == tuple(x.shape):
            return "alias", [x], {}
        return "reshape", [x], {"shape": tuple(out.shape[1:])}
    if name in ("transpose", "swapaxes"):
        a, b = (d % x.ndim for d in (arg(1, "dim0"), arg(2, "dim1")))
        if 0 in (a, b):
            raise _RefusedError("moves the batch dimension; keep dim 0 the batch")
        dims = list(range(x.ndim))
        dims[a], dims[b] = b, a
        return "permute", [x], {"dims": tuple(dims)}
    if name == "permute":
        dims = tuple(args[1:]) if len(args) > 2 else tuple(arg(1, "dims"))
        dims = tuple(d % x.ndim for d in dims)
        if dims[0] != 0:
            raise _RefusedError("moves the batch dimension; keep dim 0 the batch")
        return "permute", [x], {"dims": dims}
    if name == "__getitem__":
        key = args[1] if isinstance(args[1], tuple) else (args[1],)
        if any(isinstance(k, torch.Tensor) for k in key) or not key or key[0] != slice(None):
            raise _RefusedError("only x[:, ...] with slices, ints and None (the batch kept whole)")
        return "index", [x], {"key": key}
    if name in ("matmul", "__matmul__", "bmm"):
        return "matmul", [x, args[1]], {}
    if name in _BINARY:
        kind, reflected = _BINARY[name]
        other = args[1] if len(args) > 1 else kwargs.get("other")
        if kwargs.get("alpha", 1) != 1:
            raise _RefusedError("add/sub with alpha; scale the operand instead")
        if isinstance(other, torch.Tensor) and id(other) in values:
            pair = [other, x] if reflected else [x, other]
            return kind, pair, {}
        o = other.detach().numpy() if isinstance(other, torch.Tensor) else other
        return kind, [x], {"other": np.asarray(o, np.float32), "const_first": reflected}
    if name in ("__invert__", "logical_not", "bitwise_not"):
        return "not", [x], {}
    if name in ("masked_fill", "masked_fill_"):
        value = arg(2, "value")
        if isinstance(value, torch.Tensor):
            value = float(value)
        return "masked_fill", [x, args[1]], {"value": float(value)}
    if name == "softmax":
        _dims(arg(1, "dim"), x.ndim)
        return "softmax", [x], {"dim": int(arg(1, "dim")) % x.ndim}
    if name == "layer_norm":
        shape = tuple(arg(1, "normalized_shape"))
        w, b = arg(2, "weight"), arg(3, "bias")
        w = np.ones(shape, np.float32) if w is None else w.detach().float().numpy()
        b = np.zeros(shape, np.float32) if b is None else b.detach().float().numpy()
        return "layernorm", [x], {"weight": w, "bias": b, "eps": float(arg(4, "eps", 1e-5))}
    if name == "gelu":
        return "gelu", [x], {"approximate": kwargs.get("approximate", "none")}
    if name in ("relu", "relu_"):
        return "relu", [x], {}
    if name == "embedding":
        return "embedding", [x], {"table": args[1].detach().float().numpy()}
    if name == "linear":
        w, b = arg(1, "weight"), arg(2, "bias")
        if id(w) in values:
            raise _RefusedError("a Linear whose weight is computed; use a fixed weight")
        bias = None if b is None else b.detach().float().numpy()
        return "linear", [x], {"weight": w.detach().float().numpy(), "bias": bias}
    if name in _CAST:
        if out.dtype == x.dtype:
            return "alias", [x], {}
        return "cast", [x], {"dtype": np.dtype(str(out.dtype).removeprefix("torch."))}
    if name in ("sum", "mean"):
        dims = arg(1, "dim")
        if dims is None:
            raise _RefusedError("reduces the batch dimension; give dim")
        keep = bool(arg(2, "keepdim", False))
        return name, [x], {"dims": _dims(dims, x.ndim), "keepdim": keep}
    if name in ("clamp", "clamp_min", "clamp_max", "clip"):
        lo = arg(1, "min") if name != "clamp_max" else None
        hi = arg(2, "max") if name == "clamp" else arg(1, "max") if name == "clamp_max" else None
        return "clamp", [x], {"min": lo, "max": hi}
    raise _RefusedError(
        "not supported in a token model; supported: Linear, matmul, softmax, LayerNorm, GELU, "
        "ReLU, embedding, elementwise + - * /, masked_fill, view/reshape/transpose/permute, sum"
    )


def _leaf(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) and isinstance(getattr(m, "wq", None), nn.Module)


def record(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[_Recorder, list[int]]:
    """Run ``model`` on ``inputs`` once, recording its ops; returns the recorder and the
    recorded values of the outputs (-1 - k: input k passed through)."""
    rec = _Recorder()
    hooks = []
    for path, m in model.named_modules():
        if path:
            hooks.append(m.register_forward_pre_hook(_enter(rec, path, _leaf(m))))
            hooks.append(m.register_forward_hook(_leave(rec, path, m, _leaf(m))))
    for k, x in enumerate(inputs):
        rec.values[id(x)] = -1 - k
        rec.keep.append(x)
    try:
        with torch.no_grad(), rec:
            out = model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    outs = out if isinstance(out, tuple | list) else (out,)
    missing = [k for k, o in enumerate(outs) if id(o) not in rec.values]
    for o in outs:
        if rec.values.get(id(o), -1) >= 0:
            rec.nodes[rec.values[id(o)]].users += 1
    if missing:
        rec.errors.append(f"output {missing[0]} does not depend on the inputs")
    if rec.errors:
        raise UnsupportedLayerError(
            f"{len(rec.errors)} unsupported op(s): "
            + " | ".join(dict.fromkeys(rec.errors))
            + ". Replace them, or run those parts outside the model."
        )
    return rec, [rec.values[id(o)] for o in outs]


def _enter(rec: _Recorder, path: str, leaf: bool):  # noqa: ANN202
    def hook(m: nn.Module, args: tuple) -> None:
        rec.path.append(path)
        if leaf:
            rec.depth += 1

    return hook


def _leave(rec: _Recorder, path: str, module: nn.Module, leaf: bool):  # noqa: ANN202
    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        rec.path.pop()
        if not leaf:
            return
        rec.depth -= 1
        x = args[0]
        if rec.depth == 0 and id(x) in rec.values:
            rec.add(_Node(path, "qlinear", [rec.values[id(x)]], {}, out, module))

    return hook


@dataclass
class _Value:
    """A recorded value in the hybrid graph: its id there, and its integer grid (scale, lo,
    hi) when it holds integers (lo, hi None: a wide int64 sum), None for a float value."""

    vid: int
    grid: tuple[float, int | None, int | None] | None = None


class _Export:
    """Turns the recorded ops into hybrid ops, choosing every integer grid."""

    def __init__(self, rec: _Recorder, inputs: tuple[torch.Tensor, ...]) -> None:
        self.rec = rec
        self.inputs = inputs
        self.n_inputs = len(inputs)
        self.ops: list[HostOp | DeviceOp] = []
        self.vals: dict[int, _Value] = {-1 - k: _Value(k) for k in range(len(inputs))}
        self.floats: dict[int, int] = {}
        self.done: set[int] = set()

    def emit(self, op: HostOp | DeviceOp) -> int:
        self.ops.append(op)
        return self.n_inputs + len(self.ops) - 1

    def as_float(self, i: int, name: str) -> int:
        """Value id of recorded value ``i`` in real units (dequantized once, then reused)."""
        v = self.vals[i]
        if v.grid is None:
            return v.vid
        if i not in self.floats:
            op = HostOp(f"{name}.dequantize", "dequantize", [v.vid], {"scale": v.grid[0]})
            self.floats[i] = self.emit(op)
        return self.floats[i]

    def as_int8(self, i: int, name: str) -> _Value:
        """Recorded value ``i`` as an 8-bit integer operand (quantized where it is not)."""
        v = self.vals[i]
        if v.grid is not None and v.grid[1] is not None:
            return v
        x = self.example(i).double()
        signed = bool((x < 0).any())
        lo, hi = numerics.act_range(MATMUL_BITS, signed)
        scale = max(float(x.abs().max()), 1e-8) / hi
        q = HostOp(f"{name}.quantize", "quantize", [self.as_float(i, name)], _grid(scale, lo, hi))
        return _Value(self.emit(q), (scale, lo, hi))

    def example(self, i: int) -> torch.Tensor:
        """The example value of recorded value ``i`` (-1 - k: input k)."""
        return self.rec.nodes[i].out if i >= 0 else self.inputs[-1 - i]

    def sole_user(self, i: int) -> int | None:
        """The one node reading node ``i``, if exactly one does."""
        if self.rec.nodes[i].users != 1:
            return None
        for j in range(i + 1, len(self.rec.nodes)):
            if i in self.rec.nodes[j].inputs:
                return j
        return None

    def run(self, outputs: list[int]) -> list[int]:
        for i, node in enumerate(self.rec.nodes):
            if i in self.done:
                continue
            if node.kind == "qlinear":
                self.linear_chain(i)
            elif node.kind == "matmul":
                a, b = (self.as_int8(j, node.name) for j in node.inputs)
                op = HostOp(node.name, "matmul", [a.vid, b.vid])
                self.vals[i] = _Value(self.emit(op), (a.grid[0] * b.grid[0], None, None))
            elif node.kind in ("reshape", "permute", "index"):
                v = self.vals[node.inputs[0]]
                op = HostOp(node.name, node.kind, [v.vid], node.params)
                self.vals[i] = _Value(self.emit(op), v.grid)
            else:
                ins = [self.as_float(j, node.name) for j in node.inputs]
                self.vals[i] = _Value(self.emit(HostOp(node.name, node.kind, ins, node.params)))
        return [self.as_float(i, "output") for i in outputs]

    def linear_chain(self, i: int) -> None:
        """QAT Linears joined only by ReLUs, from node ``i``: one device op."""
        first = self.rec.nodes[i]
        chain: list[tuple[_Node, bool]] = []
        j, end = i, i
        while True:
            node = self.rec.nodes[j]
            nxt = self.sole_user(j)
            relu = nxt is not None and self.rec.nodes[nxt].kind == "relu"
            end = nxt if relu else j
            chain.append((node, relu))
            self.done.update((j, end))
            after = self.sole_user(end)
            if after is None or self.rec.nodes[after].kind != "qlinear":
                break
            j = after
        x = first.inputs[0]
        aq = first.module.aq
        grid = (_step(aq), aq.lo, aq.hi)
        v = self.vals[x]
        if v.grid == grid:
            src = v.vid
        else:
            op = HostOp(f"{first.name}.quantize", "quantize", [self.as_float(x, first.name)])
            op.params = _grid(*grid)
            src = self.emit(op)
        layers = []
        s_in = grid[0]
        lead = tuple(self.example(x).shape[1:-1])
        for k, (node, relu) in enumerate(chain):
            if k + 1 < len(chain):
                q = chain[k + 1][0].module.aq
                s_out, lo, hi = _step(q), (0 if relu else q.lo), q.hi
            else:
                y = self.rec.nodes[end].out.double()
                lo, hi = numerics.act_range(MATMUL_BITS, True)
                s_out = max(float(y.abs().max()), 1e-8) / hi
                lo = 0 if relu else lo
            step = Step(node.name, "linear", op=node.module, relu=relu)
            layer = _qat_layer(step, s_in, s_out, lo, hi, None, None)
            # the same rows, validated once, as a 1x1 convolution (replace would re-check them)
            layer.kind, layer.weight = "conv", layer.weight[..., None, None]
            layers.append(layer)
            s_in = s_out
        d = first.module.in_features
        graph = IntGraph(layers, (d, 1, math.prod(lead)), grid[0], grid[1], grid[2])
        name = first.name if len(chain) == 1 else f"{first.name}..{chain[-1][0].name}"
        vid = self.emit(DeviceOp(name, [src], graph, len(layers)))
        self.vals[end] = _Value(vid, (layers[-1].out_scale, layers[-1].lo, layers[-1].hi))
        self.done.add(i)


def _step(q: nn.Module) -> float:
    return float(q.step.detach().abs().clamp_min(1e-8))


def _grid(scale: float, lo: int, hi: int) -> dict:
    return {"scale": scale, "lo": lo, "hi": hi}


def capture_tokens(
    model: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...]
) -> HybridGraph:
    """The hybrid graph of a token model whose Linears are QAT layers (``methods.prepare``).

    ``inputs`` (one tensor or a tuple: the model's positional inputs, a batch) fix the shapes,
    and calibrate the 8-bit grids of the device outputs and matmul operands. Raises
    ``UnsupportedLayerError`` listing every op without a hybrid form.
    """
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    model.eval()
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _leaf(m)]
    rec, outs = record(model, inputs)
    exp = _Export(rec, inputs)
    outputs = exp.run(outs)
    counts = Counter(op.kind for op in exp.ops if isinstance(op, HostOp))
    meta = {"model": type(model).__name__, "float_linears": linears, "host_ops": dict(counts)}
    shapes = [tuple(x.shape[1:]) for x in inputs]
    return HybridGraph(exp.ops, shapes, outputs, meta)
