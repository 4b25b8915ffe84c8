"""Post-training row-wise mixed-scheme quantisation of a CNN (fake-quant torch).

``quantize`` captures the model as a DAG of fused steps (``capture``), folds BatchNorm, assigns
a weight format to every output row (``assign``), picks per-row scales, calibrates activation
scales on an example batch, and builds a ``QuantizedModel`` (in eval mode) whose forward is the
integer model of ``numerics.requant`` in int64 ops (``exact``; its training-mode forward is the
float64 twin of it): each row's scale is snapped so that alpha * s_in / s_out is the
dyadic mult * 2^F / 2^shift the hardware applies (F = ``numerics.BIAS_FRAC_BITS``, the bias's
fractional bits); a residual enters on its own dyadic ratio res_mult * 2^F / 2^shift; pooling
works on the integers themselves.

The layers hold their scales as tensors so that learnable scales with straight-through rounding
(QAT) can be added on top of this without changing the export contract.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..arch import numerics
from ..arch.config import AccelConfig
from ..arch.numerics import BIAS_BITS, BIAS_FRAC_BITS, FORMATS
from ..boards import target_config
from . import exact
from .assign import assign_rows, assign_tied, best_scale, check_ratio, nearest_level
from .capture import Step, UnsupportedLayerError, capture

PAPER_RATIO: dict[str, float] = {"pot4": 0.60, "fixed4": 0.35, "fixed8": 0.05}
"""RMSMP's XC7Z020 row ratio, PoT4 : Fixed4 : Fixed8 = 60 : 35 : 5."""

INPUT_LO, INPUT_HI = numerics.act_range(8, signed=True)
_BIAS_RANGE = (-(1 << (BIAS_BITS - 1)), (1 << (BIAS_BITS - 1)) - 1)
FRAC = float(1 << BIAS_FRAC_BITS)
"""2^F as a float: the bias is stored in units of 1/2^F of the accumulator step."""
__all__ = [
    "PAPER_RATIO",
    "QuantAvgPool",
    "QuantLayer",
    "QuantMaxPool",
    "QuantNode",
    "QuantizedModel",
    "UnsupportedLayerError",
    "quantize",
    "resolve_ratio",
]


def resolve_ratio(ratio: dict[str, float] | str | AccelConfig | None) -> dict[str, float]:
    """The row ratio to quantize for: explicit, a board preset's, a config's, or the paper's."""
    if ratio is None:
        return dict(PAPER_RATIO)
    if isinstance(ratio, str):
        ratio = target_config(ratio)
    if isinstance(ratio, AccelConfig):
        return ratio.row_ratio
    if isinstance(ratio, dict):
        return check_ratio(ratio)
    raise TypeError(
        f"ratio must be a dict, a board name, an AccelConfig or None, got {type(ratio).__name__}"
    )


