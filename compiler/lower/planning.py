"""From graph nodes to on-chip passes: a Conv2d/Linear is one pass (after a copy pass when its
residual is not already in its slot order), a pool is a per-chunk pass, and every pass writes
its own feature map region ``fm<i>``."""

from __future__ import annotations

import dataclasses

import numpy as np

from ...arch import AccelConfig, numerics
from ...host.tensors import chunks
from ..ir import IntAvgPool, IntGraph, IntLayer, IntMaxPool, IntPool
from .checks import CompileError, act_max, check_acc, check_numerics, out_hw
from .passes import FMap, Pass
from .placement import Placement, place_rows, slot_map, slot_weight, spread_placement, weight4
from .tiling import tile


def plan_passes(graph: IntGraph, cfg: AccelConfig) -> tuple[list[Pass], FMap, FMap]:
    """Every node's passes in order, the input map and the output map."""
    shape = tuple(int(i) for i in graph.input_shape)
    c, h, w = shape if len(shape) == 3 else (shape[0], 1, 1)
    slots = chunks(c, cfg.cols) * cfg.cols
    in_map = np.full(slots, -1, dtype=np.int64)
    in_map[:c] = np.arange(c)
    maps = {-1: FMap("fm0", (slots, h, w), in_map, act_max(graph.input_lo, graph.input_hi))}
    passes: list[Pass] = []
    first = graph.layers[0]
    others = any(
        graph.source(i) == -1 or getattr(n, "res_from", None) == -1
        for i, n in enumerate(graph.layers)
        if i
    )
    spread = None
    if isinstance(first, IntLayer) and first.res_from is None and not others:
        spread = spread_placement(first, cfg, maps[-1])
    if spread is not None:
        maps[-1] = spread[1]
    for i, node in enumerate(graph.layers):
        src, dst = maps[graph.source(i)], f"fm{i + 1}"
        if i == 0 and spread is not None:
            passes.extend(layer_passes(node, cfg, spread[1], None, dst, placement=spread[0]))
        elif isinstance(node, IntLayer):
            res = None if node.res_from is None else maps[node.res_from]
            passes.extend(layer_passes(node, cfg, src, res, dst))
        else:
            passes.append(pool_pass(node, cfg, src, dst))
        p = passes[-1]
        oh, ow = out_hw(p.name, *p.in_shape[1:], p.kernel, p.stride, p.pad)
        keep = p.kind in ("maxpool", "avgpool")
        x_max = p.x_max if keep else act_max(p.lo, p.hi)
        maps[i] = FMap(dst, (len(p.out_map), oh, ow), p.out_map, x_max)
    return passes, maps[-1], maps[len(graph.layers) - 1]


def layer_passes(
    layer: IntLayer,
    cfg: AccelConfig,
    src: FMap,
    res: FMap | None,
    dst: str,
    placement: Placement | None = None,
) -> list[Pass]:
    """A Conv2d/Linear node: its pass, after a copy pass that puts the residual in its slots.

    ``placement`` overrides the placement by format (``spread_placement`` gives one)."""
    check_numerics(layer, cfg, src.x_max)
    rows = cfg.rows
    slots, h, w = src.shape
    w4 = weight4(layer, h, w)
    if layer.kind == "conv":
        kernel, stride = tuple(w4.shape[2:]), tuple(int(i) for i in layer.stride)
        pad = tuple(int(i) for i in layer.padding)
    else:
        kernel, stride, pad = (h, w), (1, 1), (0, 0)
    if placement is None:
        nt, slot = place_rows(layer, cfg)
        levels = np.zeros((nt * rows, slots, *kernel), dtype=np.int64)
        levels[slot] = slot_weight(w4, src.slots, slots)
    else:
        nt, slot, levels = placement
    q = np.zeros((4, nt * rows), dtype=np.int64)
    q[:3, slot] = layer.bias, layer.mult, layer.shift
    out_map = slot_map(slot, nt, rows)
    oh, ow = out_hw(layer.name, h, w, kernel, stride, pad)
    out_shape = (layer.out_channels, oh, ow) if layer.kind == "conv" else (layer.out_channels,)
    macs = oh * ow * layer.out_channels * int(np.prod(layer.weight.shape[1:]))
    passes = []
    res_region = None
    if res is not None:
        q[3, slot] = layer.res_mult
        same = (
            layer.res_stride == 1
            and layer.res_pad == 0
            and res.shape == (nt * rows, oh, ow)
            and np.array_equal(res.slots, out_map)
        )
        res_region = res.region
        if not same:
            res_region = f"{dst}.res"
            passes.append(copy_pass(layer, cfg, res, slot, nt, res_region))
    passes.append(
        Pass(
            layer.name,
            layer.kind,
            src.region,
            dst,
            src.shape,
            out_shape,
            out_map,
            levels,
            q,
            kernel,
            stride,
            pad,
            int(layer.lo),
            int(layer.hi),
            macs,
            src.x_max,
            res=res_region,
        )
    )
    if layer.kind == "linear" and (h, w) != (1, 1) and not runs_as_kernel(passes[-1], cfg):
        passes[-1] = dataclasses.replace(
            passes[-1],
            in_shape=(slots * h * w, 1, 1),
            kernel=(1, 1),
            levels=map_as_channels(levels, rows),
        )
    return passes


