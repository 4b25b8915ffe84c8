"""Tensor reshaping between the host's NCHW activations and the accelerator's buffer entries.

numpy only. The GEMM view of a layer is ``out[M, N] = A[M, K] @ W[N, K]^T`` with, for a conv,
``M = B*OH*OW`` (index ``b*OH*OW + oh*OW + ow``) and ``K = C*kh*kw`` (index ``c*kh*kw + i*kw + j``,
the order of ``torch_weight.reshape(N, -1)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_out_hw(
    h: int, w: int, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    """Output height and width of a convolution."""
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(
            f"input {h}x{w} with padding {padding} is smaller than the {kh}x{kw} kernel"
        )
    return oh, ow


def im2col(
    x: np.ndarray, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int]
) -> np.ndarray:
    """Patches of ``x`` [B, C, H, W] as rows: [B*OH*OW, C*kh*kw], zero padded, int64."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"im2col needs a [B, C, H, W] array, got shape {x.shape}")
    b, c, h, w = x.shape
    oh, ow = conv_out_hw(h, w, kh, kw, stride, padding)
    ph, pw = padding
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, : (oh - 1) * stride[0] + 1 : stride[0], : (ow - 1) * stride[1] + 1 : stride[1]]
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(b * oh * ow, c * kh * kw)


def chunks(k: int, cols: int) -> int:
    """Number of ``cols``-wide chunks that hold ``k`` values."""
    return -(-k // cols)


def k_tiles(kc: int, kt: int) -> list[tuple[int, int]]:
    """(first chunk, chunk count) of every k-tile of ``kt`` chunks over ``kc`` chunks."""
    return [(k0, min(kt, kc - k0)) for k0 in range(0, kc, kt)]


def x_entries(a: np.ndarray, cols: int, kt: int) -> np.ndarray:
    """GEMM input rows [M, K] as X entries [M*Kc, cols] in DDR order [k_tile][m][kc_local].

    K is zero padded to ``Kc*cols``; every k-tile is then one contiguous run of entries, and so is
    every m-range inside a k-tile.
    """
    a = np.asarray(a, dtype=np.int64)
    m, k = a.shape
    kc = chunks(k, cols)
    a = np.pad(a, ((0, 0), (0, kc * cols - k))).reshape(m, kc, cols)
    parts = [a[:, k0 : k0 + n, :].reshape(m * n, cols) for k0, n in k_tiles(kc, kt)]
    return np.concatenate(parts, axis=0)


def x_entry_index(m_total: int, kt: int, kc: int, tile: int, m0: int) -> int:
    """Entry index, inside a layer's X region, of row ``m0``'s first chunk of k-tile ``tile``."""
    n = min(kt, kc - tile * kt)
    return tile * kt * m_total + m0 * n


def out_from_entries(entries: np.ndarray, n_tiles: int, m: int) -> np.ndarray:
    """OUT entries [n_tiles*M, rows] (DDR order [n_tile][m]) as the GEMM output [M, N_slots]."""
    entries = np.asarray(entries)
    if entries.shape[0] != n_tiles * m:
        raise ValueError(f"expected {n_tiles * m} OUT entries, got {entries.shape[0]}")
    rows = entries.shape[1]
    return entries.reshape(n_tiles, m, rows).transpose(1, 0, 2).reshape(m, n_tiles * rows)


@dataclass(frozen=True)
class InputFold:
    """The host's rewrite of a network input for a first convolution folded into lanes.

    The (C, H, W) input is zero padded by ``pad`` (and at the end as far as needed), then each
    spatial axis is cut into ``phases`` taken every ``step``:
    ``y[b, (c, ph, pw), v, u] = xp[b, c, v*step_h + ph, u*step_w + pw]``, a
    (C*Ph*Pw, *out_hw) map. A stride-s convolution over C channels is then a stride-1 (or
    unchanged-stride) convolution of a smaller kernel over C*Ph*Pw channels, which fills more
    of the array's input lanes (space-to-depth when phases == step, kernel columns in lanes
    when phases == kernel).
    """

    in_shape: tuple[int, int, int]
    pad: tuple[int, int]
    step: tuple[int, int]
    phases: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """(C*Ph*Pw, Hy, Wy): the map the folded convolution reads."""
        c = self.in_shape[0]
        return (c * self.phases[0] * self.phases[1], *self.out_hw)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The folded map [B, C*Ph*Pw, Hy, Wy] of a batch ``x`` [B, C, H, W]."""
        x = np.asarray(x, dtype=np.int64)
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"input fold takes (B, {self.in_shape}), got {x.shape}")
        (ph, pw), (sh, sw), (nh, nw), (hy, wy) = self.pad, self.step, self.phases, self.out_hw
        need_h, need_w = (hy - 1) * sh + nh, (wy - 1) * sw + nw
        _, _, h, w = x.shape
        xp = np.pad(
            x,
            ((0, 0), (0, 0), (ph, max(0, need_h - h - ph)), (pw, max(0, need_w - w - pw))),
        )
        parts = [
            xp[:, :, a : a + (hy - 1) * sh + 1 : sh, b : b + (wy - 1) * sw + 1 : sw]
            for a in range(nh)
            for b in range(nw)
        ]
        y = np.stack(parts, axis=2)
        return y.reshape(x.shape[0], self.out_shape[0], hy, wy)

    def to_dict(self) -> dict:
        """Plain-data form (what a Program's JSON header holds)."""
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> InputFold:
        """Inverse of ``to_dict``."""
        return cls(**{f.name: tuple(int(i) for i in d[f.name]) for f in fields(cls)})