def _fold(spec: Step) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias (float64) with the BatchNorm folded in, using its running statistics."""
    w = spec.op.weight.detach().double()
    n = w.shape[0]
    b = spec.op.bias.detach().double() if spec.op.bias is not None else torch.zeros(n).double()
    bn = spec.bn
    if bn is not None:
        gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones(n).double()
        beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros(n).double()
        k = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * k.view(-1, *[1] * (w.ndim - 1))
        b = (b - bn.running_mean.double()) * k + beta
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        raise ValueError(f"layer {spec.name!r}: folded weights/bias are not finite")
    return w, b


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    """The rounding of ``numerics.requant``: floor(x + 1/2)."""
    return torch.floor(x + 0.5)


def _shortcut(r: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """A residual as added: subsampled by ``stride``, channels zero-padded by ``pad`` each side."""
    return F.pad(r[:, :, ::stride, ::stride], (0, 0, 0, 0, pad, pad))


class QuantNode(nn.Module):
    """A node of a ``QuantizedModel``: reads node ``src`` (-1: the input; None: the previous)."""

    def __init__(self, name: str, s_in: float, s_out: float, src: int | None) -> None:
        super().__init__()
        self.name, self.src = name, src
        self.s_in, self.s_out = float(s_in), float(s_out)
        self.res_from: int | None = None


class QuantLayer(QuantNode):
    """One quantized Conv2d/Linear with fused requantisation (ReLU as ``lo = 0``, residual add).

    Fake-quant view: the input is a float tensor on the ``s_in`` grid; the output is
    clamp(round(y / s_out + r), lo, hi) * s_out with y the float conv of the dequantized weights
    w_int * alpha plus bias_int * alpha * s_in / 2^F. Since alpha * s_in / s_out =
    mult * 2^F / 2^shift exactly, this is the integer requantisation up to float64 rounding:
    the training-mode (float) path. In eval mode (``exact``) it is the integer layer itself.
    With a residual, r is the residual's integers times res_mult * 2^F / 2^shift, the dyadic
    ratio of its scale to ``s_out`` that the integer add applies (exact in float64).
    """

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        w_int: torch.Tensor,
        formats: list[str],
        alpha: torch.Tensor,
        bias_int: torch.Tensor,
        mult: torch.Tensor,
        shift: torch.Tensor,
        s_in: float,
        s_out: float,
        lo: int,
        hi: int,
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        flatten: bool = False,
        relu: bool = False,
        src: int | None = None,
    ) -> None:
        super().__init__(name, s_in, s_out, src)
        if kind not in ("conv", "linear"):
            raise ValueError(f"kind must be 'conv' or 'linear', got {kind!r}")
        self.kind, self.formats = kind, list(formats)
        self.register_buffer("w_int", w_int.to(torch.int64))
        self.register_buffer("alpha", alpha.to(torch.float64))
        self.register_buffer("bias_int", bias_int.to(torch.int64))
        self.register_buffer("mult", mult.to(torch.int64))
        self.register_buffer("shift", shift.to(torch.int64))
        self.register_buffer("res_mult", torch.zeros_like(self.mult))
        self.res_scale, self.res_stride, self.res_pad = 1.0, 1, 0
        self.lo, self.hi = int(lo), int(hi)
        self.stride, self.padding = tuple(stride), tuple(padding)
        self.flatten, self.relu = bool(flatten), bool(relu)

    def _row_view(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, 1, 1) if self.kind == "conv" else t.view(1, -1)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """y: the float value of (acc + bias) * alpha * s_in for an input on the s_in grid."""
        x = x.to(torch.float64)
        if self.flatten:
            x = x.flatten(1)
        w = self.w_int.to(torch.float64) * self.alpha.view(-1, *[1] * (self.w_int.ndim - 1))
        if self.kind == "conv":
            y = F.conv2d(x, w, stride=self.stride, padding=self.padding)
        else:
            y = F.linear(x, w)
        return y + self._row_view(self.bias_int.to(torch.float64) * self.alpha * self.s_in / FRAC)

    def residual(self, res: torch.Tensor) -> torch.Tensor:
        """The residual in units of s_out: its integers times the dyadic res_mult*2^F/2^shift."""
        r = _shortcut(
            torch.round(res.to(torch.float64) / self.res_scale), self.res_stride, self.res_pad
        )
        ratio = self.res_mult.to(torch.float64) * FRAC / torch.exp2(self.shift.to(torch.float64))
        return r * self._row_view(ratio)

    def forward(self, x: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
        if self.res_from is not None and res is None:
            raise ValueError(f"layer {self.name!r} adds a residual; pass it")
        if not self.training:
            return self.exact(x, res)
        z = self.pre_activation(x) / self.s_out
        if self.res_from is not None:
            z = z + self.residual(res)
        return _round_half_up(z).clamp(self.lo, self.hi) * self.s_out

    def exact(self, x: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
        """The eval-mode output: the integer layer in int64 ops (``exact``), times ``s_out``.

        ``x`` (and ``res``) lie on their grids, so dividing by the scale and rounding recovers
        their integers exactly.
        """
        x_int = torch.round(x.to(torch.float64) / self.s_in).to(torch.int64)
        acc = exact.accumulate(
            self.name, self.kind, x_int, self.w_int, self.stride, self.padding, self.flatten
        )
        r = None
        if self.res_from is not None:
            r_int = torch.round(res.to(torch.float64) / self.res_scale).to(torch.int64)
            r = exact.shortcut(r_int, self.res_stride, self.res_pad)
        out = exact.requant(
            self.name,
            acc,
            self.bias_int,
            self.mult,
            self.shift,
            self.lo,
            self.hi,
            r,
            self.res_mult if r is not None else None,
        )
        return out.to(torch.float64) * self.s_out

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, kind={self.kind}, shape={tuple(self.w_int.shape)}, "
            f"s_in={self.s_in:.4g}, s_out={self.s_out:.4g}, lo={self.lo}, hi={self.hi}, "
            f"src={self.src}, res_from={self.res_from}"
        )


class QuantMaxPool(QuantNode):
    """Max pooling: exact on the grid (max commutes with rounding), output on the input's scale."""

    def __init__(
        self,
        name: str,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        scale: float,
        src: int | None = None,
    ) -> None:
        super().__init__(name, scale, scale, src)
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)

    def forward(self, x: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, self.padding)


