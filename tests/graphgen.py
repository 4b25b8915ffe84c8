"""Random integer graphs for the lowering/runtime tests, built directly in numpy."""

from __future__ import annotations

import dataclasses

import numpy as np

from rmsmp.arch import AccelConfig, isa, numerics
from rmsmp.compiler.ir import IntGraph, IntLayer


def random_layer(
    rng: np.random.Generator,
    cfg: AccelConfig,
    name: str,
    kind: str,
    in_shape: tuple[int, ...],
    n: int,
    x_sample: np.ndarray,
    kernel: int = 3,
    stride: int = 1,
    padding: int = 0,
    flatten: bool = False,
    lo: int = 0,
    hi: int = 15,
) -> IntLayer:
    """A layer with per-row formats from ``cfg``'s groups and multipliers fitted to its input."""
    fmts = [str(f) for f in rng.choice([g.fmt for g in cfg.groups], size=n)]
    if kind == "conv":
        wshape = (in_shape[0], kernel, kernel)
    else:
        wshape = (int(np.prod(in_shape)),)
    w = np.stack([rng.choice(numerics.weight_format(f).levels(), size=wshape) for f in fmts])
    ones = np.ones(n, dtype=np.int64)
    probe = IntLayer(
        name,
        kind,
        w,
        fmts,
        0 * ones,
        ones,
        0 * ones,
        lo,
        hi,
        1.0,
        1.0,
        (stride, stride),
        (padding, padding),
        flatten,
    )
    acc = probe.accumulate(x_sample)
    spread = acc.swapaxes(0, 1).reshape(n, -1).std(axis=1) + 1.0
    bias = np.round(rng.normal(0, 0.5, n) * spread).astype(np.int64)
    mults, shifts = zip(
        *(
            numerics.requant_multiplier(float((hi - lo) / (8 * s) * 2 ** rng.uniform(-1, 1)))
            for s in spread
        ),
        strict=True,
    )
    return dataclasses.replace(
        probe,
        bias=bias,
        mult=np.array(mults, dtype=np.int64),
        shift=np.array(shifts, dtype=np.int64),
        relu=lo == 0,
    )


def random_graph(
    rng: np.random.Generator,
    cfg: AccelConfig,
    input_shape: tuple[int, ...],
    specs: list[dict],
) -> IntGraph:
    """A chain from layer specs (kwargs of ``random_layer`` minus rng/cfg/in_shape/x_sample)."""
    x = rng.integers(-128, 128, size=(4, *input_shape))
    shape, layers = tuple(input_shape), []
    for i, spec in enumerate(specs):
        layer = random_layer(rng, cfg, f"l{i}", in_shape=shape, x_sample=x, **spec)
        layers.append(layer)
        x, shape = layer.evaluate(x), layer.out_shape(shape)
    return IntGraph(layers, tuple(input_shape), input_scale=0.05)


def random_specs(
    rng: np.random.Generator, cfg: AccelConfig, max_ch: int
) -> tuple[tuple[int, ...], list[dict]]:
    """A random input shape and layer chain: convs, then optionally linear layers."""
    convs = int(rng.integers(0, 3))
    if convs:
        h = int(rng.integers(3, 8))
        shape: tuple[int, ...] = (int(rng.integers(1, max_ch)), h, int(rng.integers(3, 8)))
    else:
        shape = (int(rng.integers(1, 4 * max_ch)),)
    specs, sp = [], shape
    for _ in range(convs):
        k = int(rng.integers(1, 4))
        pad = int(rng.integers(0, min(2, k)))
        stride = int(rng.integers(1, 3))
        if min(sp[1], sp[2]) + 2 * pad < k:
            k, pad = 1, 0
        specs.append(
            dict(kind="conv", n=int(rng.integers(1, max_ch)), kernel=k, stride=stride, padding=pad)
        )
        oh = (sp[1] + 2 * pad - k) // stride + 1
        ow = (sp[2] + 2 * pad - k) // stride + 1
        sp = (specs[-1]["n"], oh, ow)
    linears = int(rng.integers(0 if convs else 1, 3))
    if len(sp) == 3 and max(sp[1:]) > 7:  # a Linear's kernel is its whole input map, at most 7x7
        linears = 0
    for j in range(linears):
        specs.append(dict(kind="linear", n=int(rng.integers(1, 2 * max_ch)), flatten=j == 0))
    specs[-1].update(lo=-128, hi=127)
    return shape, specs


GEMM_DEFAULTS = dict(
    reset=1,
    final=1,
    w_base=0,
    x_base=0,
    acc_base=0,
    o_base=0,
    q_base=0,
    max=0,
    res=0,
    r_base=0,
    oh_count=1,
    ow_count=1,
    c_count=1,
    kh=1,
    kw=1,
    stride_y=1,
    stride_x=1,
    pad_top=0,
    pad_left=0,
    tile_h=1,
    tile_w=1,
    c_stride=1,
    lo=-128,
    hi=127,
)
"""A one-pixel, one-chunk GEMM; tests override the fields they probe."""


def gemm_word(cfg: AccelConfig, **kw: int) -> int:
    """An encoded GEMM instruction: ``GEMM_DEFAULTS`` with ``kw`` applied."""
    return isa.encode(cfg, isa.Opcode.GEMM, **{**GEMM_DEFAULTS, **kw})


def head_specs(
    rng: np.random.Generator, max_ch: int, max_hw: int
) -> tuple[tuple[int, ...], list[dict]]:
    """A random input map up to ``max_hw`` square, up to two stride-1 'same' convs that keep
    its size, and a Linear head over the whole map (then perhaps a second Linear): the head's
    kernel is the map, larger than the GEMM's 15x15 when the map is."""
    h, w = (int(rng.integers(3, max_hw + 1)) for _ in range(2))
    shape = (int(rng.integers(1, max_ch)), h, w)
    specs = [
        dict(kind="conv", n=int(rng.integers(1, max_ch)), kernel=3, stride=1, padding=1)
        for _ in range(int(rng.integers(0, 3)))
    ]
    specs.append(dict(kind="linear", n=int(rng.integers(1, 2 * max_ch)), flatten=True))
    if rng.random() < 0.5:
        specs.append(dict(kind="linear", n=int(rng.integers(1, 2 * max_ch))))
    specs[-1].update(lo=-128, hi=127)
    return shape, specs
