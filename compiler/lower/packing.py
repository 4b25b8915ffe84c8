"""A pass's static bytes: its weights as W entries (row tile by row tile, each PE row's levels
in its format's code) and its requant fields as Q entries."""

from __future__ import annotations

import numpy as np

from ...arch import AccelConfig, layout, numerics
from ...arch.layout import Entry
from .passes import Pass
from .tiling import Geom


def pass_blobs(p: Pass, g: Geom, cfg: AccelConfig) -> tuple[bytes, bytes]:
    """The W blob (empty for a max pass) and the Q blob of pass ``p``."""
    w_blob = b"" if p.max else layout.pack(cfg, Entry.W, w_codes(p, g, cfg))
    q_blob = layout.pack(cfg, Entry.Q, layout.q_values(*p.q.reshape(4, g.n_tiles, cfg.rows)))
    return w_blob, q_blob


def w_codes(p: Pass, g: Geom, cfg: AccelConfig) -> np.ndarray:
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