class QuantAvgPool(QuantNode):
    """Average pooling on the grid: ``numerics.average_round`` of the window's integer sum, so
    the fake-quant output is the integer graph's exactly. Output on the input's scale."""

    def __init__(
        self,
        name: str,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        scale: float,
        src: int | None = None,
    ) -> None:
        super().__init__(name, scale, scale, src)
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel, self.stride
        k = torch.round(x.to(torch.float64) / self.s_in).to(torch.int64)
        total = k.unfold(2, kh, sh).unfold(3, kw, sw).sum(dim=(4, 5))
        return numerics.average_round(total, kh * kw).to(torch.float64) * self.s_out


class QuantizedModel(nn.Module):
    """A quantized DAG: 8-bit signed input quantisation, then the nodes, float64 output.

    Node i reads node ``src`` (-1: the quantized input; None: node i-1) and, for a residual
    layer, node ``res_from`` too.
    """

    def __init__(
        self,
        layers: list[QuantNode],
        input_scale: float,
        input_shape: tuple[int, ...],
        ratio: dict[str, float],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.input_scale = float(input_scale)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.ratio = dict(ratio)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Float input onto the signed 8-bit grid of ``input_scale`` (round half to even)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"input has per-sample shape {tuple(x.shape[1:])}, the model was quantized for "
                f"{self.input_shape}"
            )
        s = self.input_scale
        return torch.round(x.to(torch.float64) / s).clamp(INPUT_LO, INPUT_HI) * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.quantize_input(x)]
        for i, layer in enumerate(self.layers):
            src = i if layer.src is None else layer.src + 1
            res = None if layer.res_from is None else outs[layer.res_from + 1]
            outs.append(layer(outs[src], res))
        return outs[-1]

    @property
    def assignment(self) -> dict[str, list[str]]:
        """Weight format of every output row, per layer name."""
        return {q.name: list(q.formats) for q in self.layers if isinstance(q, QuantLayer)}


def _max_scale(t: torch.Tensor, hi: int) -> float:
    m = float(t.max()) if t.numel() else 0.0
    return m / hi if m > 0 else 1.0


