"""Lowering an IntGraph to a Program for one AccelConfig: row mapping, tiling, instructions.

The whole graph becomes one Program: every node is one or two on-chip passes, each a
convolution walked on chip (a Linear is the convolution whose kernel covers its whole input map).
Pools are per-chunk passes: a max pool walks in ``max`` mode, an average pool sums through
diagonal weights and divides exactly in the requant (``numerics.average_requant``). A residual
add is fused into the requant of the layer that ends the block (``res`` mode, reading the R
buffer); when the shortcut is subsampled, channel-padded or in another slot order, an exact copy
pass (0/1 weights, ``numerics.IDENTITY_REQUANT``) first writes it in the layer's slot order.

Output rows are placed by weight format into the PE row groups of successive row tiles
("slots"); feature maps stay in DDR between passes in ``arch.layout``'s channel-blocked layout
with their channels in slot order, and the next layer's weights are permuted to match, so nothing
is reordered between layers and the host touches only the network input and output.

Per pass the compiler cuts the input map into tiles (bands of output rows, and of columns when
a row does not fit) and the weights into groups of row tiles, picks the loop order that moves
fewer DDR bytes (weights outer with input tiles streamed, or input tiles outer with weight groups
streamed; whatever fits the buffer stays resident), double-buffers whatever streams, and leaves
the ordering to dependency tokens (``compiler.tokens``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np

from ..arch import AccelConfig, isa, layout, numerics
from ..arch.isa import Buf, Opcode
from ..arch.layout import Entry
from ..host.program import LayerRecord, Program, Segment, align
from ..host.tensors import chunks, conv_out_hw
from .ir import IntAvgPool, IntGraph, IntLayer, IntMaxPool, IntPool
from .tokens import Op, Range, add_tokens, hoist_loads

MIN_GEMM_MACS = 512
"""Output bands are cut so a GEMM runs at least this many array cycles (when the tile allows):
small bands let compute start on the first rows of a tile, and this keeps a GEMM's fixed cost
(pipeline fill and drain, ~20 cycles) a few percent of it."""


class CompileError(ValueError):
    """A graph that cannot run on the given AccelConfig; the message names the layer and fix."""


class _DeadlockError(Exception):
    """``isa.schedule`` found that an instruction order deadlocks (dispatched, total)."""


@dataclass
class _Pass:
    """One on-chip pass: a convolution over a channel-blocked map, with its requant.

    It reads DDR region ``src`` (``in_shape`` = channel slots, H, W) and writes ``dst`` in
    ``out_map``'s slot order (slot -> logical channel, -1 for padding). ``levels`` are the
    weights in slot order: [out slots, in slots, kh, kw] for a dense pass, [out slots, kh, kw]
    for a ``per_chunk`` pass (output chunk t reads input chunk t, lane r from lane r); a ``max``
    pass has none. ``q`` is [4, out slots]: bias, mult, shift and res_mult of every slot. ``res``
    is the region of a residual already in this pass's slot order and output shape.
    """

    name: str
    kind: str
    src: str
    dst: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, ...]
    out_map: np.ndarray
    levels: np.ndarray | None
    q: np.ndarray
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    lo: int
    hi: int
    macs: int
    x_max: int
    per_chunk: bool = False
    max: bool = False
    res: str | None = None


@dataclass(frozen=True)
class _Geom:
    """A pass as a convolution over a channel-blocked map."""

    in_chunks: int
    h: int
    w: int
    kh: int
    kw: int
    stride: tuple[int, int]
    pad: tuple[int, int]
    oh: int
    ow: int
    n_tiles: int
    per_chunk: bool

    @property
    def w_chunks(self) -> int:
        """Input chunks one row tile's weights cover (1 for a per-chunk pass)."""
        return 1 if self.per_chunk else self.in_chunks

    def first_chunk(self, tile: int) -> int:
        """First input chunk row tile ``tile`` reads."""
        return tile if self.per_chunk else 0


@dataclass(frozen=True)
class _XTile:
    """Input rows [y0, y0+th) x columns [x0, x0+tw) of one image, for output rows
    [oy0, oy0+rows) x columns [ox0, ox0+cols)."""

    b: int
    oy0: int
    rows: int
    ox0: int
    cols: int
    y0: int
    th: int
    x0: int
    tw: int


@dataclass
class _Plan:
    rec: LayerRecord
    ops: list[Op]
    w_blob: bytes
    q_blob: bytes
    src: str
    dst: str


@dataclass(frozen=True)
class _Map:
    """A feature map in DDR: its region, (slots, H, W), slot -> logical channel, value bound."""

    region: str
    shape: tuple[int, int, int]
    slots: np.ndarray
    x_max: int


def _act_max(lo: int, hi: int) -> int:
    return max(abs(lo), abs(hi))


