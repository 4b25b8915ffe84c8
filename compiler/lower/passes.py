"""What planning hands on: feature maps in DDR and the on-chip passes between them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Pass:
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
class FMap:
    """A feature map in DDR: its region, (slots, H, W), slot -> logical channel, value bound."""

    region: str
    shape: tuple[int, int, int]
    slots: np.ndarray
    x_max: int