def _multipliers(
    name: str, alpha: np.ndarray, s_in: float, s_out: float, s_res: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (mult, shift, res_mult): alpha*s_in/s_out, and s_res/s_out on the same shift."""
    n = len(alpha)
    mult, shift, res_mult = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    for r in range(n):
        try:
            if s_res is None:
                mult[r], shift[r] = numerics.requant_multiplier(alpha[r] * s_in / s_out)
            else:
                reals = [alpha[r] * s_in / s_out, s_res / s_out]
                (mult[r], res_mult[r]), shift[r] = numerics.quantize_multipliers_shared(reals)
        except ValueError as e:
            raise ValueError(f"layer {name!r} row {r}: {e}") from None
        if mult[r] == 0:
            raise ValueError(
                f"layer {name!r} row {r}: its scale {alpha[r]:.3g} is too small against the "
                f"output scale {s_out:.3g} to requantise; zero that row's weights or rescale it"
            )
    return mult, shift, res_mult


def _quantize_layer(
    step: Step,
    x: torch.Tensor,
    s_in: float,
    ratio: dict[str, float],
    act_bits: int,
    res: tuple[torch.Tensor, float] | None,
    src: int | None,
    formats: list[str] | None = None,
) -> QuantLayer:
    """The QuantLayer of one conv/linear step, calibrated on its fake-quant input ``x`` (and
    residual ``res`` with its scale); the output scale fits the batch's largest value. Its rows
    get ``formats`` if given, else their own best assignment."""
    w, b = _fold(step)
    n = w.shape[0]
    rows = w.reshape(n, -1).numpy()
    formats = assign_rows(rows, ratio) if formats is None else formats
    alpha = np.ones(n)
    w_int = np.zeros(rows.shape, dtype=np.int64)
    for f in dict.fromkeys(formats):
        idx = np.array([i for i, g in enumerate(formats) if g == f])
        alpha[idx] = best_scale(rows[idx], FORMATS[f])[0]
        w_int[idx] = nearest_level(rows[idx] / alpha[idx, None], FORMATS[f])
    lo, hi = numerics.act_range(act_bits, signed=False) if step.relu else (INPUT_LO, INPUT_HI)
    kind = step.kind
    # Built with the unsnapped scales first: its float output calibrates s_out.
    layer = QuantLayer(
        name=step.name,
        kind=kind,
        w_int=torch.from_numpy(w_int.reshape(w.shape)),
        formats=formats,
        alpha=torch.from_numpy(alpha),
        bias_int=torch.zeros(n, dtype=torch.int64),
        mult=torch.zeros(n, dtype=torch.int64),
        shift=torch.zeros(n, dtype=torch.int64),
        s_in=s_in,
        s_out=1.0,
        lo=lo,
        hi=hi,
        stride=tuple(step.op.stride) if kind == "conv" else (1, 1),
        padding=tuple(step.op.padding) if kind == "conv" else (0, 0),
        flatten=step.flatten,
        relu=step.relu,
        src=src,
    )
    y = layer.pre_activation(x) + layer._row_view(b)
    if res is not None:
        y = y + _shortcut(res[0], step.res_stride, step.res_pad)
    if step.relu6:
        y = y.clamp(max=6.0)
    s_out = _max_scale(torch.relu(y), hi) if step.relu else _max_scale(y.abs(), INPUT_HI)
    mult, shift, res_mult = _multipliers(
        step.name, alpha, s_in, s_out, None if res is None else res[1]
    )
    alpha = mult * s_out * FRAC / (2.0**shift * s_in)
    bias_int = np.rint(b.numpy() / (alpha * s_in) * FRAC)
    bad = np.flatnonzero((bias_int < _BIAS_RANGE[0]) | (bias_int > _BIAS_RANGE[1]))
    if bad.size:
        raise ValueError(
            f"layer {step.name!r}: bias of rows {bad[:5].tolist()} does not fit {BIAS_BITS} bits "
            "at scale alpha * s_in / 2^F (the row's weights are tiny next to its bias); zero or "
            "rescale them"
        )
    layer.alpha.copy_(torch.from_numpy(alpha))
    layer.bias_int.copy_(torch.from_numpy(bias_int.astype(np.int64)))
    layer.mult.copy_(torch.from_numpy(mult))
    layer.shift.copy_(torch.from_numpy(shift))
    layer.s_out = s_out
    if res is not None:
        layer.res_from, layer.res_scale = step.res, res[1]
        layer.res_stride, layer.res_pad = step.res_stride, step.res_pad
        layer.res_mult.copy_(torch.from_numpy(res_mult))
    return layer


def tied_formats(steps: list[Step], ratio: dict[str, float]) -> dict[int, list[str]]:
    """One row format assignment per group of conv/linear steps joined by identity shortcuts
    (a step and the producer of the shortcut it adds, through pools), made on the group's rows
    together (``assign_tied``), so the lowering places their channels alike and reads each
    shortcut where it lies, without a copy pass. Step index -> its formats."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    for i, step in enumerate(steps):
        if step.res is None or step.res_stride != 1 or step.res_pad != 0:
            continue
        j = step.res
        while j >= 0 and steps[j].kind in ("maxpool", "avgpool"):
            j = steps[j].src
        if j >= 0 and steps[j].kind in ("conv", "linear"):
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in sorted({*parent, *parent.values()}):
        groups.setdefault(root(i), []).append(i)
    out = {}
    for members in groups.values():
        rows = [_fold(steps[m])[0].flatten(1).numpy() for m in members]
        formats = assign_tied(rows, ratio)
        out.update({m: formats for m in members})
    return out


def _quantize_pool(step: Step, scale: float, src: int | None) -> QuantNode:
    if step.kind == "maxpool":
        return QuantMaxPool(step.name, step.kernel, step.stride, step.padding, scale, src)
    return QuantAvgPool(step.name, step.kernel, step.stride, scale, src)


@torch.no_grad()
def quantize(
    model: nn.Module,
    example_input: torch.Tensor,
    ratio: dict[str, float] | str | AccelConfig | None = None,
    act_bits: int = 4,
    tie_shortcuts: bool = False,
) -> QuantizedModel:
    """Quantize a CNN row-wise (post-training) into a fake-quant DAG equal to its integer graph.

    The model is captured with torch.fx (``capture``): Conv2d/Linear (+BatchNorm) (+ReLU),
    residual adds, max/average pooling and flatten; anything else is refused in one error that
    lists every unsupported op. ``ratio`` is the fraction of rows per weight format (default:
    the paper's XC7Z020 60:35:5 PoT4:Fixed4:Fixed8), or a board name / AccelConfig whose row
    groups give it. Activations after a ReLU are unsigned ``act_bits``; other layer outputs and
    the network input are signed 8-bit; pools keep their input's grid. Scales are calibrated on
    ``example_input`` (a batch). With ``tie_shortcuts`` the layers joined by identity shortcuts
    share one row format assignment (``tied_formats``), which spares the accelerator a copy pass
    per shortcut at some cost in weight error. The model is not modified.
    """
    ratio = resolve_ratio(ratio)
    if not isinstance(act_bits, int) or not 1 <= act_bits <= 7:
        raise ValueError(
            f"act_bits must be an int in [1, 7], got {act_bits!r}: activations after a ReLU are "
            "unsigned act_bits and must fit the accelerator's 8-bit signed activation storage"
        )
    if not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point():
        raise TypeError("example_input must be a float torch.Tensor batch, e.g. [B, C, H, W]")
    if example_input.ndim < 2 or example_input.shape[0] < 1:
        raise ValueError(
            f"example_input must be a non-empty batch [B, ...], got {tuple(example_input.shape)}"
        )
    if not torch.isfinite(example_input).all():
        raise ValueError("example_input contains NaN or inf")
    model = copy.deepcopy(model).eval()
    steps = capture(model, example_input).steps
    tied = tied_formats(steps, ratio) if tie_shortcuts else {}
    qmodel = QuantizedModel(
        [], _max_scale(example_input.abs(), INPUT_HI), tuple(example_input.shape[1:]), ratio
    ).eval()
    outs = [qmodel.quantize_input(example_input)]
    scales = [qmodel.input_scale]
    for i, step in enumerate(steps):
        x, s_in = outs[step.src + 1], scales[step.src + 1]
        src = None if step.src == i - 1 else step.src
        res = None if step.res is None else (outs[step.res + 1], scales[step.res + 1])
        if step.kind in ("conv", "linear"):
            layer = _quantize_layer(step, x, s_in, ratio, act_bits, res, src, tied.get(i))
        else:
            layer = _quantize_pool(step, s_in, src)
        qmodel.layers.append(layer.eval())
        outs.append(layer(x, None if res is None else res[0]))
        scales.append(layer.s_out)
    return qmodel