def _place_rows(layer: IntLayer, cfg: AccelConfig) -> tuple[int, np.ndarray]:
    """Row tile count and the hardware slot of every logical output row."""
    offs = cfg.group_offsets()
    by_fmt: dict[str, list[int]] = {}
    for n, f in enumerate(layer.formats):
        by_fmt.setdefault(f, []).append(n)
    for f in by_fmt:
        if f not in offs:
            raise CompileError(
                f"layer {layer.name}: rows use weight format {f!r}, but config {cfg.name!r} has "
                f"row groups {[g.fmt for g in cfg.groups]}; quantize the model with the config's "
                f"formats or use a config with a {f} group"
            )
    n_tiles = max(chunks(len(rows), offs[f][1]) for f, rows in by_fmt.items())
    slot = np.empty(layer.out_channels, dtype=np.int64)
    for f, rows in by_fmt.items():
        first, size = offs[f]
        for i, n in enumerate(rows):
            slot[n] = (i // size) * cfg.rows + first + i % size
    return n_tiles, slot


def _check_numerics(layer: IntLayer, cfg: AccelConfig, x_max: int) -> None:
    a_lo, a_hi = numerics.act_range(cfg.act_bits, signed=True)
    if not (a_lo <= layer.lo and layer.hi <= a_hi):
        raise CompileError(
            f"layer {layer.name}: output range [{layer.lo}, {layer.hi}] does not fit the "
            f"{cfg.act_bits}-bit signed activations [{a_lo}, {a_hi}]; re-export with "
            "activations of at most 8 bits"
        )
    mult_range = (-(1 << (numerics.MULT_BITS - 1)), (1 << (numerics.MULT_BITS - 1)) - 1)
    checks = (
        ("bias", layer.bias, -(1 << (numerics.BIAS_BITS - 1)), (1 << (numerics.BIAS_BITS - 1)) - 1),
        ("mult", layer.mult, *mult_range),
        ("res_mult", np.zeros(0) if layer.res_mult is None else layer.res_mult, *mult_range),
        ("shift", layer.shift, 0, numerics.MAX_SHIFT),
    )
    for name, v, lo, hi in checks:
        v = np.asarray(v, dtype=np.int64)
        if v.size and (v.min() < lo or v.max() > hi):
            raise CompileError(
                f"layer {layer.name}: {name} values must lie in [{lo}, {hi}], got "
                f"[{v.min()}, {v.max()}]; re-export with numerics.requant_multiplier"
            )
    row_abs = np.abs(layer.weight.astype(np.int64)).reshape(layer.out_channels, -1).sum(axis=1)
    _check_acc(layer.name, cfg, int((row_abs * x_max).max()), f"sum|w| * {x_max}")


def _check_acc(name: str, cfg: AccelConfig, bound: int, how: str) -> None:
    if bound >= 1 << (cfg.acc_bits - 1):
        raise CompileError(
            f"layer {name}: accumulators may reach {bound} ({how}), which overflows the "
            f"{cfg.acc_bits}-bit accumulator; use a config with larger acc_bits or split the layer"
        )


def _weight4(layer: IntLayer, h: int, w: int) -> np.ndarray:
    """The layer's weight as [N, C, kh, kw] of the convolution it runs as (a Linear's kernel is
    its whole h x w input map, in torch's flatten order)."""
    wt = layer.weight.astype(np.int64)
    if layer.kind == "conv":
        return wt
    if layer.weight.shape[1] % (h * w):
        raise CompileError(
            f"layer {layer.name}: Linear takes {layer.weight.shape[1]} inputs, not a multiple "
            f"of its {h}x{w} input map"
        )
    return wt.reshape(layer.out_channels, -1, h, w)


def _slot_weight(w4: np.ndarray, in_map: np.ndarray, slots: int) -> np.ndarray:
    """[N, slots, kh, kw]: input channels moved to the slot order of the map the layer reads."""
    n = w4.shape[0]
    out = np.zeros((n, slots, *w4.shape[2:]), dtype=np.int64)
    valid = np.flatnonzero(in_map >= 0)
    out[:, valid] = w4[:, in_map[valid]]
    return out


def _slot_map(slot: np.ndarray, nt: int, rows: int) -> np.ndarray:
    """Logical channel of every output slot, -1 for padding."""
    m = np.full(nt * rows, -1, dtype=np.int64)
    m[slot] = np.arange(len(slot))
    return m


def _out_hw(name: str, h: int, w: int, kernel, stride, pad) -> tuple[int, int]:
    try:
        return conv_out_hw(h, w, *kernel, stride, pad)
    except ValueError as e:
        raise CompileError(f"layer {name}: {e}") from None


def _layer_passes(
    layer: IntLayer,
    cfg: AccelConfig,
    src: _Map,
    res: _Map | None,
    dst: str,
    placement: tuple[int, np.ndarray, np.ndarray] | None = None,
) -> list[_Pass]:
    """A Conv2d/Linear node: its pass, after a copy pass that puts the residual in its slots.

    ``placement`` (row tiles, slot of every row, slot-order levels) overrides the placement by
    format (``_spread_pass`` gives one)."""
    _check_numerics(layer, cfg, src.x_max)
    rows = cfg.rows
    slots, h, w = src.shape
    w4 = _weight4(layer, h, w)
    if layer.kind == "conv":
        kernel, stride = tuple(w4.shape[2:]), tuple(int(i) for i in layer.stride)
        pad = tuple(int(i) for i in layer.padding)
    else:
        kernel, stride, pad = (h, w), (1, 1), (0, 0)
    if placement is None:
        nt, slot = _place_rows(layer, cfg)
        levels = np.zeros((nt * rows, slots, *kernel), dtype=np.int64)
        levels[slot] = _slot_weight(w4, src.slots, slots)
    else:
        nt, slot, levels = placement
    q = np.zeros((4, nt * rows), dtype=np.int64)
    q[:3, slot] = layer.bias, layer.mult, layer.shift
    out_map = _slot_map(slot, nt, rows)
    oh, ow = _out_hw(layer.name, h, w, kernel, stride, pad)
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
            passes.append(_copy_pass(layer, cfg, res, slot, nt, res_region))
    passes.append(
        _Pass(
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
    return passes


def _copy_pass(
    layer: IntLayer, cfg: AccelConfig, res: _Map, slot: np.ndarray, nt: int, dst: str
) -> _Pass:
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
    oh, ow = _out_hw(layer.name, h, w, (1, 1), s, (0, 0))
    return _Pass(
        f"{layer.name}.shortcut",
        "copy",
        res.region,
        dst,
        res.shape,
        (layer.out_channels, oh, ow),
        _slot_map(slot, nt, cfg.rows),
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


@functools.cache
def _digit_table(fmt: str, terms: int) -> dict[int, tuple[int, ...]]:
    """Every integer that is a sum of at most ``terms`` levels of ``fmt``, with those levels."""
    levels = [int(v) for v in numerics.weight_format(fmt).levels() if v]
    table: dict[int, tuple[int, ...]] = {0: ()}
    frontier = dict(table)
    for _ in range(terms):
        grown = {}
        for v, parts in frontier.items():
            for lv in levels:
                if v + lv not in table and v + lv not in grown:
                    grown[v + lv] = (*parts, lv)
        table.update(grown)
        frontier = grown
    return {v: parts + (0,) * (terms - len(parts)) for v, parts in table.items()}


def _spread_pass(
    layer: IntLayer, cfg: AccelConfig, src: _Map, dst: str
) -> tuple[_Pass, _Map] | None:
    """The first layer with each input channel spread over ``d`` lanes (the host lays the input
    out that way) and each weight written as ``d`` levels of its PE row's format, so that rows
    of a scarce format (an 8-bit first layer on a preset with few Fixed-8 rows) can run on the
    other rows. None unless that needs fewer row tiles than ``_layer_passes``'s placement."""
    c_in, h, w = layer.weight.shape[1], *src.shape[1:]
    d = cfg.cols // c_in
    if layer.kind != "conv" or d < 2:
        return None
    plain, _ = _place_rows(layer, cfg)
    wt = layer.weight.astype(np.int64)
    fmts = [g.fmt for g in cfg.groups]
    feasible = [
        [f for f in fmts if set(np.unique(wt[n]).tolist()) <= _digit_table(f, d).keys()]
        for n in range(layer.out_channels)
    ]
    if any(not f for f in feasible):
        return None
    offs = cfg.group_offsets()
    for nt in range(1, plain):
        room = {f: nt * offs[f][1] for f in fmts}
        placed: dict[str, list[int]] = {f: [] for f in fmts}
        for n in sorted(range(layer.out_channels), key=lambda n: len(feasible[n])):
            f = max(feasible[n], key=lambda f: room[f])
            if not room[f]:
                break
            room[f] -= 1
            placed[f].append(n)
        else:
            break
    else:
        return None
    slot = np.empty(layer.out_channels, dtype=np.int64)
    levels = np.zeros((nt * cfg.rows, cfg.cols, *wt.shape[2:]), dtype=np.int64)
    for f, rows in placed.items():
        first, size = offs[f]
        table = _digit_table(f, d)
        for i, n in enumerate(rows):
            slot[n] = (i // size) * cfg.rows + first + i % size
            digits = np.array([table[int(v)] for v in wt[n].ravel()]).reshape(*wt[n].shape, d)
            levels[slot[n], : c_in * d] = digits.transpose(0, 3, 1, 2).reshape(
                c_in * d, *wt.shape[2:]
            )
    in_map = np.full(cfg.cols, -1, dtype=np.int64)
    in_map[: c_in * d] = np.repeat(np.arange(c_in), d)
    spread = _Map(src.region, (cfg.cols, h, w), in_map, src.x_max)
    bound = int(np.abs(levels).reshape(len(levels), -1).sum(axis=1).max()) * src.x_max
    _check_acc(layer.name, cfg, bound, f"sum|levels| * {src.x_max}")
    (p,) = _layer_passes(layer, cfg, spread, None, dst, placement=(nt, slot, levels))
    return p, spread


def _pool_pass(
    node: IntMaxPool | IntAvgPool | IntPool, cfg: AccelConfig, src: _Map, dst: str
) -> _Pass:
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
        _check_acc(node.name, cfg, kernel[0] * kernel[1] * src.x_max, "window sum")
        levels = np.ones((slots, *kernel), dtype=np.int64)
    oh, ow = _out_hw(node.name, h, w, kernel, stride, pad)
    n_ch = int((src.slots >= 0).sum())
    out_shape = (n_ch,) if isinstance(node, IntPool) else (n_ch, oh, ow)
    return _Pass(
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


def _geometry(p: _Pass, cfg: AccelConfig) -> _Geom:
    slots, h, w = p.in_shape
    (kh, kw), stride, pad = p.kernel, p.stride, p.pad
    kmax = (1 << isa.KERNEL_BITS) - 1
    if kh > kmax or kw > kmax:
        raise CompileError(
            f"layer {p.name}: kernel {kh}x{kw} is larger than {kmax}x{kmax} (a Linear's or a "
            "global pool's kernel is its whole input map); pool the map down first"
        )
    oh, ow = _out_hw(p.name, h, w, p.kernel, stride, pad)
    stride = (1 if oh == 1 else stride[0], 1 if ow == 1 else stride[1])  # one output: no step
    smax = (1 << isa.CONV_STRIDE_BITS) - 1
    if max(stride) > smax:
        raise CompileError(f"layer {p.name}: stride {stride} exceeds {smax}")
    if pad[0] >= kh or pad[1] >= kw or max(pad) >= 1 << isa.PAD_BITS:
        raise CompileError(
            f"layer {p.name}: padding {pad} must be smaller than the {kh}x{kw} kernel and at "
            f"most {(1 << isa.PAD_BITS) - 1} (an output that sees only padding is not "
            "supported); pad the input map instead"
        )
    nt = len(p.out_map) // cfg.rows
    return _Geom(slots // cfg.cols, h, w, kh, kw, stride, pad, oh, ow, nt, p.per_chunk)


def _x_tiles(g: _Geom, batch: int, cap: int, out_cap: int, max_out: int, name: str) -> list[_XTile]:
    """Input tiles of at most ``cap`` entries and ``max_out`` outputs covering every image."""
    sy, sx = g.stride
    py, px = g.pad

    def span(o0: int, n: int, s: int, p: int, k: int, size: int) -> tuple[int, int]:
        lo = max(0, o0 * s - p)
        return lo, min(size, (o0 + n - 1) * s - p + k) - lo

    def widest(n: int, s: int, k: int, size: int) -> int:
        """Input extent of ``n`` outputs anywhere in the map (padding clips only the edges)."""
        return min(size, (n - 1) * s + k)

    cols = min(g.ow, out_cap)
    while cols > 1 and g.in_chunks * g.kh * widest(cols, sx, g.kw, g.w) > cap:
        cols = max(1, cols // 2)
    tw = widest(cols, sx, g.kw, g.w)
    if g.in_chunks * widest(1, sy, g.kh, g.h) * tw > cap:
        raise CompileError(
            f"layer {name}: one output row's input window ({g.in_chunks} chunks x {g.kh} rows x "
            f"{tw} columns) does not fit half the X buffer ({cap} entries); use a config with a "
            "deeper x_depth"
        )
    rows = 1
    while (
        rows < g.oh
        and (rows + 1) * cols <= max_out
        and g.in_chunks * widest(rows + 1, sy, g.kh, g.h) * tw <= cap
    ):
        rows += 1
    tiles = []
    for b in range(batch):
        for oy0 in range(0, g.oh, rows):
            r = min(rows, g.oh - oy0)
            y0, th = span(oy0, r, sy, py, g.kh, g.h)
            for ox0 in range(0, g.ow, cols):
                c = min(cols, g.ow - ox0)
                xx0, xtw = span(ox0, c, sx, px, g.kw, g.w)
                tiles.append(_XTile(b, oy0, r, ox0, c, y0, th, xx0, xtw))
    return tiles


def _w_groups(g: _Geom, cfg: AccelConfig, name: str) -> list[list[tuple[int, int, int]]]:
    """Weight groups: lists of (row tile, first chunk, chunk count) that fit half of W and Q."""
    per_chunk = g.kh * g.kw
    w_half, q_half = cfg.w_depth // 2, max(1, cfg.q_depth // 2)
    if per_chunk > w_half:
        raise CompileError(
            f"layer {name}: one channel chunk of a {g.kh}x{g.kw} kernel needs {per_chunk} W "
            f"entries, more than half the W buffer ({w_half}); use a config with a deeper w_depth"
        )
    full = g.w_chunks * per_chunk
    if full <= w_half:
        per = min(w_half // full, q_half)
        return [
            [(t, g.first_chunk(t), g.w_chunks) for t in range(t0, min(g.n_tiles, t0 + per))]
            for t0 in range(0, g.n_tiles, per)
        ]
    cs = w_half // per_chunk
    return [
        [(t, c0, min(cs, g.in_chunks - c0))]
        for t in range(g.n_tiles)
        for c0 in range(0, g.in_chunks, cs)
    ]


def _block(region: str, first: int, y_size: int, x_size: int, x_stride: int, eb: int) -> Range:
    """The DDR bytes a 2-D block spans (gaps between its rows included)."""
    return (region, first * eb, (first + isa.block_entries(y_size, x_size, x_stride)) * eb)


def _w_codes(p: _Pass, g: _Geom, cfg: AccelConfig) -> np.ndarray:
    """W entry codes [nt * w_chunks * kh * kw, rows * cols] of a pass, tile by tile."""
    rows, cols, nt = cfg.rows, cfg.cols, g.n_tiles
    if p.per_chunk:
        lv = np.zeros((nt, 1, g.kh, g.kw, rows, cols), dtype=np.int64)
        diag = p.levels.reshape(nt, rows, g.kh, g.kw).transpose(0, 2, 3, 1)
        lv[:, 0, :, :, np.arange(rows), np.arange(cols)] = diag.transpose(3, 0, 1, 2)
    else:
        lv = p.levels.reshape(nt, rows, g.in_chunks, cols, g.kh, g.kw).transpose(0, 2, 4, 5, 1, 3)
    codes = np.empty_like(lv)
    for grp in cfg.groups:
        r0, size = cfg.group_offsets()[grp.fmt]
        fmt = numerics.weight_format(grp.fmt)
        codes[..., r0 : r0 + size, :] = fmt.encode(lv[..., r0 : r0 + size, :])
    return codes.reshape(-1, rows * cols)


def _plan_pass(  # noqa: C901 - one schedule
    p: _Pass, cfg: AccelConfig, batch: int, halves: dict[str, int]
) -> _Plan:
    g = _geometry(p, cfg)
    rows, cols, nt = cfg.rows, cfg.cols, g.n_tiles
    per_tile = g.w_chunks * g.kh * g.kw
    w_blob = b"" if p.max else layout.pack(cfg, Entry.W, _w_codes(p, g, cfg))
    q_blob = layout.pack(cfg, Entry.Q, layout.q_values(*p.q.reshape(4, nt, rows)))

    out_half, x_half, w_half, q_half = (
        cfg.out_depth // 2,
        cfg.x_depth // 2,
        cfg.w_depth // 2,
        max(1, cfg.q_depth // 2),
    )
    groups = _w_groups(g, cfg, p.name)
    split = groups[0][0][2] < g.w_chunks
    max_out = cfg.acc_depth if split else g.oh * g.ow
    tiles = _x_tiles(g, batch, x_half, min(out_half, max_out), max_out, p.name)
    eb_x, eb_w, eb_q = (layout.entry_bytes(cfg, k) for k in (Entry.X, Entry.W, Entry.Q))
    x_sizes = [g.in_chunks * t.th * t.tw for t in tiles]
    w_sizes = [0 if p.max else sum(n for _, _, n in grp) * g.kh * g.kw for grp in groups]
    x_res = sum(x_sizes) <= cfg.x_depth
    w_res = sum(w_sizes) <= cfg.w_depth and nt <= cfg.q_depth
    x_bytes, w_bytes = sum(x_sizes) * eb_x, sum(w_sizes) * eb_w + nt * eb_q
    w_outer_cost = w_bytes + x_bytes * (1 if x_res else len(groups))
    x_outer_cost = x_bytes + w_bytes * (1 if w_res else len(tiles))
    w_outer = w_outer_cost <= x_outer_cost and not split

    src, dst = p.src, p.dst
    ops: list[Op] = []
    packed: dict[str, int] = {}

    def next_half(kind: str, half: int) -> int:
        """Base of the half of a double-buffered region the next user of ``kind`` gets. The
        count runs on from pass to pass, so a pass's first loads go to the half the previous
        pass is not reading, and land while it runs."""
        halves[kind] = halves.get(kind, 0) + 1
        return (halves[kind] - 1) % 2 * half

    def slot_of(kind: str, i: int, resident: bool, sizes: list[int], half: int) -> int:
        """Where item ``i`` goes: the next half if it streams; if resident, packed after the
        others, from the next half's base when they all fit one half (else from 0)."""
        if not resident:
            return next_half(kind, half)
        if kind not in packed:
            packed[kind] = next_half(kind, half) if sum(sizes) <= half else 0
        return packed[kind] + sum(sizes[:i])

    pending: list[Op] = []
    """Loads not emitted yet: each goes just before the first GEMM that reads it, so program
    order follows the data and the token counters never hold more than needed."""

    def flush(upto: Op | None = None, space: str | None = None) -> None:
        """Emit the pending loads ``upto`` reads (or that write ``space``, or all), in order.

        Loads it does not read stay pending; moving a load later is always safe, because the
        tokens are derived from the final program order."""

        def needed(ld: Op) -> bool:
            if upto is not None:
                return any(
                    a[0] == b[0] and a[1] < b[2] and b[1] < a[2]
                    for a in ld.writes
                    for b in upto.reads
                )
            return space is None or ld.writes[0][0] == space

        need = [needed(ld) for ld in pending]
        ops.extend(ld for ld, n in zip(pending, need, strict=True) if n)
        pending[:] = [ld for ld, n in zip(pending, need, strict=True) if not n]

    def load_x(i: int) -> int:
        flush(space="X")
        t = tiles[i]
        base = slot_of("X", i, x_res and w_outer, x_sizes, x_half)
        size = t.th * t.tw
        if t.tw == g.w:  # full-width rows: loaded in row pieces so compute starts on the first
            step = max(g.kh, -(-t.th // 8))
            pieces = [(a, min(step, t.th - a)) for a in range(0, t.th, step)]
            if g.in_chunks == 1 or len(pieces) == 1:
                blocks = [(0, a, g.in_chunks, n * t.tw, g.h * g.w) for a, n in pieces]
            else:
                blocks = [
                    (c, a, 1, n * t.tw, n * t.tw) for a, n in pieces for c in range(g.in_chunks)
                ]
        elif g.in_chunks == 1:
            blocks = [(0, 0, t.th, t.tw, g.w)]
        else:
            blocks = [(c, 0, t.th, t.tw, g.w) for c in range(g.in_chunks)]
        claimed = False
        for c, a, ys, xs, st in blocks:
            f = layout.fmap_entry(g.in_chunks, g.h, g.w, t.b, c, t.y0 + a, t.x0)
            sram = base + c * size + a * t.tw
            args = dict(buf=int(Buf.X), sram=sram, y_size=ys, x_size=xs, x_stride=st)
            rd = _block(src, f, ys, xs, st, eb_x)
            wr = tuple(("X", sram + y * size, sram + y * size + xs) for y in range(ys))
            # The first piece is recorded as writing the whole tile: the next load into this
            # region then waits for one token (the last GEMM that read it) instead of one per
            # piece, which would overflow the token counters; GEMMs still start on early pieces.
            if not claimed:
                wr, claimed = (("X", base, base + g.in_chunks * size),), True
            pending.append(Op(Opcode.LOAD, args, (rd,), wr, src, f * eb_x))
        return base

    def load_w(i: int) -> tuple[int, int]:
        grp = groups[i]
        w_keep = w_res and not w_outer
        wb = slot_of("W", i, w_keep, w_sizes, w_half)
        if not w_keep:  # streamed: Q follows W into the same half
            qb = (wb // w_half) * q_half
        elif packed["W"] and nt <= q_half:  # resident in the upper half: so is Q
            qb = q_half + grp[0][0]
        else:  # resident from 0 (or in the lower half)
            qb = grp[0][0]
        at = wb
        for t, c0, cn in grp if not p.max else ():
            # one load per row tile, so its GEMMs start as soon as it lands
            first, n = t * per_tile + (c0 - g.first_chunk(t)) * g.kh * g.kw, cn * g.kh * g.kw
            args = dict(buf=int(Buf.W), sram=at, y_size=1, x_size=n, x_stride=n)
            claim = ("W", at, at + n) if at > wb else ("W", wb, wb + w_sizes[i])  # as for X
            pending.append(Op(Opcode.LOAD, args, (), (claim,), "w", first * eb_w))
            at += n
        tiles_in = sorted({t for t, _, _ in grp})
        nq = len(tiles_in)
        args = dict(buf=int(Buf.Q), sram=qb, y_size=1, x_size=nq, x_stride=nq)
        ops.append(Op(Opcode.LOAD, args, (), (("Q", qb, qb + nq),), "q", tiles_in[0] * eb_q))
        return wb, qb

    def compute(i_x: int, xb: int, i_w: int, wb: int, qb: int) -> None:
        """GEMMs (and stores) of one X tile with one W group, band by band of output rows."""
        t = tiles[i_x]
        sy, sx = g.stride
        tiles_in = sorted({tt for tt, _, _ in groups[i_w]})
        c_stride = t.th * t.tw
        pad_left = t.x0 - (t.ox0 * sx - g.pad[1])
        items, w_off = [], 0
        for tt, c0, cn in groups[i_w]:
            items.append((tt, c0, cn, 0 if p.max else wb + w_off))
            w_off += cn * g.kh * g.kw
        k_min = min(cn for _, _, cn, _ in items) * g.kh * g.kw
        band = max(1, min(out_half // t.cols, -(-MIN_GEMM_MACS // (t.cols * k_min))))
        bands = range(t.oy0, t.oy0 + t.rows, band)
        # Whichever streams in longer goes outer: input bands (each one serves every row tile
        # before the next arrives) or row tiles (each one's weights land while the last runs).
        if g.in_chunks * t.th * t.tw * eb_x >= w_off * eb_w:
            steps = [(oy1, it) for oy1 in bands for it in items]
        else:
            steps = [(oy1, it) for it in items for oy1 in bands]
        for oy1, (tt, c0, cn, wbase) in steps:
            c_first = g.first_chunk(tt)
            first, last = c0 == c_first, c0 + cn == c_first + g.w_chunks
            q_base = qb + tiles_in.index(tt)
            rb = min(band, t.oy0 + t.rows - oy1)
            m = rb * t.cols
            acc = (oy1 - t.oy0) * t.cols if split else 0
            rel = oy1 * sy - g.pad[0] - t.y0
            off, th, pad_top = (rel * t.tw, t.th - rel, 0) if rel >= 0 else (0, t.th, -rel)
            r0, r1 = max(0, rel), min(t.th, rel + (rb - 1) * sy + g.kh)
            ob = next_half("OUT", out_half) if last else 0
            out_at = layout.fmap_entry(nt, g.oh, g.ow, t.b, tt, oy1, t.ox0)
            rbase = 0
            reads = [
                *(
                    ("X", xb + c * c_stride + r0 * t.tw, xb + c * c_stride + r1 * t.tw)
                    for c in range(c0, c0 + cn)
                ),
                ("Q", q_base, q_base + 1),
            ]
            if not p.max:
                reads.append(("W", wbase, wbase + cn * g.kh * g.kw))
            if p.res is not None and last:
                rbase = next_half("R", out_half)
                args = dict(buf=int(Buf.R), sram=rbase, y_size=rb, x_size=t.cols, x_stride=g.ow)
                rd = _block(p.res, out_at, rb, t.cols, g.ow, eb_x)
                wr = (("R", rbase, rbase + m),)
                pending.append(Op(Opcode.LOAD, args, (rd,), wr, p.res, out_at * eb_x))
                reads.append(("R", rbase, rbase + m))
            args = dict(
                reset=int(first),
                final=int(last),
                w_base=wbase,
                x_base=xb + c0 * c_stride + off,
                acc_base=acc,
                o_base=ob,
                q_base=q_base,
                max=int(p.max),
                res=int(p.res is not None and last),
                r_base=rbase,
                oh_count=rb,
                ow_count=t.cols,
                c_count=cn,
                kh=g.kh,
                kw=g.kw,
                stride_y=sy,
                stride_x=sx,
                pad_top=pad_top,
                pad_left=pad_left,
                tile_h=th,
                tile_w=t.tw,
                c_stride=c_stride,
                lo=p.lo,
                hi=p.hi,
            )
            if not first:
                reads.append(("ACC", acc, acc + m))
            writes = [("OUT", ob, ob + m)] if last else [("ACC", acc, acc + m)]
            gemm = Op(Opcode.GEMM, args, tuple(reads), tuple(writes))
            flush(gemm)
            ops.append(gemm)
            if last:
                args = dict(sram=ob, y_size=rb, x_size=t.cols, x_stride=g.ow)
                wr = _block(dst, out_at, rb, t.cols, g.ow, eb_x)
                reads = (("OUT", ob, ob + m),)
                ops.append(Op(Opcode.STORE, args, reads, (wr,), dst, out_at * eb_x))

    if w_outer:
        x_bases: dict[int, int] = {}
        for i_w in range(len(groups)):
            wb, qb = load_w(i_w)
            for i_x in range(len(tiles)):
                if i_x not in x_bases or not x_res:
                    x_bases[i_x] = load_x(i_x)
                compute(i_x, x_bases[i_x], i_w, wb, qb)
    else:
        w_bases: dict[int, tuple[int, int]] = {}
        for i_x in range(len(tiles)):
            xb = load_x(i_x)
            for i_w in range(len(groups)):
                if i_w not in w_bases or not w_res:
                    w_bases[i_w] = load_w(i_w)
                compute(i_x, xb, i_w, *w_bases[i_w])

    flush()
    eb = {int(Buf.X): eb_x, int(Buf.W): eb_w, int(Buf.Q): eb_q, int(Buf.R): eb_x}
    dma = sum(
        o.args["y_size"] * o.args["x_size"] * eb.get(o.args.get("buf", int(Buf.X)))
        for o in ops
        if o.op in (Opcode.LOAD, Opcode.STORE)
    )
    in_bytes = batch * g.in_chunks * g.h * g.w * eb_x
    out_bytes = batch * nt * g.oh * g.ow * eb_x
    res_bytes = out_bytes if p.res is not None else 0
    rec = LayerRecord(
        name=p.name,
        kind=p.kind + ("+res" if p.res is not None else ""),
        in_shape=tuple(int(i) for i in p.in_shape),
        out_shape=tuple(int(i) for i in p.out_shape),
        kernel=(g.kh, g.kw),
        stride=g.stride,
        padding=g.pad,
        in_chunks=g.in_chunks,
        out_tiles=nt,
        out_hw=(g.oh, g.ow),
        order="weights outer" if w_outer else "inputs outer",
        x_tiles=len(tiles),
        w_groups=len(groups),
        lo=int(p.lo),
        hi=int(p.hi),
        insn_offset=0,
        insn_count=0,
        w_offset=0,
        w_size=len(w_blob),
        q_offset=0,
        q_size=len(q_blob),
        in_offset=0,
        in_size=in_bytes,
        out_offset=0,
        out_size=out_bytes,
        macs=batch * p.macs,
        array_macs=batch * g.oh * g.ow * nt * rows * g.w_chunks * cols * g.kh * g.kw,
        dma_bytes=dma,
        min_dma_bytes=len(w_blob) + len(q_blob) + in_bytes + out_bytes + res_bytes,
        src=p.src,
        dst=p.dst,
        res=p.res or "",
    )
    return _Plan(rec, ops, w_blob, q_blob, p.src, p.dst)


def _json_meta(meta: dict) -> dict:
    out = {}
    for key, v in meta.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[str(key)] = v
    return out


def lower(graph: IntGraph, cfg: AccelConfig, batch: int) -> Program:
    """Compile an IntGraph for ``cfg`` at a fixed ``batch`` size into one Program."""
    if not isinstance(cfg, AccelConfig):
        raise TypeError(f"cfg must be an AccelConfig, got {type(cfg).__name__}")
    if not isinstance(batch, int | np.integer) or batch < 1:
        raise CompileError(f"batch must be a positive int, got {batch!r}")
    batch = int(batch)
    a_lo, a_hi = numerics.act_range(cfg.act_bits, signed=True)
    if not (a_lo <= graph.input_lo <= graph.input_hi <= a_hi):
        raise CompileError(
            f"graph input range [{graph.input_lo}, {graph.input_hi}] does not fit the "
            f"{cfg.act_bits}-bit signed activations [{a_lo}, {a_hi}]"
        )
    shape = tuple(int(i) for i in graph.input_shape)
    c, h, w = shape if len(shape) == 3 else (shape[0], 1, 1)
    slots = chunks(c, cfg.cols) * cfg.cols
    in_map = np.full(slots, -1, dtype=np.int64)
    in_map[:c] = np.arange(c)
    maps = {-1: _Map("fm0", (slots, h, w), in_map, _act_max(graph.input_lo, graph.input_hi))}
    passes: list[_Pass] = []
    first = graph.layers[0]
    others = any(
        graph.source(i) == -1 or getattr(n, "res_from", None) == -1
        for i, n in enumerate(graph.layers)
        if i
    )
    spread = None
    if isinstance(first, IntLayer) and first.res_from is None and not others:
        spread = _spread_pass(first, cfg, maps[-1], "fm1")
    if spread is not None:
        maps[-1] = spread[1]
    for i, node in enumerate(graph.layers):
        src, dst = maps[graph.source(i)], f"fm{i + 1}"
        if i == 0 and spread is not None:
            passes.append(spread[0])
        elif isinstance(node, IntLayer):
            res = None if node.res_from is None else maps[node.res_from]
            passes.extend(_layer_passes(node, cfg, src, res, dst))
        else:
            passes.append(_pool_pass(node, cfg, src, dst))
        p = passes[-1]
        oh, ow = _out_hw(p.name, *p.in_shape[1:], p.kernel, p.stride, p.pad)
        keep = p.kind in ("maxpool", "avgpool")
        x_max = p.x_max if keep else _act_max(p.lo, p.hi)
        maps[i] = _Map(dst, (len(p.out_map), oh, ow), p.out_map, x_max)
    halves: dict[str, int] = {}
    plans = [_plan_pass(p, cfg, batch, halves) for p in passes]
    ops = [o for p in plans for o in p.ops]
    slots = maps[len(graph.layers) - 1].slots, maps[-1].slots
    try:  # loads hoisted ahead of the compute they feed; with few tokens that can deadlock
        return _assemble(graph, cfg, batch, plans, add_tokens(hoist_loads(ops)), *slots)
    except _DeadlockError:
        pass
    try:  # every load just before its first reader: what the token counters always allow
        return _assemble(graph, cfg, batch, plans, add_tokens(ops), *slots)
    except _DeadlockError as e:
        raise CompileError(
            f"internal error: the token schedule deadlocks after {e.args[0]} of {e.args[1]} "
            "instructions; please report this with the model"
        ) from None


def _assemble(
    graph: IntGraph,
    cfg: AccelConfig,
    batch: int,
    plans: list[_Plan],
    ops: list[Op],
    out_slots: np.ndarray,
    in_slots: np.ndarray,
) -> Program:
    ib = cfg.insn_bits // 8
    pos = align(len(ops) * ib)
    w_start = pos
    for p in plans:
        p.rec.w_offset, pos = pos, align(pos + p.rec.w_size)
    q_start = pos
    for p in plans:
        p.rec.q_offset, pos = pos, align(pos + p.rec.q_size)
    region = {"fm0": pos}
    pos = align(pos + plans[0].rec.in_size)
    for p in plans:
        region[p.dst], pos = pos, align(pos + p.rec.out_size)
    for p in plans:
        p.rec.in_offset, p.rec.out_offset = region[p.src], region[p.dst]
    window_size = pos
    if window_size >= 1 << 32:
        raise CompileError(
            f"the program needs a {window_size}-byte DDR window, beyond the 32-bit address "
            "space; compile for a smaller batch"
        )
    words, insns = [], []
    owner = {id(o): i for i, p in enumerate(plans) for o in p.ops}
    counts = [0] * len(plans)
    first = [None] * len(plans)
    runs: list[list[int]] = []
    cur = 0
    for n, o in enumerate(ops):
        cur = owner.get(id(o), cur)  # a SYNC belongs to the instruction before it
        counts[cur] += 1
        if first[cur] is None:
            first[cur] = n
        if runs and runs[-1][0] == cur:
            runs[-1][1] += 1
        else:
            runs.append([cur, 1])
        args = {**o.args, **o.flags}
        if o.region is not None:
            base = {"w": plans[cur].rec.w_offset, "q": plans[cur].rec.q_offset}.get(o.region)
            base = region[o.region] if base is None else base
            args["dram"] = (base + o.offset) // (cfg.axi_data_bits // 8)
        word = isa.encode(cfg, o.op, **args)
        words.append(word)
        insns.append(isa.decode(cfg, word))
    for p, f, c in zip(plans, first, counts, strict=True):
        p.rec.insn_offset, p.rec.insn_count = f * ib, c
    sched = isa.schedule(cfg, insns)
    if sched.deadlock:
        raise _DeadlockError(sched.dispatched, len(insns))
    insn_img = isa.to_bytes(cfg, words)
    w_img = bytearray(q_start - w_start)
    q_img = bytearray(plans[-1].rec.q_offset + plans[-1].rec.q_size - q_start)
    for p in plans:
        r = p.rec
        w_img[r.w_offset - w_start : r.w_offset - w_start + r.w_size] = p.w_blob
        q_img[r.q_offset - q_start : r.q_offset - q_start + r.q_size] = p.q_blob
    return Program(
        config=cfg,
        batch=batch,
        layers=[p.rec for p in plans],
        segments={
            "insn": Segment(0, insn_img),
            "w": Segment(w_start, bytes(w_img)),
            "q": Segment(q_start, bytes(q_img)),
        },
        window_size=window_size,
        insn_count=len(words),
        input_shape=tuple(int(i) for i in graph.input_shape),
        input_scale=float(graph.input_scale),
        input_lo=int(graph.input_lo),
        input_hi=int(graph.input_hi),
        output_shape=tuple(int(i) for i in graph.shapes()[-1]),
        output_scale=float(graph.output_scale),
        output_slots=[int(s) for s in out_slots],
        input_slots=[int(s) for s in in_slots],
        insn_owner=[v for run in runs for v in run],
        meta=_json_meta(graph.meta),
    )


def compile_model(qmodel: object, example_input: object, config: AccelConfig | str) -> Program:
    """Export a quantized model to an IntGraph and lower it for ``config`` (or a preset name).

    The batch size is ``example_input.shape[0]``.
    """
    from .export import export

    cfg = config if isinstance(config, AccelConfig) else AccelConfig.for_board(config)
    graph = export(qmodel)
    shape = tuple(int(i) for i in example_input.shape)  # type: ignore[attr-defined]
    if shape[1:] != tuple(graph.input_shape):
        raise CompileError(
            f"example_input has per-sample shape {shape[1:]} but the model takes "
            f"{tuple(graph.input_shape)}; pass an input of shape "
            f"({', '.join(['batch', *map(str, graph.input_shape)])})"
        )
    return lower(graph, cfg, batch=shape[0])
