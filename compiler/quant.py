"""Post-training row-wise mixed-scheme quantisation of a Conv/Linear chain (fake-quant torch).

``quantize`` folds BatchNorm, assigns a weight format to every output row (``assign``), picks
per-row scales, calibrates activation scales on an example batch, and builds a ``QuantizedModel``
whose float64 forward is exactly the integer model of ``numerics.requant``: each row's scale is
snapped so that alpha * s_in / s_out is the dyadic mult * 2^F / 2^shift the hardware applies
(F = ``numerics.BIAS_FRAC_BITS``, the bias's fractional bits).

The layers hold their scales as tensors so that learnable scales with straight-through rounding
(QAT) can be added on top of this without changing the export contract.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..arch import numerics
from ..arch.config import AccelConfig
from ..arch.numerics import BIAS_BITS, BIAS_FRAC_BITS, FORMATS
from .assign import assign_rows, best_scale, check_ratio, nearest_level

PAPER_RATIO: dict[str, float] = {"pot4": 0.60, "fixed4": 0.35, "fixed8": 0.05}
"""RMSMP's XC7Z020 row ratio, PoT4 : Fixed4 : Fixed8 = 60 : 35 : 5."""

INPUT_LO, INPUT_HI = numerics.act_range(8, signed=True)
SUPPORTED = (
    "Conv2d (groups=1, dilation=1, zero padding), Linear, BatchNorm1d/2d directly after a "
    "Conv2d/Linear, ReLU after a Conv2d/Linear(+BN), Flatten before a Linear, Dropout, Identity"
)
_BIAS_RANGE = (-(1 << (BIAS_BITS - 1)), (1 << (BIAS_BITS - 1)) - 1)
FRAC = float(1 << BIAS_FRAC_BITS)
"""2^F as a float: the bias is stored in units of 1/2^F of the accumulator step."""


class UnsupportedLayerError(TypeError):
    """A module the quantizer cannot map onto the accelerator; the message names it."""


def _unsupported(path: str, module: nn.Module, why: str) -> UnsupportedLayerError:
    where = f"layer {path!r}" if path else "model"
    return UnsupportedLayerError(
        f"{where} ({type(module).__name__}): {why}. Supported: {SUPPORTED}. "
        "Run that part of the network on the host and quantize the chain around it."
    )


def resolve_ratio(ratio: dict[str, float] | str | AccelConfig | None) -> dict[str, float]:
    """The row ratio to quantize for: explicit, a board preset's, a config's, or the paper's."""
    if ratio is None:
        return dict(PAPER_RATIO)
    if isinstance(ratio, str):
        ratio = AccelConfig.for_board(ratio)
    if isinstance(ratio, AccelConfig):
        return {g.fmt: g.rows / ratio.rows for g in ratio.groups}
    if isinstance(ratio, dict):
        return check_ratio(ratio)
    raise TypeError(
        f"ratio must be a dict, a board name, an AccelConfig or None, got {type(ratio).__name__}"
    )


@dataclass
class _Spec:
    """One compute layer of the chain with what gets fused into it."""

    name: str
    op: nn.Conv2d | nn.Linear
    bn: nn.BatchNorm1d | nn.BatchNorm2d | None = None
    relu: bool = False
    flatten: bool = False


