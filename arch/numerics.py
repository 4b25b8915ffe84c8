"""Integer numerics of rmsmp, written once.

Every other layer (hardware generator, golden model, compiler, fake-quant torch modules) takes its
level sets, encodings, MAC and requantisation from here, so they can never disagree on a bit.

Weight formats (integer levels; the per-row float scale lives outside):

* ``fixed4`` / ``fixed8``: symmetric two's complement, levels -(2^(k-1)-1) .. 2^(k-1)-1.
  The code 2^(k-1) (e.g. 0b1000 = -8) is never produced by ``encode``; ``decode`` gives its
  two's-complement value, which is what the multiplier computes.
* ``pot4``: code = sign<<3 | e. e = 0 is zero; otherwise the magnitude is 2^(e-1), so the levels
  are 0, ±1, ±2, ±4, ..., ±64. A multiply is one shift (and a negate).
* ``sp2-4`` (sum of two powers of two, MSQ): code = sign<<3 | a<<1 | b, magnitude
  t1(a) + t2(b) with t1 = 0 if a = 0 else 2^(a-1) (0, 1, 2, 4) and t2 = 4*b (0, 4), so the levels
  are 0, ±1, ±2, ±4, ±5, ±6, ±8. A multiply is two shifts and one add.

PoT and SP2 are defined at 4 bits only: an 8-bit power-of-two level set spans 2^127 and is not a
useful format; RMSMP's 8-bit rows are Fixed-8.

Requantisation: ``v = acc * 2^BIAS_FRAC_BITS + bias`` (exact; the bias carries fractional bits
so that folding BatchNorm does not round it onto the coarse accumulator grid), ``p = v * mult``
(exact), ``r = round_half_up(p / 2^shift)``,
``out = clamp(r, lo, hi)``. The accumulator wraps at ``acc_bits`` like the hardware register does;
the compiler proves it never does for a real program.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

MULT_BITS = 32
"""Width of the signed requant multiplier field; ``quantize_multiplier`` keeps it positive."""
SHIFT_BITS = 6
"""Width of the requant shift field."""
MAX_SHIFT = 62
"""Largest rounding shift, so that ``p + 2^(shift-1)`` never overflows the 65-bit product path."""
BIAS_BITS = 48
"""Width of the signed per-row bias, added to the accumulator before the multiplier."""
BIAS_FRAC_BITS = 16
"""Fractional bits of the bias: the accumulator is shifted left by this before the bias is added."""


class Scheme(enum.Enum):
    """How a weight code maps to a level, and so which PE hardware multiplies by it."""

    FIXED = "fixed"
    POT = "pot"
    SP2 = "sp2"


@dataclass(frozen=True)
class WeightFormat:
    """A (scheme, bits) pair: the level set of one weight row."""

    scheme: Scheme
    bits: int

    def __post_init__(self) -> None:
        if self.scheme is Scheme.FIXED and self.bits not in (4, 8):
            raise ValueError(f"fixed-point weights must be 4 or 8 bits, got {self.bits}")
        if self.scheme is not Scheme.FIXED and self.bits != 4:
            raise ValueError(
                f"{self.scheme.value} weights are defined at 4 bits only, got {self.bits}; "
                "use fixed8 for 8-bit rows"
            )

    @property
    def name(self) -> str:
        """Canonical name: fixed4, fixed8, pot4, sp2-4."""
        if self.scheme is Scheme.SP2:
            return f"sp2-{self.bits}"
        return f"{self.scheme.value}{self.bits}"

    @property
    def uses_multiplier(self) -> bool:
        """True for rows that need a real multiplier (DSP); PoT/SP2 rows are shift-add (LUT)."""
        return self.scheme is Scheme.FIXED

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Integer level of each code (any code of ``bits`` bits, as the hardware reads it)."""
        codes = np.asarray(codes)
        if codes.size and (codes.min() < 0 or codes.max() >= (1 << self.bits)):
            raise ValueError(f"{self.name} codes must lie in [0, {1 << self.bits})")
        return _decode_table(self)[codes.astype(np.int64)]

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Code of each integer level; raises if a value is not a level of this format."""
        values = np.asarray(values, dtype=np.int64)
        lv = self.levels()
        codes = _code_of_level(self)[np.clip(values - lv[0], 0, lv[-1] - lv[0])]
        if (codes < 0).any() or (values < lv[0]).any() or (values > lv[-1]).any():
            bad = values[(codes < 0) | (values < lv[0]) | (values > lv[-1])].ravel()[:5]
            raise ValueError(f"values {bad.tolist()} are not {self.name} levels {lv.tolist()}")
        return codes

    def levels(self) -> np.ndarray:
        """Sorted distinct integer levels that ``encode`` accepts."""
        return _levels(self)

    @property
    def max_level(self) -> int:
        """Largest magnitude of a level."""
        return int(self.levels().max())


def _raw_value(fmt: WeightFormat, code: int) -> int:
    if fmt.scheme is Scheme.FIXED:
        return code - (1 << fmt.bits) if code >= (1 << (fmt.bits - 1)) else code
    sign = -1 if code >> 3 else 1
    if fmt.scheme is Scheme.POT:
        e = code & 0b111
        return 0 if e == 0 else sign * (1 << (e - 1))
    a, b = (code >> 1) & 0b11, code & 1
    return sign * ((0 if a == 0 else 1 << (a - 1)) + 4 * b)


@functools.cache
def _decode_table(fmt: WeightFormat) -> np.ndarray:
    return np.array([_raw_value(fmt, c) for c in range(1 << fmt.bits)], dtype=np.int64)


@functools.cache
def _levels(fmt: WeightFormat) -> np.ndarray:
    vals = set(_decode_table(fmt).tolist())
    if fmt.scheme is Scheme.FIXED:
        vals.discard(-(1 << (fmt.bits - 1)))
    return np.array(sorted(vals), dtype=np.int64)


@functools.cache
def _encode_table(fmt: WeightFormat) -> np.ndarray:
    dec = _decode_table(fmt)
    return np.array([int(np.flatnonzero(dec == v)[0]) for v in _levels(fmt)], dtype=np.int64)


@functools.cache
def _code_of_level(fmt: WeightFormat) -> np.ndarray:
    """Code of every integer from the lowest level to the highest, -1 where none is a level:
    ``encode`` looks codes up instead of searching the levels."""
    lv = _levels(fmt)
    out = np.full(int(lv[-1] - lv[0]) + 1, -1, dtype=np.int64)
    out[lv - lv[0]] = _encode_table(fmt)
    return out


FORMATS: dict[str, WeightFormat] = {
    f.name: f
    for f in (
        WeightFormat(Scheme.FIXED, 4),
        WeightFormat(Scheme.FIXED, 8),
        WeightFormat(Scheme.POT, 4),
        WeightFormat(Scheme.SP2, 4),
    )
}


def weight_format(name: str) -> WeightFormat:
    """Look up a format by its canonical name, with a clear error."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown weight format {name!r}; known: {sorted(FORMATS)}") from None


