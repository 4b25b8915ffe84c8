"""Bit layouts of buffer entries, in on-chip buffers and in DDR: one definition for all layers.

An entry is a little-endian bit string, fields packed LSB-first; in DDR it occupies
``entry_beats`` consecutive AXI beats (the last one zero-padded).

* W (weights): for PE row r, column c, a code of the row's format width at
  ``w_row_offset[r] + c * bits[r]``.
* X (inputs) and OUT (outputs): ``act_bits`` two's-complement activations, column (X) or
  PE row (OUT) i at ``i*act_bits``.
* Q (requant params): for PE row r, at ``r*Q_ROW_BITS``: bias (BIAS_BITS, signed), mult
  (MULT_BITS, signed), shift (Q_SHIFT_SLOT bits, of which SHIFT_BITS are used), res_mult
  (MULT_BITS, signed; the residual's multiplier).
* R (residuals) entries are X entries.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .numerics import BIAS_BITS, MULT_BITS, weight_format

if TYPE_CHECKING:
    from .config import AccelConfig

PAIRED_FORMAT = "fixed4"
"""The format whose rows the array packs two to a DSP48E1 (``pe_units``)."""
LUT_MUL_FORMAT = PAIRED_FORMAT
"""The format whose rows may also multiply in LUTs (``RowGroup.lut_rows``)."""
Q_SHIFT_SLOT = 8
Q_FIELDS = (BIAS_BITS, MULT_BITS, Q_SHIFT_SLOT, MULT_BITS)
"""Widths of a Q row's fields in packing order: bias, mult, shift, res_mult."""
Q_ROW_BITS = sum(Q_FIELDS)


class Buf(enum.IntEnum):
    """Buffers a LOAD can fill (the ISA's ``buf`` field holds one)."""

    W = 0
    X = 1
    Q = 2
    R = 3


class Entry(enum.Enum):
    """The kinds of buffer entry that cross the AXI bus."""

    W = "w"
    X = "x"
    Q = "q"
    OUT = "out"


BUF_ENTRY: dict[Buf, Entry] = {Buf.W: Entry.W, Buf.X: Entry.X, Buf.Q: Entry.Q, Buf.R: Entry.X}
"""The entry kind each LOAD target buffer holds."""


def row_formats(cfg: AccelConfig) -> list[str]:
    """Format name of each PE row, in array order."""
    return [g.fmt for g in cfg.groups for _ in range(g.rows)]


class PeUnit(NamedTuple):
    """One PE unit of the array: ``rows`` rows of format ``fmt``; ``lut_mul`` for a Fixed row
    multiplied in LUTs rather than on a DSP48E1."""

    fmt: str
    rows: int
    lut_mul: bool = False


def pe_units(cfg: AccelConfig) -> list[PeUnit]:
    """The PE units of the array, in row order: a group's DSP rows first, consecutive Fixed-4 rows
    two to a unit, sharing one DSP per column (their codes are adjacent in a W entry), the last
    one alone if their count is odd; then the group's ``lut_rows``, one unit each. Every other row
    is a unit of its own."""
    units = []
    for g in cfg.groups:
        dsp = g.rows - g.lut_rows
        pairs = dsp // 2 if g.fmt == PAIRED_FORMAT else 0
        units += [PeUnit(g.fmt, 2)] * pairs + [PeUnit(g.fmt, 1)] * (dsp - 2 * pairs)
        units += [PeUnit(g.fmt, 1, lut_mul=True)] * g.lut_rows
    return units


def row_bits(cfg: AccelConfig) -> np.ndarray:
    """Weight code width of each PE row."""
    return np.array([weight_format(f).bits for f in row_formats(cfg)], dtype=np.int64)


def w_row_offsets(cfg: AccelConfig) -> np.ndarray:
    """Bit offset of each PE row's first code inside a W entry."""
    b = row_bits(cfg) * cfg.cols
    return np.concatenate([[0], np.cumsum(b)[:-1]]).astype(np.int64)


def entry_bits(cfg: AccelConfig, kind: Entry) -> int:
    """Meaningful bits of one entry."""
    if kind is Entry.W:
        return int(row_bits(cfg).sum()) * cfg.cols
    if kind is Entry.X:
        return cfg.cols * cfg.act_bits
    if kind is Entry.OUT:
        return cfg.rows * cfg.act_bits
    return cfg.rows * Q_ROW_BITS


