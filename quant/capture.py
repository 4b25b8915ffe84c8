"""Graph capture of a CNN with torch.fx: the fused steps that quantize and export share.

``capture`` traces a model, checks every op against what the integer graph holds, and fuses the
ops into ``Step``s: Conv2d/Linear (+BatchNorm) (+residual add) (+ReLU/ReLU6), max pooling and
average pooling. A step reads an earlier step's output (or the graph input) by index, so a
residual network becomes a DAG in topological order. Every unsupported op is listed, with its
module path or fx node name and the nearest supported alternative, in one error.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

from .qat import ActQuantizer

SUPPORTED = (
    "Conv2d (groups=1, dilation=1, zero padding), Linear, BatchNorm after a Conv2d/Linear, "
    "ReLU/ReLU6 after a Conv2d/Linear(+BN) or a residual add, residual adds (out + identity, "
    "an option-A shortcut x[:, :, ::s, ::s] zero-padded in channels), MaxPool2d, AvgPool2d, "
    "AdaptiveAvgPool2d(1), flatten before a Linear, Dropout, Identity"
)


class UnsupportedLayerError(TypeError):
    """A module or op the quantizer cannot map onto the integer graph; the message names it."""


@dataclass(eq=False)
class Step:
    """One node of the integer graph with what gets fused into it.

    ``kind`` is conv, linear, maxpool or avgpool. ``src`` and ``res`` index earlier steps (-1: the
    graph input; while capturing they hold the Step itself). ``out_quant`` is a QAT activation
    quantizer applied to this step's output; ``out_shape`` the per-sample shape of the output.
    """

    name: str
    kind: str
    src: Any = -1
    op: nn.Conv2d | nn.Linear | None = None
    bn: nn.BatchNorm1d | nn.BatchNorm2d | None = None
    relu: bool = False
    relu6: bool = False
    flatten: bool = False
    res: Any = None
    res_stride: int = 1
    res_pad: int = 0
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    out_quant: ActQuantizer | None = None
    out_shape: tuple[int, ...] = ()
    out: fx.Node | None = field(default=None, repr=False)


@dataclass
class Captured:
    """The steps of a model in topological order, its per-sample input shape, and the QAT
    activation quantizer applied to the graph input, if any."""

    steps: list[Step]
    input_shape: tuple[int, ...]
    input_quant: ActQuantizer | None = None


@dataclass(frozen=True)
class _Ref:
    """What an fx node's value is: a step's output (or the input pseudo-step), maybe flattened or
    subsampled / channel-padded (an option-A shortcut)."""

    step: Step
    node: fx.Node
    flat: bool = False
    stride: int = 1
    pad: int = 0


class _Tracer(fx.Tracer):
    """Keeps Conv2d/Linear subclasses (QAT layers) and activation quantizers as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, nn.Conv2d | nn.Linear | ActQuantizer):
            return True
        return super().is_leaf_module(m, qualname)


_RELU = {F.relu, torch.relu}
_ADD = {operator.add, operator.iadd, torch.add}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}
_ALIAS = (nn.Dropout, nn.Identity)


