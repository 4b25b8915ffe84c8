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


def _byte_mask(widths: np.ndarray) -> np.ndarray | None:
    """[fields, 8] mask of the low bytes each field keeps, when every width is whole bytes."""
    if (widths % 8).any() or (widths > 64).any():
        return None
    return np.arange(8) < (widths // 8)[:, None]


def _bit_fields(widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every bit of an entry (packing order): its field's index and its place in the field,
    so ``pack`` and ``unpack`` move all fields at once instead of one field at a time."""
    field = np.repeat(np.arange(len(widths)), widths)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    return field, np.arange(int(widths.sum()), dtype=np.int64) - starts[field]


def pack(cfg: AccelConfig, kind: Entry, values: np.ndarray) -> bytes:
    """Pack an [entries, fields] integer array into the DDR image of those entries.

    Values are taken modulo 2^width (two's complement for signed fields); the caller checks ranges.
    Entries of whole-byte fields (X, OUT, Q) are packed byte-wise, the others bit by bit.
    """
    widths = field_widths(cfg, kind)
    values = np.asarray(values, dtype=np.int64)
    if values.ndim != 2 or values.shape[1] != len(widths):
        raise ValueError(f"{kind.name} entries need shape [n, {len(widths)}], got {values.shape}")
    pad = entry_bytes(cfg, kind) * 8 - int(widths.sum())
    mask = _byte_mask(widths)
    if mask is not None:
        le = np.ascontiguousarray(values, dtype="<i8").view(np.uint8)
        raw = le.reshape(len(values), len(widths), 8)[:, mask]
        return np.pad(raw, ((0, 0), (0, pad // 8))).tobytes()
    field, place = _bit_fields(widths)
    bits = ((values[:, field] >> place) & 1).astype(np.uint8)
    bits = np.pad(bits, ((0, 0), (0, pad)))
    return np.packbits(bits, axis=1, bitorder="little").tobytes()


def unpack(cfg: AccelConfig, kind: Entry, blob: bytes, signed: bool = True) -> np.ndarray:
    """Inverse of ``pack``: the [entries, fields] array (fields sign-extended if ``signed``)."""
    nb = entry_bytes(cfg, kind)
    if len(blob) % nb:
        raise ValueError(f"{kind.name} image of {len(blob)} bytes is not a multiple of {nb}")
    raw = np.frombuffer(blob, dtype=np.uint8).reshape(-1, nb)
    widths = field_widths(cfg, kind)
    mask = _byte_mask(widths)
    if mask is not None:
        full = np.zeros((raw.shape[0], len(widths), 8), dtype=np.uint8)
        full[:, mask] = raw[:, : int(widths.sum()) // 8]
        v = full.view("<i8")[..., 0]
        if not signed:
            return v
        up = (64 - widths).astype(np.int64)
        return np.right_shift(np.left_shift(v, up), up)
    total = int(widths.sum())
    bits = np.unpackbits(raw, axis=1, bitorder="little")[:, :total].astype(np.int64)
    if total == 0:
        return np.zeros((raw.shape[0], len(widths)), dtype=np.int64)
    _, place = _bit_fields(widths)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    out = np.add.reduceat(bits << place, starts, axis=1)
    if signed:
        out = np.where(out >= (1 << (widths - 1)), out - (1 << widths), out)
    return out


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