def entry_beats(cfg: AccelConfig, kind: Entry) -> int:
    """AXI beats one entry occupies in DDR."""
    return -(-entry_bits(cfg, kind) // cfg.axi_data_bits)


def entry_bytes(cfg: AccelConfig, kind: Entry) -> int:
    """Bytes one entry occupies in DDR."""
    return entry_beats(cfg, kind) * cfg.axi_data_bits // 8


def field_widths(cfg: AccelConfig, kind: Entry) -> np.ndarray:
    """Width of every field of an entry, in packing order."""
    if kind is Entry.W:
        return np.repeat(row_bits(cfg), cfg.cols)
    if kind is Entry.X:
        return np.full(cfg.cols, cfg.act_bits, dtype=np.int64)
    if kind is Entry.OUT:
        return np.full(cfg.rows, cfg.act_bits, dtype=np.int64)
    return np.tile(np.array(Q_FIELDS, dtype=np.int64), cfg.rows)


def q_values(
    bias: np.ndarray | int,
    mult: np.ndarray | int,
    shift: np.ndarray | int,
    res_mult: np.ndarray | int = 0,
) -> np.ndarray:
    """Per-row requant parameters (each broadcast to [..., rows]) as the [..., rows * 4] field
    values of Q entries, in ``Q_FIELDS`` order."""
    parts = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.int64) for v in (bias, mult, shift, res_mult))
    )
    return np.stack(parts, axis=-1).reshape(*parts[0].shape[:-1], -1)


def _runs(widths: np.ndarray) -> list[tuple[int, int, int]] | None:
    """(first field, one past the last, width) of every run of equal-width fields, when each
    run starts on a byte and fills whole bytes with 1-, 2- or 4-bit fields or whole-byte ones
    (every entry kind of every preset): such runs pack with byte-wide numpy operations."""
    bounds = [0, *(np.flatnonzero(np.diff(widths)) + 1).tolist(), len(widths)]
    runs, bit = [], 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        w = int(widths[a]) if b > a else 0
        if bit % 8 or not (w in (1, 2, 4) and (b - a) * w % 8 == 0 or w % 8 == 0 and w <= 64):
            return None
        runs.append((a, b, w))
        bit += (b - a) * w
    return runs