def wrap(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of int64 values to ``bits`` bits (what a hardware register holds)."""
    x = np.asarray(x, dtype=np.int64)
    m = np.int64(1) << np.int64(bits)
    h = np.int64(1) << np.int64(bits - 1)
    return ((x + h) % m) - h


def dot(fmt: WeightFormat, codes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The MAC of one scheme: sum over the last axis of level(code) * x, exact in int64."""
    return np.sum(fmt.decode(codes) * np.asarray(x, dtype=np.int64), axis=-1)


_Int = TypeVar("_Int")
"""An integer array of any library (numpy, torch) or a Python int."""

_INT64_SAFE = 1 << 62
"""Products below this magnitude, plus a rounding term below 2^61, cannot overflow int64."""


def rounding_shift(p: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Arithmetic right shift by ``shift`` that rounds half up: floor((p + 2^(s-1)) / 2^s).

    ``p`` is int64 when every |p| < 2^62 (the fast path), else an object array of Python ints.
    """
    p = np.asarray(p)
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), p.shape)
    if p.dtype != object:
        p = p.astype(np.int64)
        half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
        return np.right_shift(p + half, shift)
    out = np.empty(p.shape, dtype=object)
    for i, (pv, sv) in enumerate(zip(p.ravel(), shift.ravel(), strict=True)):
        sv = int(sv)
        out.flat[i] = (int(pv) + (1 << (sv - 1))) >> sv if sv > 0 else int(pv)
    return out


def _biased(acc: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``acc * 2^BIAS_FRAC_BITS + bias`` in int64 (exact for acc_bits <= 46, what configs allow)."""
    a = np.asarray(acc, dtype=np.int64)
    return np.left_shift(a, BIAS_FRAC_BITS) + np.asarray(bias, dtype=np.int64)


def requant_multiplier(real: float) -> tuple[int, int]:
    """(mult, shift) that scale an accumulator by ``real`` through ``requant``'s 2^F."""
    return quantize_multiplier(real / (1 << BIAS_FRAC_BITS))


def round_sum_int64(terms: list[tuple[_Int, _Int]], shift: _Int) -> _Int | None:
    """Exact ``floor((sum a*b + 2^(s-1)) / 2^s)`` (s = 0: the plain sum) in int64, or None
    where int64 cannot hold it.

    Written with integer operators only (``*``, ``+``, ``&``, ``<<``, ``>>``), so numpy int64
    arrays and torch int64 tensors (the exact fake-quant models) take this one definition.
    Two paths: the products directly when they provably fit; each ``a`` split into 16-bit
    halves when every shift is at least 16 (what requant's 2^16 bias scaling gives).
    """

    def mag(x: _Int) -> int:
        return int(abs(x).max()) if math.prod(x.shape) else 0

    half = ((shift * 0 + 1) << shift) >> 1
    if sum(mag(a) * mag(b) for a, b in terms) < _INT64_SAFE:
        return (sum(a * b for a, b in terms) + half) >> shift
    if int(shift.min()) >= 16 and sum((mag(a) // 65536 + 1) * mag(b) for a, b in terms) < (
        _INT64_SAFE
    ):
        high = sum((a >> 16) * b for a, b in terms)
        low = sum((a & 0xFFFF) * b for a, b in terms) + half
        return (high + (low >> 16)) >> (shift - 16)
    return None


def _round_sum(
    terms: list[tuple[np.ndarray, np.ndarray]], shift: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """``round_sum_int64`` over numpy ``terms``, in Python integers where int64 cannot hold it."""
    arrs = [
        (
            np.broadcast_to(np.asarray(a, np.int64), shape),
            np.broadcast_to(np.asarray(b, np.int64), shape),
        )
        for a, b in terms
    ]
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), shape)
    out = round_sum_int64(arrs, shift)
    if out is not None:
        return out
    p = sum(a.astype(object) * b.astype(object) for a, b in arrs)
    return rounding_shift(p, shift)


def requant(
    acc: np.ndarray,
    bias: np.ndarray,
    mult: np.ndarray,
    shift: np.ndarray,
    lo: int,
    hi: int,
) -> np.ndarray:
    """Requantise accumulators: clamp(round_half_up((acc*2^F + bias) * mult / 2^shift), lo, hi).

    ``bias``, ``mult`` and ``shift`` broadcast against ``acc`` (per output row). The product is
    computed exactly, as the hardware's full-width product is.
    """
    v = _biased(acc, bias)
    return np.clip(_round_sum([(v, mult)], shift, v.shape), lo, hi).astype(np.int64)


def requant_residual(
    acc: np.ndarray,
    bias: np.ndarray,
    mult: np.ndarray,
    shift: np.ndarray,
    res: np.ndarray,
    res_mult: np.ndarray,
    lo: int,
    hi: int,
) -> np.ndarray:
    """Requantise with a residual on another grid.

    ``clamp(round_half_up(((acc*2^F + bias) * mult + res*2^F * res_mult) / 2^shift), lo, hi)``:
    both products share the row's shift, so the add is exact before the one rounding.
    """
    v = _biased(acc, bias)
    shape = np.broadcast_shapes(v.shape, np.shape(res))
    r = np.left_shift(np.asarray(res, dtype=np.int64), BIAS_FRAC_BITS)
    return np.clip(_round_sum([(v, mult), (r, res_mult)], shift, shape), lo, hi).astype(np.int64)


def quantize_multipliers_shared(reals: list[float]) -> tuple[list[int], int]:
    """Dyadic approximations ``mult_i / 2^shift`` of several positive reals with one shift.

    The largest real gets 31 bits of precision; the others as many as the shared shift leaves.
    Like ``requant_multiplier``, the reals are taken through ``requant``'s 2^F.
    """
    reals = [r / (1 << BIAS_FRAC_BITS) for r in reals]
    if not reals or not all(math.isfinite(r) and r > 0 for r in reals):
        raise ValueError(f"requant multipliers must be positive and finite, got {reals}")
    _, shift = quantize_multiplier(max(reals))
    mults = [round(r * (1 << shift)) for r in reals]
    if max(mults) >= 1 << 31:
        shift -= 1
        mults = [round(r * (1 << shift)) for r in reals]
    return mults, shift


def average_round(total: _Int, count: int) -> _Int:
    """Integer mean of ``count`` values from their integer ``total``: round_half_up(total/count).

    ``floor((2*total + count) / (2*count))``, the half-up rounding of ``rounding_shift``, exact
    for integers. Written with ``*``, ``+`` and ``//`` only, so numpy int64 arrays, torch int64
    tensors (the fake-quant pooling) and Python ints all take this one definition.
    """
    if count < 1:
        raise ValueError(f"an average needs at least one value, got count={count}")
    return (2 * total + count) // (2 * count)


IDENTITY_REQUANT = (0, 1 << 30, 30 + BIAS_FRAC_BITS)
"""(bias, mult, shift) with which ``requant`` returns its accumulator unchanged (then clamps):
what a max pool or a copy of a feature map runs with on the accelerator's requant lanes."""


def average_requant(count: int) -> tuple[int, int, int]:
    """(bias, mult, shift) with which ``requant(total, ...)`` equals ``average_round(total,
    count)`` for every ``|total| <= 2^8 * count`` (sums of 8-bit activations).

    ``mult / 2^shift`` is ``requant_multiplier(1 / count)``, within ``eps <= 2^-31 / count`` of
    ``1 / count``; the bias adds ``1 / (4 count)``. ``total / count + 1/2`` is a multiple of
    ``1 / (2 count)``, so moving it up by ``1 / (4 count)`` and by at most ``|total| * eps <=
    2^-23 < 1 / (4 count)`` either way keeps its floor, and lifts an exact tie (half up) clear
    of rounding down. ``tests/test_numerics`` checks every total for the counts pools use.
    """
    if not 1 <= count <= 1 << 20:
        raise ValueError(f"an average needs a count in [1, 2^20], got {count}")
    mult, shift = requant_multiplier(1.0 / count)
    return 1 << (BIAS_FRAC_BITS - 2), mult, shift


def relu(x: np.ndarray) -> np.ndarray:
    """Integer ReLU."""
    return np.maximum(np.asarray(x, dtype=np.int64), 0)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Dyadic approximation real ~= mult / 2^shift with mult in [2^30, 2^31), shift <= MAX_SHIFT.

    Raises for a multiplier that is not positive and finite, or too large to represent.
    """
    if not (math.isfinite(real) and real > 0):
        raise ValueError(f"requant multiplier must be positive and finite, got {real}")
    frac, exp = math.frexp(real)
    mult = round(frac * (1 << 31))
    shift = 31 - exp
    if mult == 1 << 31:
        mult //= 2
        shift -= 1
    if shift < 0:
        raise ValueError(
            f"requant multiplier {real:g} is >= 2^31; the output scale is far too small"
        )
    if shift > MAX_SHIFT:
        mult = round(real * (1 << MAX_SHIFT))
        shift = MAX_SHIFT
    return mult, shift


def quantize_activation(x: np.ndarray, scale: float, lo: int, hi: int) -> np.ndarray:
    """Float to integer activation: clamp(round_half_even(x / scale), lo, hi)."""
    if not scale > 0:
        raise ValueError(f"activation scale must be positive, got {scale}")
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) / scale), lo, hi).astype(np.int64)


def act_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of an activation of ``bits`` bits."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1
