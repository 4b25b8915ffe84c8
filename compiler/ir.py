"""The integer graph: what export produces and the compiler lowers. numpy only.

A DAG of integer nodes in topological order: Conv2d / Linear layers with fused requantisation
(ReLU through ``lo = 0``, a residual add through ``res_from``), max and average pooling. Every
node reads the previous node's output, or node ``src`` where it says so. A plain chain is what
the accelerator lowering takes (``is_chain``). ``evaluate`` is the numpy reference that every
backend must reproduce bit for bit; it is written independently of the compiler's im2col and
tiling on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..arch import numerics


class GraphError(ValueError):
    """An integer graph that is inconsistent; the message names the layer and the field."""


@dataclass
class IntLayer:
    """One integer layer: ``out = requant(W (*) x + bias)`` per output row.

    ``weight`` holds integer levels, [N, C, kh, kw] for conv and [N, K] for linear; row n uses
    format ``formats[n]``. ``flatten`` means the input is flattened (C, H, W) -> C*H*W first.
    ``src`` is the node whose output this layer reads (-1: the graph input; None: the previous
    node). With ``res_from``, the output of that node, subsampled by ``res_stride`` and
    channel-padded by ``res_pad`` each side, is added on its own dyadic scale ``res_mult``
    (sharing the row's shift) before the one rounding and the clamp.
    """

    name: str
    kind: Literal["conv", "linear"]
    weight: np.ndarray
    formats: list[str]
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    lo: int
    hi: int
    in_scale: float
    out_scale: float
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    flatten: bool = False
    relu: bool = False
    res_from: int | None = None
    res_mult: np.ndarray | None = None
    res_stride: int = 1
    res_pad: int = 0
    src: int | None = None

    def __post_init__(self) -> None:
        n = self.weight.shape[0]
        want = 4 if self.kind == "conv" else 2
        if self.weight.ndim != want:
            raise GraphError(
                f"{self.name}: {self.kind} weight must be {want}-D, got {self.weight.shape}"
            )
        for k in ("bias", "mult", "shift"):
            if np.shape(getattr(self, k)) != (n,):
                raise GraphError(f"{self.name}: {k} must have shape ({n},)")
        if len(self.formats) != n:
            raise GraphError(f"{self.name}: formats must name one format per output row ({n})")
        for r, f in enumerate(self.formats):
            fmt = numerics.weight_format(f)
            row = self.weight[r]
            if not np.isin(row, fmt.levels()).all():
                raise GraphError(f"{self.name}: row {r} has values that are not {f} levels")
        if self.lo > self.hi:
            raise GraphError(f"{self.name}: lo {self.lo} > hi {self.hi}")

    @property
    def out_channels(self) -> int:
        """N."""
        return int(self.weight.shape[0])

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape for a per-sample input shape."""
        if self.kind == "linear":
            return (self.out_channels,)
        _, h, w = in_shape
        kh, kw = self.weight.shape[2:]
        oh = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        if oh < 1 or ow < 1:
            raise GraphError(f"{self.name}: input {in_shape} is smaller than the kernel")
        return (self.out_channels, oh, ow)

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """Exact int64 accumulators for a batch of integer inputs.

        The products are summed in float64 (BLAS) when every partial sum provably stays below
        2^53, where float64 is exact, and in int64 otherwise.
        """
        x = np.asarray(x, dtype=np.int64)
        w = self.weight.astype(np.int64)
        bound = int(np.abs(w).reshape(len(w), -1).sum(axis=1).max(initial=0))
        exact = bound * int(np.abs(x).max(initial=0)) < 1 << 53
        dt = np.float64 if exact else np.int64
        if self.kind == "linear":
            if self.flatten:
                x = x.reshape(x.shape[0], -1)
            return np.rint(x.astype(dt) @ w.T.astype(dt)).astype(np.int64)
        ph, pw = self.padding
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        kh, kw = w.shape[2:]
        win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[
            :, :, :: self.stride[0], :: self.stride[1]
        ]
        b, c, oh, ow = win.shape[:4]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(b * oh * ow, c * kh * kw)
        acc = np.rint(cols.astype(dt) @ w.reshape(len(w), -1).T.astype(dt)).astype(np.int64)
        return acc.reshape(b, oh, ow, -1).transpose(0, 3, 1, 2)

    def shortcut(self, res: np.ndarray) -> np.ndarray:
        """The residual as added: subsampled by ``res_stride``, channels zero-padded each side."""
        r = np.asarray(res, dtype=np.int64)[:, :, :: self.res_stride, :: self.res_stride]
        return np.pad(r, ((0, 0), (self.res_pad, self.res_pad), (0, 0), (0, 0)))

    def evaluate(self, x: np.ndarray, res: np.ndarray | None = None) -> np.ndarray:
        """Integer output of this layer for a batch of integer inputs (and its residual)."""
        acc = self.accumulate(x)
        shape = (1, -1) + (1,) * (acc.ndim - 2)
        if self.res_from is not None:
            if res is None or self.res_mult is None:
                raise GraphError(f"{self.name}: a residual layer needs its residual input")
            return numerics.requant_residual(
                acc,
                self.bias.reshape(shape),
                self.mult.reshape(shape),
                self.shift.reshape(shape),
                self.shortcut(res),
                self.res_mult.reshape(shape),
                self.lo,
                self.hi,
            )
        return numerics.requant(
            acc,
            self.bias.reshape(shape),
            self.mult.reshape(shape),
            self.shift.reshape(shape),
            self.lo,
            self.hi,
        )


def _windows(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], fill: int, pad: tuple[int, int]
) -> np.ndarray:
    """[B, C, OH, OW, kh, kw] windows of a [B, C, H, W] batch padded by ``pad`` with ``fill``."""
    (ph, pw), (sh, sw) = pad, stride
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return sliding_window_view(xp, kernel, axis=(2, 3))[:, :, ::sh, ::sw]