def _alternative(what: str) -> str:
    """The nearest supported alternative to an unsupported op, by its name."""
    low = what.lower()
    if any(a in low for a in ("gelu", "silu", "sigmoid", "tanh", "elu", "swish", "mish", "prelu")):
        return "use ReLU"
    if "softmax" in low:
        return "end the model at its logits and apply softmax on the host"
    if any(a in low for a in ("upsample", "interpolate", "transpose", "pixel")):
        return "use strided Conv2d / pooling only (no upsampling); run the decoder on the host"
    if any(a in low for a in ("cat", "stack")):
        return "use a residual add (out + identity) instead of concatenation"
    if any(a in low for a in ("mul", "sub", "div", "matmul")):
        return "use a residual add (out + identity)"
    if "norm" in low:
        return "use BatchNorm directly after a Conv2d/Linear (folded)"
    if "pool" in low:
        return "use MaxPool2d, AvgPool2d or AdaptiveAvgPool2d(1)"
    if "conv" in low:
        return "use Conv2d"
    return f"use {SUPPORTED}"


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Capture:
    """One pass over the traced graph; collects every problem instead of stopping at the first."""

    def __init__(self, gm: fx.GraphModule, shapes: dict[fx.Node, tuple[int, ...]]) -> None:
        self.gm, self.shapes = gm, shapes
        self.modules = dict(gm.named_modules())
        self.refs: dict[fx.Node, _Ref] = {}
        self.steps: list[Step] = []
        self.errors: list[str] = []
        self.input_quant: ActQuantizer | None = None
        self.input = Step("input", "input")  # the graph input, as the step it comes from

    # -- helpers --------------------------------------------------------------------------------
    def fail(self, node: fx.Node, what: str, why: str) -> None:
        self.errors.append(f"{what} at {self.where(node)!r}: {why}")

    def where(self, node: fx.Node) -> str:
        return str(node.target) if node.op == "call_module" else node.name

    def known(self, node: Any) -> bool:
        """Whether ``node`` has a value; not after an unsupported producer (already reported)."""
        return isinstance(node, fx.Node) and node in self.refs

    def value(self, node: Any, what: str) -> _Ref | None:
        """The plain (not flattened / shortcut) value of an operand, or None after an error."""
        if not self.known(node):
            return None
        ref = self.refs[node]
        if ref.flat:
            self.fail(ref.node, "flatten", f"must directly precede a Linear, not {what}")
            return None
        if ref.stride != 1 or ref.pad:
            self.fail(ref.node, "shortcut slicing/padding", "only feeds a residual add")
            return None
        return ref

    def open_step(self, node: Any, stages: tuple[str, ...]) -> Step | None:
        """The step whose output is ``node`` if the next fused op may join it: the step has
        reached one of ``stages`` and ``node`` is used only once."""
        ref = self.refs.get(node) if isinstance(node, fx.Node) else None
        if ref is None or ref.flat or ref.stride != 1 or ref.pad:
            return None
        s = ref.step
        if s.out is not node or len(node.users) != 1 or s.kind not in ("conv", "linear"):
            return None
        stage = "relu" if s.relu else "add" if s.res is not None else "bn" if s.bn else "op"
        return s if stage in stages else None

    def new_step(self, node: fx.Node, step: Step) -> None:
        step.out = node
        self.steps.append(step)
        self.refs[node] = _Ref(step, node)

    def extend(self, node: fx.Node, step: Step) -> None:
        step.out = node
        self.refs[node] = _Ref(step, node)

    # -- ops --------------------------------------------------------------------------------------
    def compute(self, node: fx.Node, m: nn.Conv2d | nn.Linear, name: str) -> None:
        arg = node.args[0]
        ref = self.refs.get(arg)
        flatten = ref is not None and ref.flat and isinstance(m, nn.Linear)
        if not flatten:
            ref = self.value(arg, type(m).__name__)
        if ref is None:
            return
        kind = "conv" if isinstance(m, nn.Conv2d) else "linear"
        self.new_step(node, Step(name, kind, ref.step, op=m, flatten=flatten))

    def batchnorm(self, node: fx.Node, m: nn.Module) -> None:
        what = type(m).__name__
        if not self.known(node.args[0]):
            return
        step = self.open_step(node.args[0], ("op",))
        if step is None:
            self.fail(node, what, "must directly follow a Conv2d/Linear used only by it; fold it")
        elif isinstance(step.op, nn.Conv2d) != isinstance(m, nn.BatchNorm2d):
            self.fail(node, what, "BatchNorm2d follows a Conv2d, BatchNorm1d a Linear")
        elif m.running_mean is None or m.running_var is None:
            self.fail(node, what, "without running stats it cannot be folded; track them")
        elif m.num_features != step.op.weight.shape[0]:
            self.fail(node, what, "num_features differs from the preceding layer")
        else:
            step.bn = m
            self.extend(node, step)

    def relu(self, node: fx.Node, six: bool) -> None:
        if not self.known(node.args[0]):
            return
        step = self.open_step(node.args[0], ("op", "bn", "add"))
        if step is None:
            what = "ReLU6" if six else "ReLU"
            why = "must directly follow a Conv2d/Linear(+BN) or a residual add used only by it"
            self.fail(node, what, why)
            return
        step.relu, step.relu6 = True, six
        self.extend(node, step)

    def add(self, node: fx.Node) -> None:
        a, b = node.args[:2]
        if node.kwargs.get("alpha", 1) != 1 or len(node.args) > 2:
            self.fail(node, "add with alpha", "use a plain residual add (out + identity)")
            return
        if not (self.known(a) and self.known(b)):
            return
        main = [(s, o) for m, o in ((a, b), (b, a)) if (s := self.open_step(m, ("op", "bn")))]
        main = [(s, o) for s, o in main if s.kind == "conv"]
        if not main:
            why = "one operand must be a Conv2d(+BN) output used only by the add (the main path)"
            self.fail(node, "add", why)
            return
        step, other = main[0]
        ref = self.refs[other]
        if ref.flat or ref.step is step:
            why = "the shortcut must be another feature map (for x + x, double the weights)"
            self.fail(node, "add", why)
            return
        step.res, step.res_stride, step.res_pad = ref.step, ref.stride, ref.pad
        self.extend(node, step)

    def pool(self, node: fx.Node, kind: str, what: str, kernel: Any, stride: Any, pad: Any) -> None:
        ref = self.value(node.args[0], what)
        if ref is None:
            return
        if kernel is None:  # global
            kernel = stride = tuple(self.shapes[node.args[0]][2:])
        k, s, p = _pair(kernel), _pair(stride if stride is not None else kernel), _pair(pad)
        self.new_step(node, Step(self.where(node), kind, ref.step, kernel=k, stride=s, padding=p))

    def shortcut_slice(self, node: fx.Node) -> None:
        src, idx = node.args
        if src not in self.shapes:
            return  # indexing a shape, as in view(x.size()[0], -1)
        ok = isinstance(idx, tuple) and len(idx) == 4 and all(isinstance(i, slice) for i in idx)
        if ok:
            steps = [i.step or 1 for i in idx]
            ok = all(i.start is None and i.stop is None for i in idx) and steps[:2] == [1, 1]
            ok = ok and steps[2] == steps[3]
        if not ok:
            self.fail(
                node, "indexing", "only x[:, :, ::s, ::s] (an option-A shortcut) is supported"
            )
            return
        ref = self.value(src, "slicing")
        if ref is not None:
            self.refs[node] = _Ref(ref.step, node, stride=steps[2])

    def channel_pad(self, node: fx.Node) -> None:
        src, pads = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        if not self.known(src):
            return
        ref = self.refs[src]
        mode = node.kwargs.get("mode", "constant")
        value = node.kwargs.get("value") or 0
        ok = (
            not ref.flat
            and not ref.pad
            and isinstance(pads, tuple | list)
            and len(pads) == 6
            and tuple(pads[:4]) == (0, 0, 0, 0)
            and pads[4] == pads[5]
            and mode == "constant"
            and value == 0
        )
        if not ok:
            why = "only zero-padding channels equally on both sides (an option-A shortcut); use "
            self.fail(node, "pad", why + "Conv2d padding")
            return
        self.refs[node] = _Ref(ref.step, node, stride=ref.stride, pad=int(pads[4]))

    def flatten(self, node: fx.Node) -> None:
        src = node.args[0]
        in_shape, out_shape = self.shapes.get(src), self.shapes.get(node)
        ref = self.value(src, "flatten")
        if ref is None:
            return
        if in_shape is None or out_shape != (in_shape[0], math.prod(in_shape[1:])):
            self.fail(node, str(node.target), "only flattening to [B, -1] is supported")
            return
        if len(in_shape) == 2:
            self.refs[node] = ref
            return
        self.refs[node] = _Ref(ref.step, node, flat=True)

    def quant(self, node: fx.Node, q: ActQuantizer) -> None:
        ref = self.value(node.args[0], "an activation quantizer")
        if ref is None:
            return
        if ref.step is self.input:
            self.input_quant = q
        elif ref.step.out_quant not in (None, q):
            self.fail(node, "ActQuantizer", "a second quantizer on one value; share one")
        else:
            ref.step.out_quant = q
        self.refs[node] = ref

    # -- dispatch ---------------------------------------------------------------------------------
    def call_module(self, node: fx.Node) -> None:
        path = str(node.target)
        m = self.modules[path]
        name = type(m).__name__
        if isinstance(m, nn.Conv2d):
            why = _conv_problem(m)
            if why:
                self.fail(node, name, why)
                return
            self.compute(node, m, path)
        elif isinstance(m, nn.Linear):
            self.compute(node, m, path)
        elif type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
            self.batchnorm(node, m)
        elif type(m) in (nn.ReLU, nn.ReLU6):
            self.relu(node, type(m) is nn.ReLU6)
        elif type(m) is nn.MaxPool2d:
            if _pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
                self.fail(node, name, "not supported; use dilation=1, ceil_mode=False")
                return
            self.pool(node, "maxpool", name, m.kernel_size, m.stride, m.padding)
        elif type(m) is nn.AvgPool2d:
            if _pair(m.padding) != (0, 0) or m.ceil_mode or m.divisor_override:
                self.fail(node, name, "not supported; use padding=0, ceil_mode=False")
                return
            self.pool(node, "avgpool", name, m.kernel_size, m.stride, 0)
        elif type(m) is nn.AdaptiveAvgPool2d:
            if _pair(m.output_size) != (1, 1):
                self.fail(node, name, "not supported; use AdaptiveAvgPool2d(1) or AvgPool2d")
                return
            self.pool(node, "avgpool", name, None, None, 0)
        elif type(m) is nn.Flatten:
            if (m.start_dim, m.end_dim) != (1, -1):
                self.fail(node, name, "not supported; use Flatten(start_dim=1, end_dim=-1)")
                return
            self.flatten(node)
        elif isinstance(m, _ALIAS):
            ref = self.refs.get(node.args[0])
            if ref is not None:
                self.refs[node] = ref
        elif isinstance(m, ActQuantizer):
            self.quant(node, m)
        else:
            self.fail(node, name, f"not supported; {_alternative(name)}")

    def call_function(self, node: fx.Node) -> None:
        f = node.target
        args = node.args
        name = getattr(f, "__name__", str(f))
        if f in _RELU:
            self.relu(node, False)
        elif f is F.relu6 or (f is F.hardtanh and tuple(args[1:3]) == (0.0, 6.0)):
            self.relu(node, True)
        elif f in _ADD:
            self.add(node)
        elif f is torch.flatten:
            if tuple(args[1:]) + tuple(node.kwargs.values()) not in ((1,), (1, -1)):
                self.fail(node, "torch.flatten", "not supported; use torch.flatten(x, 1)")
                return
            self.flatten(node)
        elif f is F.max_pool2d:
            self.fn_pool(node, "maxpool", ("kernel_size", "stride", "padding", "dilation"))
        elif f is F.avg_pool2d:
            self.fn_pool(node, "avgpool", ("kernel_size", "stride", "padding"))
        elif f is F.adaptive_avg_pool2d:
            out = args[1] if len(args) > 1 else node.kwargs.get("output_size")
            if out not in (1, (1, 1), [1, 1]):
                self.fail(node, name, "not supported; use adaptive_avg_pool2d(x, 1) or AvgPool2d")
                return
            self.pool(node, "avgpool", name, None, None, 0)
        elif f is F.pad:
            self.channel_pad(node)
        elif f is operator.getitem:
            self.shortcut_slice(node)
        elif f is F.dropout:
            ref = self.refs.get(args[0])
            if ref is not None:
                self.refs[node] = ref
        else:
            where = getattr(f, "__module__", None) or ""
            self.fail(node, f"{where}.{name}".lstrip("."), f"not supported; {_alternative(name)}")

    def fn_pool(self, node: fx.Node, kind: str, names: tuple[str, ...]) -> None:
        p = dict(zip(names, node.args[1:], strict=False)) | dict(node.kwargs)
        name = "max_pool2d" if kind == "maxpool" else "avg_pool2d"
        pad = p.get("padding", 0)
        bad = _pair(p.get("dilation", 1)) != (1, 1) or p.get("ceil_mode", False)
        bad = bad or p.get("return_indices", False) or p.get("divisor_override")
        if kind == "avgpool":
            bad = bad or _pair(pad) != (0, 0)
        if bad:
            self.fail(node, name, "not supported; use padding=0 (avg), dilation=1, ceil_mode=False")
            return
        self.pool(node, kind, name, p["kernel_size"], p.get("stride") or None, pad)

    def call_method(self, node: fx.Node) -> None:
        m = str(node.target)
        if m in ("relu", "relu_"):
            self.relu(node, False)
        elif m in ("add", "add_"):
            self.add(node)
        elif m in _FLATTEN_METHODS:
            self.flatten(node)
        elif m in ("size", "dim"):
            return  # shape queries feed view(x.size(0), -1)
        elif m == "contiguous":
            ref = self.refs.get(node.args[0])
            if ref is not None:
                self.refs[node] = ref
        else:
            self.fail(node, f"Tensor.{m}", f"not supported; {_alternative(m)}")

    def scan(self, stop: fx.Node | None = None) -> _Ref | None:
        """Visit every node (up to ``stop``); returns what the model outputs."""
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedLayerError(
                f"the model must take one input tensor, takes {len(placeholders)}"
            )
        out_ref = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.refs[node] = _Ref(self.input, node)
            elif node.op == "output":
                arg = node.args[0]
                out_ref = self.refs.get(arg) if isinstance(arg, fx.Node) else None
                if out_ref is None and not self.errors:
                    self.fail(node, "output", "the model must return one tensor")
            elif node.op == "get_attr":
                self.fail(node, "parameter use", "weights may only be used by their Conv2d/Linear")
            else:
                getattr(self, node.op)(node)
            if node is stop:
                break
        if out_ref is not None and (out_ref.flat or out_ref.step is self.input):
            self.fail(out_ref.node, "output", "the model must end with a Conv2d, Linear or pool")
        if self.errors:
            raise UnsupportedLayerError(
                f"{len(self.errors)} unsupported op(s): "
                + " | ".join(self.errors)
                + ". Replace them, or run those parts on the host and quantize the rest."
            )
        return out_ref

    def run(self) -> Captured:
        """The steps in topological order (by where each one's fused output is computed)."""
        out_ref = self.scan()
        order = {n: i for i, n in enumerate(self.gm.graph.nodes)}
        steps = sorted(self.steps, key=lambda s: order[s.out])
        if steps[-1] is not out_ref.step:
            raise UnsupportedLayerError(
                f"the model output {out_ref.node.name!r} must be its last layer; remove unused "
                "branches"
            )
        index = {s: i for i, s in enumerate(steps)}
        index[self.input] = -1
        for s in steps:
            s.src, s.res = index[s.src], None if s.res is None else index[s.res]
            s.out_shape = self.shapes[s.out][1:]
        shape = tuple(self.shapes[next(iter(self.gm.graph.nodes))][1:])
        return Captured(steps, shape, self.input_quant)


