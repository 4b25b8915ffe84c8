"""Requantisation lane: ``clamp(round_half_up(p / 2^shift), lo, hi)`` with
``p = (acc * 2^F + bias) * mult + res * 2^F * res_mult``.

The exact hardware form of ``arch.numerics.requant_residual`` (``arch.numerics.requant`` when
``res`` is 0: the residual term is then exactly 0), pipelined for the clock:

1. ``v = acc * 2^BIAS_FRAC_BITS + bias`` and ``mult``, registered (the DSP48s' A/B input
   registers); the partial products of ``res`` and ``res_mult``, registered (M registers: those
   two inputs go straight into their multipliers, so the caller drives them from registers);
2. partial products of ``v`` and ``mult``, registered (M registers); the residual product, the
   exact sum of its pieces, registered;
3. the partial products summed in pairs that share a chunk of ``v`` (two 2-input adders, each
   as wide as one row of the product), registered; the residual product delayed;
4. ``p``, the shifted sum of those two and of the residual product (exact, full width), and the
   clamp thresholds, registered;
5. the rounded, clamped output, registered.

Partial products split their operands into chunks that each fit one DSP48E1 multiplier (signed
25 x 18). Summing the four partial products and the residual in one cycle took 7.0 ns on a -1
part (82-bit carry chains behind the DSP48's clock-to-out); in two cycles, each stage's chain
starts from a register and has at most three inputs.

With ``r = round_half_up(p / 2^s) = floor((2p + 2^s) / 2^(s+1))`` (every ``s >= 0``):
``r > hi`` exactly when ``2p >= (2*hi + 1) * 2^s`` and ``r < lo`` exactly when
``2p < (2*lo - 1) * 2^s``. Stage 4 compares ``2p`` with those thresholds while it forms the low
bits of ``r = ((2p >> s) + 1) >> 1``, which are all an unclamped output needs.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.numerics import BIAS_BITS, BIAS_FRAC_BITS, MULT_BITS, SHIFT_BITS
from ..arch.timing import REQUANT_LATENCY

DSP_A_BITS = 25
"""Signed width of the DSP48E1 multiplier's A operand."""
DSP_B_BITS = 18
"""Signed width of its B operand."""


def _shifted_sum(parts: list[tuple[Value, int]]) -> Value:
    """The sum of ``value << offset`` over (value, offset) ``parts``."""
    total = parts[0][0] << parts[0][1]
    for v, off in parts[1:]:
        total = total + (v << off)
    return total


def _chunks(value, width: int, chunk: int) -> list[tuple[object, int]]:
    """Split a signed ``width``-bit value into unsigned ``chunk - 1``-bit pieces from the bottom
    and a signed top piece of at most ``chunk`` bits; (piece, bit offset) pairs."""
    out, off = [], 0
    while width - off > chunk:
        out.append((value[off : off + chunk - 1], off))
        off += chunk - 1
    out.append((value[off:width].as_signed(), off))
    return out


class RequantLane(wiring.Component):
    """One output per cycle, ``LATENCY`` cycles after its inputs (``res``: the residual, an
    activation; ``res_mult``: its multiplier)."""

    LATENCY = REQUANT_LATENCY
    """Its four register stages below; the cycle model reads the same constant."""

    def __init__(self, acc_bits: int, act_bits: int) -> None:
        if acc_bits < 2 or act_bits < 2:
            raise ValueError("RequantLane needs acc_bits and act_bits >= 2")
        self.acc_bits, self.act_bits = acc_bits, act_bits
        super().__init__(
            {
                "acc": In(signed(acc_bits)),
                "bias": In(signed(BIAS_BITS)),
                "mult": In(signed(MULT_BITS)),
                "shift": In(unsigned(SHIFT_BITS)),
                "res": In(signed(act_bits)),
                "res_mult": In(signed(MULT_BITS)),
                "lo": In(signed(act_bits)),
                "hi": In(signed(act_bits)),
                "out": Out(signed(act_bits)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        vbits = max(self.acc_bits + BIAS_FRAC_BITS, BIAS_BITS) + 1
        # |v * mult| <= 2^(pbits - 2), and |res * 2^F * res_mult| < 2^(pbits - 2) as
        # act_bits + BIAS_FRAC_BITS < vbits: their sum p fits pbits signed bits.
        pbits = vbits + MULT_BITS
        ab = self.act_bits

        def delay(sig, stages: int) -> Signal:
            """``sig`` ``stages`` cycles ago."""
            for i in range(stages):
                d = Signal.like(sig, name=f"{sig.name}_d{i + 1}")
                m.d.sync += d.eq(sig)
                sig = d
            return sig

        def products(x: Value, y: Value, name: str) -> dict[int, list[tuple[Signal, int]]]:
            """Registered partial products of ``x`` and ``y``, one DSP48 each: per chunk offset
            of ``x``, the products with its chunk of ``x`` and their offsets from it."""
            rows: dict[int, list[tuple[Signal, int]]] = {}
            for a, aoff in _chunks(x, len(x), DSP_A_BITS):
                for b, boff in _chunks(y, len(y), DSP_B_BITS):
                    pp = Signal(signed(len(a) + len(b) + 1), name=f"{name}_{aoff}_{boff}")
                    m.d.sync += pp.eq(a * b)
                    rows.setdefault(aoff, []).append((pp, boff))
            return rows

        # 1: v and the multiplier operand, registered; the residual's partial products.
        v = Signal(signed(vbits))
        mult = Signal.like(self.mult)
        m.d.sync += [v.eq((self.acc << BIAS_FRAC_BITS) + self.bias), mult.eq(self.mult)]
        res_parts = products(self.res, self.res_mult, "rp")

        # 2: partial products; the residual's product.
        parts = products(v, mult, "pp")
        res_prod = Signal(signed(ab + MULT_BITS))
        m.d.sync += res_prod.eq(
            _shifted_sum([(pp, aoff + boff) for aoff, r in res_parts.items() for pp, boff in r])
        )

        # 3: the partial products of each chunk of v, summed (one row of the product each).
        row_sums = []
        for aoff, row in parts.items():
            total = _shifted_sum(row)
            s3 = Signal(signed(len(total)), name=f"row_{aoff}")
            m.d.sync += s3.eq(total)
            row_sums.append((s3, aoff))
        res3 = delay(res_prod, 1)

        # 4: the exact sum and the clamp thresholds.
        shift, lo, hi = delay(self.shift, 3), delay(self.lo, 3), delay(self.hi, 3)
        p2 = Signal(signed(pbits + 1))
        total = _shifted_sum([*row_sums, (res3, BIAS_FRAC_BITS)])
        tbits = ab + 2 + (1 << SHIFT_BITS)
        above, below = Signal(signed(tbits)), Signal(signed(tbits))
        m.d.sync += [
            p2.eq(total << 1),
            above.eq((hi * 2 + 1) << shift),
            below.eq((lo * 2 - 1) << shift),
        ]

        # 5: clamp, or the rounded low bits.
        shift3, lo3, hi3 = delay(shift, 1), delay(lo, 1), delay(hi, 1)
        window = Signal(ab + 1)
        m.d.comb += window.eq(p2 >> shift3)
        r = (window + 1)[1 : ab + 1].as_signed()
        m.d.sync += self.out.eq(Mux(p2 >= above, hi3, Mux(p2 < below, lo3, r)))
        return m