def _leaves(seq: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in seq.named_children():
        path = f"{prefix}{name}"
        if isinstance(m, nn.Sequential):
            out += _leaves(m, path + ".")
        elif not isinstance(m, nn.Dropout | nn.Identity):
            out.append((path, m))
    return out


def _check_op(path: str, m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            raise _unsupported(path, m, f"groups={m.groups}; only groups=1 is supported")
        if tuple(m.dilation) != (1, 1):
            raise _unsupported(path, m, f"dilation={m.dilation}; only 1 is supported")
        if m.padding_mode != "zeros":
            raise _unsupported(path, m, f"padding_mode={m.padding_mode!r}; only 'zeros'")
        if isinstance(m.padding, str):
            raise _unsupported(path, m, f"padding={m.padding!r}; give integer padding instead")


def _parse(model: nn.Module) -> list[_Spec]:
    if not isinstance(model, nn.Sequential):
        raise _unsupported("", model, "the model must be an nn.Sequential chain")
    specs: list[_Spec] = []
    flatten_at: tuple[str, nn.Module] | None = None
    prev = ""  # kind of the previous kept module: "op", "bn", "relu" or "flatten"
    for path, m in _leaves(model):
        if flatten_at is not None and not isinstance(m, nn.Linear):
            why = f"Flatten must directly precede a Linear, not {path!r} ({type(m).__name__})"
            raise _unsupported(*flatten_at, why)
        if isinstance(m, nn.Conv2d | nn.Linear):
            _check_op(path, m)
            specs.append(_Spec(path, m, flatten=flatten_at is not None))
            flatten_at, prev = None, "op"
        elif type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
            if prev != "op" or isinstance(specs[-1].op, nn.Conv2d) != isinstance(m, nn.BatchNorm2d):
                raise _unsupported(path, m, "BatchNorm must directly follow a Conv2d/Linear")
            if m.running_mean is None or m.running_var is None:
                raise _unsupported(path, m, "BatchNorm without running stats cannot be folded")
            if m.num_features != specs[-1].op.weight.shape[0]:
                raise _unsupported(path, m, "num_features differs from the preceding layer")
            specs[-1].bn, prev = m, "bn"
        elif type(m) is nn.ReLU:
            if prev not in ("op", "bn"):
                raise _unsupported(path, m, "ReLU must follow a Conv2d/Linear (+BatchNorm)")
            specs[-1].relu, prev = True, "relu"
        elif type(m) is nn.Flatten:
            if (m.start_dim, m.end_dim) != (1, -1):
                raise _unsupported(path, m, "only Flatten(start_dim=1, end_dim=-1) is supported")
            flatten_at, prev = (path, m), "flatten"
        else:
            raise _unsupported(path, m, "this module type is not supported")
    if flatten_at is not None:
        raise _unsupported(*flatten_at, "Flatten ends the chain; it must precede a Linear")
    if not specs:
        raise _unsupported("", model, "the chain has no Conv2d/Linear layer")
    return specs


def _fold(spec: _Spec) -> tuple[torch.Tensor, torch.Tensor]:
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


class QuantLayer(nn.Module):
    """One quantized Conv2d/Linear with fused requantisation (ReLU as ``lo = 0``).

    Fake-quant view: the input is a float tensor on the ``s_in`` grid; the output is
    clamp(round(y / s_out), lo, hi) * s_out with y the float conv of the dequantized weights
    w_int * alpha plus bias_int * alpha * s_in / 2^F. Since alpha * s_in / s_out =
    mult * 2^F / 2^shift exactly, this is the integer requantisation up to float64 rounding.
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
    ) -> None:
        super().__init__()
        if kind not in ("conv", "linear"):
            raise ValueError(f"kind must be 'conv' or 'linear', got {kind!r}")
        self.name, self.kind, self.formats = name, kind, list(formats)
        self.register_buffer("w_int", w_int.to(torch.int64))
        self.register_buffer("alpha", alpha.to(torch.float64))
        self.register_buffer("bias_int", bias_int.to(torch.int64))
        self.register_buffer("mult", mult.to(torch.int64))
        self.register_buffer("shift", shift.to(torch.int64))
        self.s_in, self.s_out = float(s_in), float(s_out)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pre_activation(x)
        return _round_half_up(y / self.s_out).clamp(self.lo, self.hi) * self.s_out

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, kind={self.kind}, shape={tuple(self.w_int.shape)}, "
            f"s_in={self.s_in:.4g}, s_out={self.s_out:.4g}, lo={self.lo}, hi={self.hi}"
        )


class QuantizedModel(nn.Module):
    """A quantized chain: 8-bit signed input quantisation, then the QuantLayers, float64 output."""

    def __init__(
        self,
        layers: list[QuantLayer],
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
        x = self.quantize_input(x)
        for layer in self.layers:
            x = layer(x)
        return x

    @property
    def assignment(self) -> dict[str, list[str]]:
        """Weight format of every output row, per layer name."""
        return {layer.name: list(layer.formats) for layer in self.layers}


def _max_scale(t: torch.Tensor, hi: int) -> float:
    m = float(t.max()) if t.numel() else 0.0
    return m / hi if m > 0 else 1.0


def _check_input(spec: _Spec, x: torch.Tensor) -> None:
    shape = tuple(x.shape[1:])
    if isinstance(spec.op, nn.Conv2d):
        if len(shape) != 3 or shape[0] != spec.op.in_channels:
            raise ValueError(
                f"layer {spec.name!r}: Conv2d expects [B, {spec.op.in_channels}, H, W] input, "
                f"gets per-sample shape {shape}; check the chain and example_input"
            )
    elif not spec.flatten and len(shape) != 1:
        raise ValueError(
            f"layer {spec.name!r}: Linear gets per-sample shape {shape}; add nn.Flatten() before it"
        )
    elif int(np.prod(shape)) != spec.op.in_features:
        raise ValueError(
            f"layer {spec.name!r}: Linear expects {spec.op.in_features} inputs, gets {shape}"
        )


def _quantize_layer(
    spec: _Spec, x: torch.Tensor, s_in: float, ratio: dict[str, float], act_bits: int
) -> QuantLayer:
    _check_input(spec, x)
    w, b = _fold(spec)
    n = w.shape[0]
    rows = w.reshape(n, -1).numpy()
    formats = assign_rows(rows, ratio)
    alpha = np.ones(n)
    w_int = np.zeros(rows.shape, dtype=np.int64)
    for f in dict.fromkeys(formats):
        idx = np.array([i for i, g in enumerate(formats) if g == f])
        alpha[idx] = best_scale(rows[idx], FORMATS[f])[0]
        w_int[idx] = nearest_level(rows[idx] / alpha[idx, None], FORMATS[f])
    lo, hi = numerics.act_range(act_bits, signed=False) if spec.relu else (INPUT_LO, INPUT_HI)
    kind = "conv" if isinstance(spec.op, nn.Conv2d) else "linear"
    stride = tuple(spec.op.stride) if kind == "conv" else (1, 1)
    padding = tuple(spec.op.padding) if kind == "conv" else (0, 0)
    # Built with the unsnapped scales first: its float output calibrates s_out.
    layer = QuantLayer(
        name=spec.name,
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
        stride=stride,
        padding=padding,
        flatten=spec.flatten,
        relu=spec.relu,
    )
    y = layer.pre_activation(x) + layer._row_view(b)
    s_out = _max_scale(torch.relu(y), hi) if spec.relu else _max_scale(y.abs(), INPUT_HI)

    mult, shift = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for r in range(n):
        try:
            mult[r], shift[r] = numerics.requant_multiplier(alpha[r] * s_in / s_out)
        except ValueError as e:
            raise ValueError(f"layer {spec.name!r} row {r}: {e}") from None
        if mult[r] == 0:
            raise ValueError(
                f"layer {spec.name!r} row {r}: its scale {alpha[r]:.3g} is too small against the "
                f"output scale {s_out:.3g} to requantise; zero that row's weights or rescale it"
            )
        alpha[r] = int(mult[r]) * s_out * FRAC / (2.0 ** int(shift[r]) * s_in)
    bias_int = np.rint(b.numpy() / (alpha * s_in) * FRAC)
    bad = np.flatnonzero((bias_int < _BIAS_RANGE[0]) | (bias_int > _BIAS_RANGE[1]))
    if bad.size:
        raise ValueError(
            f"layer {spec.name!r}: bias of rows {bad[:5].tolist()} does not fit {BIAS_BITS} bits "
            "at scale alpha * s_in / 2^F (the row's weights are tiny next to its bias); zero or "
            "rescale them"
        )
    layer.alpha.copy_(torch.from_numpy(alpha))
    layer.bias_int.copy_(torch.from_numpy(bias_int.astype(np.int64)))
    layer.mult.copy_(torch.from_numpy(mult))
    layer.shift.copy_(torch.from_numpy(shift))
    layer.s_out = s_out
    return layer


@torch.no_grad()
def quantize(
    model: nn.Module,
    example_input: torch.Tensor,
    ratio: dict[str, float] | str | AccelConfig | None = None,
    act_bits: int = 4,
) -> QuantizedModel:
    """Quantize a Conv/Linear ``nn.Sequential`` chain row-wise (post-training).

    ``ratio`` is the fraction of rows per weight format (default: the paper's XC7Z020
    60:35:5 PoT4:Fixed4:Fixed8), or a board name / AccelConfig whose row groups give it.
    Activations after a ReLU are unsigned ``act_bits``; other layer outputs and the network
    input are signed 8-bit. Scales are calibrated on ``example_input`` (a batch). The model is
    not modified.
    """
    ratio = resolve_ratio(ratio)
    if not isinstance(act_bits, int) or not 1 <= act_bits <= 8:
        raise ValueError(f"act_bits must be an int in [1, 8] (8-bit storage), got {act_bits!r}")
    if not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point():
        raise TypeError("example_input must be a float torch.Tensor batch, e.g. [B, C, H, W]")
    if example_input.ndim < 2 or example_input.shape[0] < 1:
        raise ValueError(
            f"example_input must be a non-empty batch [B, ...], got {tuple(example_input.shape)}"
        )
    if not torch.isfinite(example_input).all():
        raise ValueError("example_input contains NaN or inf")
    model = copy.deepcopy(model).eval()
    specs = _parse(model)
    qmodel = QuantizedModel(
        [], _max_scale(example_input.abs(), INPUT_HI), tuple(example_input.shape[1:]), ratio
    )
    x = qmodel.quantize_input(example_input)
    s_in = qmodel.input_scale
    for spec in specs:
        layer = _quantize_layer(spec, x, s_in, ratio, act_bits)
        qmodel.layers.append(layer)
        x, s_in = layer(x), layer.s_out
    return qmodel