def _conv_problem(m: nn.Conv2d) -> str:
    """Why a Conv2d cannot be an integer layer (empty if it can)."""
    if m.groups != 1:
        return f"groups={m.groups} not supported; use groups=1 (a dense Conv2d)"
    if _pair(m.dilation) != (1, 1):
        return f"dilation={m.dilation} not supported; use dilation=1"
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} not supported; use padding_mode='zeros'"
    if isinstance(m.padding, str):
        return f"padding={m.padding!r} not supported; use integer padding"
    return ""


class _Shapes(fx.Interpreter):
    """Runs the traced model once for the shape of every value, checking each layer's input.

    Conv2d/Linear run as the plain torch layers and activation quantizers as identities, so
    a QAT model's quantizers are neither run nor initialised.
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}
        self.current: fx.Node | None = None
        self.extra_traceback = False  # our messages name the op already

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        if n.op == "call_module":
            m = self.module.get_submodule(str(n.target))
            x = self.env[n.args[0]] if isinstance(n.args[0], fx.Node) else None
            if isinstance(m, ActQuantizer):
                out = x
            elif isinstance(m, nn.Conv2d | nn.Linear) and isinstance(x, torch.Tensor):
                _check_input(str(n.target), m, tuple(x.shape[1:]))
                base = nn.Conv2d if isinstance(m, nn.Conv2d) else nn.Linear
                out = base.forward(m, x)
            else:
                out = super().run_node(n)
        else:
            try:
                out = super().run_node(n)
            except Exception as e:  # noqa: BLE001 - any failing op is reported with its place
                raise ValueError(f"op {n.name!r} fails on the example input: {e}") from None
        if isinstance(out, torch.Tensor):
            self.shapes[n] = tuple(out.shape)
        return out


def _check_input(path: str, m: nn.Module, shape: tuple[int, ...]) -> None:
    """A clear error for an input that the Conv2d/Linear at ``path`` cannot take."""
    if isinstance(m, nn.Conv2d):
        if len(shape) != 3 or shape[0] != m.in_channels:
            raise ValueError(
                f"layer {path!r}: Conv2d expects [B, {m.in_channels}, H, W] input, gets "
                f"per-sample shape {shape}; check the model and example_input"
            )
    elif len(shape) != 1:
        raise ValueError(
            f"layer {path!r}: Linear gets per-sample shape {shape}: a token model (the Linear "
            "over the last dim); compile it with quant.transformer.capture_tokens (a CNN "
            "head: add nn.Flatten() before it)"
        )
    elif shape[0] != m.in_features:
        raise ValueError(f"layer {path!r}: Linear expects {m.in_features} inputs, gets {shape}")


def capture(model: nn.Module, example_input: torch.Tensor) -> Captured:
    """Trace ``model`` (in eval mode, not modified) and fuse it into integer-graph steps.

    ``example_input`` (a batch) gives the shapes. Raises ``UnsupportedLayerError`` listing every
    op that has no integer form, ``ValueError`` for an input a layer cannot take.
    """
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # noqa: BLE001 - tracing fails in many ways; all mean the same here
        raise UnsupportedLayerError(
            f"torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: {e}); make its "
            f"forward a static graph of: {SUPPORTED}. Run untraceable parts on the host."
        ) from None
    shapes = _Shapes(gm)
    try:
        with torch.no_grad():
            shapes.run(example_input)
    except ValueError:
        _Capture(gm, shapes.shapes).scan(stop=shapes.current)  # unsupported ops explain it first
        raise
    return _Capture(gm, shapes.shapes).run()