def _pool_shape(
    name: str,
    in_shape: tuple[int, ...],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[int, ...]:
    if len(in_shape) != 3:
        raise GraphError(f"{name}: pooling needs a (C, H, W) input, gets {in_shape}")
    c, h, w = in_shape
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise GraphError(f"{name}: input {in_shape} is smaller than the {kernel} window")
    return (c, oh, ow)


class _SameGrid:
    """A pool keeps its input's grid: one ``scale`` in and out."""

    scale: float

    @property
    def in_scale(self) -> float:
        """Scale of the input grid (also the output's)."""
        return self.scale

    @property
    def out_scale(self) -> float:
        """Scale of the output grid (the input's)."""
        return self.scale


@dataclass
class IntMaxPool(_SameGrid):
    """Max pooling on the integer grid (max commutes with quantisation: no requant, same scale).

    Padding never wins: torch allows at most half the kernel, so every window holds a real value.
    """

    name: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    scale: float
    src: int | None = None
    kind: str = "maxpool"

    def __post_init__(self) -> None:
        if any(2 * p > k for p, k in zip(self.padding, self.kernel, strict=True)):
            raise GraphError(f"{self.name}: padding {self.padding} exceeds half the kernel")

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C, OH, OW) for a (C, H, W) input."""
        return _pool_shape(self.name, in_shape, self.kernel, self.stride, self.padding)

    def evaluate(self, x: np.ndarray, res: np.ndarray | None = None) -> np.ndarray:
        """Integer window maxima for a batch."""
        low = int(np.iinfo(np.int64).min)
        win = _windows(np.asarray(x, np.int64), self.kernel, self.stride, low, self.padding)
        return win.max(axis=(4, 5))


@dataclass
class IntAvgPool(_SameGrid):
    """Average pooling on the integer grid: ``numerics.average_round`` of each window's sum.

    No padding; a global average pool is the window of the whole feature map, giving (C, 1, 1).
    The output stays on the input's scale.
    """

    name: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    scale: float
    src: int | None = None
    kind: str = "avgpool"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C, OH, OW) for a (C, H, W) input."""
        return _pool_shape(self.name, in_shape, self.kernel, self.stride, (0, 0))

    def evaluate(self, x: np.ndarray, res: np.ndarray | None = None) -> np.ndarray:
        """Integer window means for a batch."""
        win = _windows(np.asarray(x, np.int64), self.kernel, self.stride, 0, (0, 0))
        return numerics.average_round(win.sum(axis=(4, 5)), self.kernel[0] * self.kernel[1])


