"""Where rows and channels go: each output row's hardware slot (its format's PE row group, in
successive row tiles), the weights moved to the slot order of the map a layer reads, and the
first layer's input channels spread over several lanes when its rows' format is scarce."""

from __future__ import annotations

import functools

import numpy as np

from ...arch import AccelConfig, numerics
from ...host.tensors import chunks
from ..ir import IntLayer
from .checks import CompileError, check_acc
from .passes import FMap

Placement = tuple[int, np.ndarray, np.ndarray]
"""Row tiles, the slot of every output row, and the weights in slot order."""


def place_rows(layer: IntLayer, cfg: AccelConfig) -> tuple[int, np.ndarray]:
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


def weight4(layer: IntLayer, h: int, w: int) -> np.ndarray:
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


def slot_weight(w4: np.ndarray, in_map: np.ndarray, slots: int) -> np.ndarray:
    """[N, slots, kh, kw]: input channels moved to the slot order of the map the layer reads."""
    n = w4.shape[0]
    out = np.zeros((n, slots, *w4.shape[2:]), dtype=np.int64)
    valid = np.flatnonzero(in_map >= 0)
    out[:, valid] = w4[:, in_map[valid]]
    return out


def slot_map(slot: np.ndarray, nt: int, rows: int) -> np.ndarray:
    """Logical channel of every output slot, -1 for padding."""
    m = np.full(nt * rows, -1, dtype=np.int64)
    m[slot] = np.arange(len(slot))
    return m


@functools.cache
def digit_table(fmt: str, terms: int) -> dict[int, tuple[int, ...]]:
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


def spread_placement(layer: IntLayer, cfg: AccelConfig, src: FMap) -> tuple[Placement, FMap] | None:
    """The first layer with each input channel spread over ``d`` lanes (the host lays the input
    out that way) and each weight written as ``d`` levels of its PE row's format, so that rows
    of a scarce format (an 8-bit first layer on a preset with few Fixed-8 rows) can run on the
    other rows: its placement and the spread input map. None unless that needs fewer row tiles
    than ``place_rows``."""
    c_in, h, w = layer.weight.shape[1], *src.shape[1:]
    d = cfg.cols // c_in
    if layer.kind != "conv" or d < 2:
        return None
    plain, _ = place_rows(layer, cfg)
    wt = layer.weight.astype(np.int64)
    fmts = [g.fmt for g in cfg.groups]
    feasible = [
        [f for f in fmts if set(np.unique(wt[n]).tolist()) <= digit_table(f, d).keys()]
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
        table = digit_table(f, d)
        for i, n in enumerate(rows):
            slot[n] = (i // size) * cfg.rows + first + i % size
            digits = np.array([table[int(v)] for v in wt[n].ravel()]).reshape(*wt[n].shape, d)
            levels[slot[n], : c_in * d] = digits.transpose(0, 3, 1, 2).reshape(
                c_in * d, *wt.shape[2:]
            )
    in_map = np.full(cfg.cols, -1, dtype=np.int64)
    in_map[: c_in * d] = np.repeat(np.arange(c_in), d)
    spread = FMap(src.region, (cfg.cols, h, w), in_map, src.x_max)
    bound = int(np.abs(levels).reshape(len(levels), -1).sum(axis=1).max()) * src.x_max
    check_acc(layer.name, cfg, bound, f"sum|levels| * {src.x_max}")
    return (nt, slot, levels), spread
