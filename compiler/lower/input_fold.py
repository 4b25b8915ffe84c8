"""Folding a few-channel first convolution into the array's lanes.

A first layer over C input channels fills C of the array's ``cols`` lanes: ResNet-18's conv1
(3 channels, 7x7 stride 2) runs 49 kernel positions per output pixel on 3 of 20 lanes. The host
can rewrite the input instead (``host.tensors.InputFold``): each spatial axis cut into P phases
taken every ``step`` (the layer's stride, or 1 to leave the axis alone) turns kernel tap
i = t*step + p into tap t of channel (c, p). The layer becomes a convolution of
ceil((k - P) / s) + 1 taps over C*Ph*Pw channels, padding done by the host, with the same
weights (zeros where a (t, p) is no tap), so its integer result is the same to the bit.
P = s is space-to-depth; P = k puts every kernel column into lanes. Which fold, if any, is the
cost model's choice (``costs``): more channels fill more lanes, but every P > s repeats input
pixels in DDR.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ...arch import AccelConfig
from ...host.tensors import InputFold, chunks
from ..ir import IntGraph, IntLayer
from .checks import CompileError
from .costs import PassCosts
from .planning import plan_passes
from .tiling import candidates

Axis = tuple[int, int, int, int]
"""How one spatial axis folds: (step, phases, taps, stride of the folded convolution)."""


def axis_folds(k: int, s: int) -> list[Axis]:
    """The ways to fold an axis of kernel ``k`` and stride ``s``: left alone, or cut into
    P phases every s, for every P from min(s, k) (space-to-depth) to k (every tap in lanes)."""
    folds = [(1, 1, k, s)]
    for p in range(min(s, k), k + 1):
        fold = (s, p, -(-(k - p) // s) + 1, 1)
        if fold != folds[0]:
            folds.append(fold)
    return folds


def make_fold(layer: IntLayer, in_shape: tuple[int, int, int], h: Axis, w: Axis) -> InputFold:
    """The input fold of ``layer`` over a (C, H, W) input with axes folded as ``h`` and ``w``."""
    _, oh, ow = layer.out_shape(in_shape)
    out_hw = tuple((o - 1) * a[3] + a[2] for o, a in zip((oh, ow), (h, w), strict=True))
    return InputFold(
        tuple(int(i) for i in in_shape),
        tuple(int(i) for i in layer.padding),
        (h[0], w[0]),
        (h[1], w[1]),
        out_hw,
    )


def _taps(k: int, step: int, taps: int) -> list[tuple[int, int]]:
    """(tap, phase) of each kernel index i = tap*step + phase, every i once."""
    return [(min(i // step, taps - 1), i - min(i // step, taps - 1) * step) for i in range(k)]


def fold_layer(layer: IntLayer, fold: InputFold) -> IntLayer:
    """``layer`` as the convolution over ``fold``'s map: weights [N, C*Ph*Pw, Th, Tw] in the
    fold's channel order, padding 0, stride 1 on every folded axis."""
    n, c, kh, kw = layer.weight.shape
    (sh, sw), (ph, pw) = fold.step, fold.phases
    out = layer.out_shape(fold.in_shape)[1:]
    th = fold.out_hw[0] - (out[0] - 1) * (layer.stride[0] // sh)
    tw = fold.out_hw[1] - (out[1] - 1) * (layer.stride[1] // sw)
    w = np.zeros((n, c, ph, pw, th, tw), dtype=layer.weight.dtype)
    for i, (ti, pi) in enumerate(_taps(kh, sh, th)):
        for j, (tj, pj) in enumerate(_taps(kw, sw, tw)):
            w[:, :, pi, pj, ti, tj] = layer.weight[:, :, i, j]
    return dataclasses.replace(
        layer,
        weight=w.reshape(n, c * ph * pw, th, tw),
        stride=(layer.stride[0] // sh, layer.stride[1] // sw),
        padding=(0, 0),
    )


def folded_graph(graph: IntGraph, fold: InputFold) -> IntGraph:
    """``graph`` with its first layer folded: it reads ``fold``'s map as the graph input."""
    layers = [fold_layer(graph.layers[0], fold), *graph.layers[1:]]
    return dataclasses.replace(graph, layers=layers, input_shape=fold.out_shape)


def foldable(graph: IntGraph, cfg: AccelConfig) -> bool:
    """The first node is a convolution with fewer input channels than lanes, a kernel larger
    than 1x1 or a stride, no residual, and the only reader of the graph input."""
    first = graph.layers[0]
    if not isinstance(first, IntLayer) or first.kind != "conv" or first.res_from is not None:
        return False
    if first.weight.shape[1] >= cfg.cols or first.weight.shape[2:] == (1, 1) == first.stride:
        return False
    return not any(
        graph.source(i) == -1 or getattr(n, "res_from", None) == -1
        for i, n in enumerate(graph.layers)
        if i
    )


def fold_candidates(graph: IntGraph, cfg: AccelConfig) -> list[InputFold]:
    """The folds of the first layer on the front of (array cycles per output pixel, input
    entries in DDR), the unfolded layer's own point excluded."""
    layer, shape = graph.layers[0], tuple(int(i) for i in graph.input_shape)
    c, (kh, kw), (sh, sw) = shape[0], layer.weight.shape[2:], layer.stride
    points = []
    for h in axis_folds(kh, sh):
        for w in axis_folds(kw, sw):
            if h[:2] == w[:2] == (1, 1):
                continue
            fold = make_fold(layer, shape, h, w)
            kc = chunks(c * h[1] * w[1], cfg.cols)
            points.append((kc * h[2] * w[2], kc * math.prod(fold.out_hw), fold))
    front: dict[tuple[int, int], InputFold] = {}
    for a, b, fold in points:
        if not any(a2 <= a and b2 <= b and (a2, b2) != (a, b) for a2, b2, _ in points):
            front.setdefault((a, b), fold)
    return list(front.values())


def first_layer_cost(graph: IntGraph, cfg: AccelConfig, batch: int) -> tuple[int, int]:
    """Estimated cycles and DMA bytes of the first layer's passes alone (``costs``)."""
    one = dataclasses.replace(graph, layers=graph.layers[:1])
    costs = PassCosts(cfg)
    passes = plan_passes(one, cfg)[0]
    picks = [min(costs.cost(p, t) for t in candidates(p, cfg, batch)) for p in passes]
    return sum(c for c, _ in picks), sum(b for _, b in picks)


def choose_fold(graph: IntGraph, cfg: AccelConfig, batch: int) -> InputFold | None:
    """The fold of the first layer with the fewest estimated cycles (then DMA bytes), or None
    where leaving it alone is as fast. A fold the lowering would refuse (its spread weights
    could overflow the accumulator) is skipped."""
    if not foldable(graph, cfg):
        return None
    best, best_cost = None, first_layer_cost(graph, cfg, batch)
    for fold in fold_candidates(graph, cfg):
        try:
            cost = first_layer_cost(folded_graph(graph, fold), cfg, batch)
        except CompileError:
            continue
        if cost < best_cost:
            best, best_cost = fold, cost
    return best