def runs_as_kernel(p: Pass, cfg: AccelConfig) -> bool:
    """Whether the GEMM's fields and the buffer halves take a Linear with its whole input map as
    the kernel (the tiling's own checks decide: at most 15x15, a chunk's kernel in half of W, one
    output's window in half of X). Where they do, that is how it runs, as it always has."""
    try:
        tile(p, cfg, 1)
    except CompileError:
        return False
    return True


def map_as_channels(levels: np.ndarray, cols: int) -> np.ndarray:
    """A Linear's [N, slots, h, w] weights as [N, slots*h*w, 1, 1], for its input map read as a
    1x1 map of chunks*h*w channel chunks: a feature map's DDR layout ([chunks][H][W] entries of
    ``cols`` channels, ``layout.fmap_entry``) is that map entry for entry, so the Linear needs
    no kernel of its map's size whatever the map size (``tiling.chunk_tiling`` cuts it into
    blocks of chunks where even one output's inputs do not fit half of X)."""
    n, slots, h, w = levels.shape
    lanes = levels.reshape(n, slots // cols, cols, h, w).transpose(0, 1, 3, 4, 2)
    return lanes.reshape(n, slots * h * w, 1, 1)


def copy_pass(
    layer: IntLayer, cfg: AccelConfig, res: FMap, slot: np.ndarray, nt: int, dst: str
) -> Pass:
    """An exact 1x1 pass that writes ``layer``'s shortcut (subsampled by ``res_stride``,
    channel-padded by ``res_pad``) in ``layer``'s slot order: 0/1 weights, identity requant."""
    slots, h, w = res.shape
    levels = np.zeros((nt * cfg.rows, slots, 1, 1), dtype=np.int64)
    valid = np.flatnonzero(res.slots >= 0)
    levels[slot[res.slots[valid] + layer.res_pad], valid, 0, 0] = 1
    q = np.zeros((4, nt * cfg.rows), dtype=np.int64)
    q[:3] = np.array(numerics.IDENTITY_REQUANT)[:, None]
    lo, hi = numerics.act_range(cfg.act_bits, signed=True)
    s = (layer.res_stride, layer.res_stride)
    oh, ow = out_hw(layer.name, h, w, (1, 1), s, (0, 0))
    return Pass(
        f"{layer.name}.shortcut",
        "copy",
        res.region,
        dst,
        res.shape,
        (layer.out_channels, oh, ow),
        slot_map(slot, nt, cfg.rows),
        levels,
        q,
        (1, 1),
        s,
        (0, 0),
        lo,
        hi,
        0,
        res.x_max,
    )


def pool_pass(
    node: IntMaxPool | IntAvgPool | IntPool, cfg: AccelConfig, src: FMap, dst: str
) -> Pass:
    """A pooling node as a per-chunk pass over ``src`` (its slots pass through)."""
    slots, h, w = src.shape
    q = np.zeros((4, slots), dtype=np.int64)
    a_lo, a_hi = numerics.act_range(cfg.act_bits, signed=True)
    lo, hi = a_lo, a_hi
    if isinstance(node, IntMaxPool):
        kernel, stride, pad = node.kernel, node.stride, node.padding
        q[:3] = np.array(numerics.IDENTITY_REQUANT)[:, None]
    elif isinstance(node, IntAvgPool):
        kernel, stride, pad = node.kernel, node.stride, (0, 0)
        q[:3] = np.array(numerics.average_requant(kernel[0] * kernel[1]))[:, None]
    else:
        kernel, stride, pad = (h, w), (1, 1), (0, 0)
        q[1], q[2] = node.mult, node.shift
        lo, hi = int(node.lo), int(node.hi)
        if not (a_lo <= lo and hi <= a_hi):
            raise CompileError(
                f"layer {node.name}: output range [{lo}, {hi}] does not fit the "
                f"{cfg.act_bits}-bit signed activations; re-export with 8-bit activations"
            )
    kernel, stride, pad = (tuple(int(i) for i in v) for v in (kernel, stride, pad))
    is_max = isinstance(node, IntMaxPool)
    levels = None
    if not is_max:
        check_acc(node.name, cfg, kernel[0] * kernel[1] * src.x_max, "window sum")
        levels = np.ones((slots, *kernel), dtype=np.int64)
    oh, ow = out_hw(node.name, h, w, kernel, stride, pad)
    n_ch = int((src.slots >= 0).sum())
    out_shape = (n_ch,) if isinstance(node, IntPool) else (n_ch, oh, ow)
    return Pass(
        node.name,
        node.kind,
        src.region,
        dst,
        src.shape,
        out_shape,
        src.slots,
        levels,
        q,
        kernel,
        stride,
        pad,
        lo,
        hi,
        n_ch * oh * ow * kernel[0] * kernel[1],
        src.x_max,
        per_chunk=True,
        max=is_max,
    )