@dataclass
class IntPool:
    """Global average pooling as an integer sum over H and W, requantised to the next grid.

    What a QAT model's pooling exports to: its fake-quant pools in float and quantizes the mean
    with the next layer's own step, so the sum is requantised once by ``in_scale / (H*W*out)``.
    """

    name: str
    mult: int
    shift: int
    lo: int
    hi: int
    in_scale: float
    out_scale: float
    src: int | None = None
    kind: str = "pool"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C,) for a (C, H, W) input."""
        if len(in_shape) != 3:
            raise GraphError(f"{self.name}: pooling needs a (C, H, W) input, gets {in_shape}")
        return (in_shape[0],)

    def evaluate(self, x: np.ndarray, res: np.ndarray | None = None) -> np.ndarray:
        """Integer pooled output for a batch."""
        s = np.asarray(x, dtype=np.int64).sum(axis=(2, 3))
        return numerics.requant(s, 0, self.mult, self.shift, self.lo, self.hi)


Node = IntLayer | IntMaxPool | IntAvgPool | IntPool
"""A node of an integer graph."""


@dataclass
class IntGraph:
    """A DAG of integer nodes in topological order, with the quantisation of its float input.

    Node i reads node ``src`` (-1: the graph input), or node i-1 where ``src`` is None; a layer
    with ``res_from`` also adds the output of that earlier node as a residual.
    """

    layers: list[Node]
    input_shape: tuple[int, ...]
    input_scale: float
    input_lo: int = -128
    input_hi: int = 127
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layers:
            raise GraphError("an integer graph needs at least one layer")
        shapes = [tuple(self.input_shape)]
        for i, layer in enumerate(self.layers):
            for what in ("src", "res_from"):
                j = getattr(layer, what, None)
                if j is not None and not -1 <= j < i:
                    raise GraphError(f"{layer.name}: {what} {j} is not an earlier node")
            shape = shapes[self.source(i) + 1]
            if isinstance(layer, IntLayer):
                self._check_layer(layer, shape)
            out = layer.out_shape(shape)
            if isinstance(layer, IntLayer) and layer.res_from is not None:
                rc, rh, rw = shapes[layer.res_from + 1]
                s = layer.res_stride
                got = (rc + 2 * layer.res_pad, -(-rh // s), -(-rw // s))
                if got != out:
                    raise GraphError(f"{layer.name}: residual of shape {got} cannot add to {out}")
            shapes.append(out)

    @staticmethod
    def _check_layer(layer: IntLayer, shape: tuple[int, ...]) -> None:
        if layer.kind == "conv" and (len(shape) != 3 or shape[0] != layer.weight.shape[1]):
            raise GraphError(
                f"{layer.name}: expects {layer.weight.shape[1]} input channels, gets {shape}"
            )
        if layer.kind == "linear":
            k = int(np.prod(shape)) if layer.flatten else shape[-1]
            if (not layer.flatten and len(shape) != 1) or k != layer.weight.shape[1]:
                raise GraphError(
                    f"{layer.name}: expects {layer.weight.shape[1]} inputs, gets {shape}"
                )

    def source(self, i: int) -> int:
        """Index of the node that node i reads (-1: the graph input)."""
        src = self.layers[i].src
        return i - 1 if src is None else src

    @property
    def is_chain(self) -> bool:
        """True when every node is a Conv2d/Linear layer reading the one before (what the
        accelerator runs so far): no residual, no pooling, no branch."""
        return all(
            isinstance(n, IntLayer) and n.res_from is None and self.source(i) == i - 1
            for i, n in enumerate(self.layers)
        )

    @property
    def output_scale(self) -> float:
        """Scale of the last node's integer output."""
        return self.layers[-1].out_scale

    def shapes(self) -> list[tuple[int, ...]]:
        """Per-sample shape of the graph input, then of every node's output."""
        out = [tuple(self.input_shape)]
        for i, layer in enumerate(self.layers):
            out.append(layer.out_shape(out[self.source(i) + 1]))
        return out

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float input to the integers the first layer consumes."""
        return numerics.quantize_activation(x, self.input_scale, self.input_lo, self.input_hi)

    def evaluate(self, x_int: np.ndarray) -> np.ndarray:
        """Integer output of the last node for a batch of integer inputs."""
        outs = [np.asarray(x_int, dtype=np.int64)]
        for i, layer in enumerate(self.layers):
            res = getattr(layer, "res_from", None)
            outs.append(
                layer.evaluate(outs[self.source(i) + 1], None if res is None else outs[res + 1])
            )
        return outs[-1]