def _bit_places(widths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Byte of each field's first bit, that bit's place in the byte, and how many bytes a field
    may span, for entries ``_runs`` does not cover."""
    if (widths > _MAX_BIT_FIELD).any():
        raise ValueError(f"fields wider than {_MAX_BIT_FIELD} bits must be whole bytes")
    off = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    return off // 8, off % 8, -(-(int(widths.max(initial=0)) + 7) // 8)


_MAX_BIT_FIELD = 56
"""Widest field outside byte-aligned runs (placed at any bit, it still fits an int64)."""


def _extend(v: np.ndarray, widths: np.ndarray, signed: bool) -> np.ndarray:
    """Fields read as unsigned, sign-extended from their widths if ``signed``."""
    if not signed:
        return v
    up = (64 - widths).astype(np.int64)
    return np.right_shift(np.left_shift(v, up), up)


def pack(cfg: AccelConfig, kind: Entry, values: np.ndarray) -> bytes:
    """Pack an [entries, fields] integer array into the DDR image of those entries.

    Values are taken modulo 2^width (two's complement for signed fields); the caller checks ranges.
    Fields are packed run by run of equal widths (``_runs``), or else each shifted to its bit
    place and added into the bytes it spans.
    """
    widths = field_widths(cfg, kind)
    values = np.asarray(values, dtype=np.int64)
    if values.ndim != 2 or values.shape[1] != len(widths):
        raise ValueError(f"{kind.name} entries need shape [n, {len(widths)}], got {values.shape}")
    n, nb = len(values), entry_bytes(cfg, kind)
    runs = _runs(widths)
    if runs is not None:
        out = np.zeros((n, nb), dtype=np.uint8)
        le = np.ascontiguousarray(values, dtype="<i8").view(np.uint8).reshape(n, len(widths), 8)
        at = 0
        for a, b, w in runs:
            if w % 8 == 0:
                part = le[:, a:b, : w // 8].reshape(n, -1)
            else:
                x = (values[:, a:b].astype(np.uint8) & ((1 << w) - 1)).reshape(n, -1, 8 // w)
                part = x[:, :, 0].copy()
                for k in range(1, 8 // w):
                    part |= x[:, :, k] << np.uint8(k * w)
            out[:, at : at + part.shape[1]] = part
            at += part.shape[1]
        return out.tobytes()
    byte, place, span = _bit_places(widths)
    groups = np.flatnonzero(np.diff(byte, prepend=-1))
    acc = np.zeros((n, nb + span), dtype=np.int64)
    v = (values & ((1 << widths) - 1)) << place
    for j in range(span):  # fields sharing a byte hold disjoint bits: their sum is their OR
        acc[:, byte[groups] + j] += np.add.reduceat((v >> (8 * j)) & 0xFF, groups, axis=1)
    return acc[:, :nb].astype(np.uint8).tobytes()


def unpack(cfg: AccelConfig, kind: Entry, blob: bytes, signed: bool = True) -> np.ndarray:
    """Inverse of ``pack``: the [entries, fields] array (fields sign-extended if ``signed``)."""
    nb = entry_bytes(cfg, kind)
    if len(blob) % nb:
        raise ValueError(f"{kind.name} image of {len(blob)} bytes is not a multiple of {nb}")
    raw = np.frombuffer(blob, dtype=np.uint8).reshape(-1, nb)
    widths = field_widths(cfg, kind)
    n = raw.shape[0]
    runs = _runs(widths)
    if runs is not None:
        v = np.zeros((n, len(widths)), dtype=np.int64)
        at = 0
        for a, b, w in runs:
            size = (b - a) * w // 8
            part = raw[:, at : at + size]
            at += size
            if w % 8 == 0:
                le = np.zeros((n, b - a, 8), dtype=np.uint8)
                le[:, :, : w // 8] = part.reshape(n, b - a, w // 8)
                v[:, a:b] = _extend(le.view("<i8")[..., 0], np.full(b - a, w), signed)
                continue
            x = np.stack([part << np.uint8(8 - w - k * w) for k in range(8 // w)], axis=2)
            x = x.view(np.int8) if signed else x  # each field at the top of its byte
            v[:, a:b] = (x >> np.uint8(8 - w)).reshape(n, b - a)
        return v
    byte, place, span = _bit_places(widths)
    raw = np.pad(raw, ((0, 0), (0, span))).astype(np.int64)
    v = np.zeros((n, len(widths)), dtype=np.int64)
    for j in range(span):
        v |= raw[:, byte + j] << (8 * j)
    return _extend((v >> place) & ((1 << widths) - 1), widths, signed)


def fmap_entry(chunks: int, h: int, w: int, b: int, c: int, y: int, x: int) -> int:
    """Entry index of pixel (y, x) of channel chunk ``c`` of image ``b`` in a feature map.

    The DDR layout of every feature map is channel-blocked, [B][chunks][H][W] entries of ``cols``
    channels (an X entry, which is also an OUT entry since cols == rows): a row of one chunk is
    one contiguous burst, and so are whole rows of a full-width tile.
    """
    return ((b * chunks + c) * h + y) * w + x


def to_fmap(cfg: AccelConfig, x: np.ndarray, chunks: int) -> np.ndarray:
    """[B, C, H, W] integers as the [B*chunks*H*W, cols] X entries of ``fmap_entry``'s layout.

    Channels beyond C (up to ``chunks * cols``) are zero.
    """
    x = np.asarray(x, dtype=np.int64)
    b, c, h, w = x.shape
    if c > chunks * cfg.cols:
        raise ValueError(f"{c} channels do not fit {chunks} chunks of {cfg.cols}")
    xp = np.zeros((b, chunks * cfg.cols, h, w), dtype=np.int64)
    xp[:, :c] = x
    return xp.reshape(b, chunks, cfg.cols, h, w).transpose(0, 1, 3, 4, 2).reshape(-1, cfg.cols)


def from_fmap(cfg: AccelConfig, entries: np.ndarray, b: int, chunks: int, h: int, w: int):
    """Inverse of ``to_fmap``: [B, chunks*cols, H, W] (channel slots, padding included)."""
    e = np.asarray(entries).reshape(b, chunks, h, w, cfg.cols)
    return e.transpose(0, 1, 4, 2, 3).reshape(b, chunks * cfg.cols, h, w)
