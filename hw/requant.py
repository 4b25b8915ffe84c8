"""Requantisation lane: ``clamp(round_half_up((acc * 2^F + bias) * mult / 2^shift), lo, hi)``.

The exact hardware form of ``arch.numerics.requant``, pipelined for the clock:

1. ``v = acc * 2^BIAS_FRAC_BITS + bias``, registered (the DSP48s' A/B input registers);
2. partial products of ``v`` and ``mult``, split into chunks that each fit one DSP48E1
   multiplier (signed 25 x 18), registered (the DSP48's M register);
3. ``p``, their shifted sum (exact, full width), and the clamp thresholds, registered;
4. the rounded, clamped output, registered.

With ``r = round_half_up(p / 2^s) = floor((2p + 2^s) / 2^(s+1))`` (every ``s >= 0``):
``r > hi`` exactly when ``2p >= (2*hi + 1) * 2^s`` and ``r < lo`` exactly when
``2p < (2*lo - 1) * 2^s``. Stage 4 compares ``2p`` with those thresholds while it forms the low
bits of ``r = ((2p >> s) + 1) >> 1``, which are all an unclamped output needs.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.numerics import BIAS_BITS, BIAS_FRAC_BITS, MULT_BITS, SHIFT_BITS

DSP_A_BITS = 25
"""Signed width of the DSP48E1 multiplier's A operand."""
DSP_B_BITS = 18
"""Signed width of its B operand."""


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
    """One output per cycle, ``LATENCY`` cycles after its inputs."""

    LATENCY = 4

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
                "lo": In(signed(act_bits)),
                "hi": In(signed(act_bits)),
                "out": Out(signed(act_bits)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        vbits = max(self.acc_bits + BIAS_FRAC_BITS, BIAS_BITS) + 1
        pbits = vbits + MULT_BITS
        ab = self.act_bits

        def delay(sig, stages: int) -> Signal:
            """``sig`` ``stages`` cycles ago."""
            for i in range(stages):
                d = Signal.like(sig, name=f"{sig.name}_d{i + 1}")
                m.d.sync += d.eq(sig)
                sig = d
            return sig

        # 1: v and the multiplier operand, registered.
        v = Signal(signed(vbits))
        mult = Signal.like(self.mult)
        m.d.sync += [v.eq((self.acc << BIAS_FRAC_BITS) + self.bias), mult.eq(self.mult)]

        # 2: partial products, one DSP48 each.
        parts = []
        for a, aoff in _chunks(v, vbits, DSP_A_BITS):
            for b, boff in _chunks(mult, MULT_BITS, DSP_B_BITS):
                pp = Signal(signed(len(a) + len(b) + 1), name=f"pp_{aoff}_{boff}")
                m.d.sync += pp.eq(a * b)
                parts.append((pp, aoff + boff))

        # 3: the exact product and the clamp thresholds.
        shift, lo, hi = delay(self.shift, 2), delay(self.lo, 2), delay(self.hi, 2)
        p2 = Signal(signed(pbits + 1))
        total = parts[0][0] << parts[0][1]
        for pp, off in parts[1:]:
            total = total + (pp << off)
        tbits = ab + 2 + (1 << SHIFT_BITS)
        above, below = Signal(signed(tbits)), Signal(signed(tbits))
        m.d.sync += [
            p2.eq(total << 1),
            above.eq((hi * 2 + 1) << shift),
            below.eq((lo * 2 - 1) << shift),
        ]

        # 4: clamp, or the rounded low bits.
        shift3, lo3, hi3 = delay(shift, 1), delay(lo, 1), delay(hi, 1)
        window = Signal(ab + 1)
        m.d.comb += window.eq(p2 >> shift3)
        r = (window + 1)[1 : ab + 1].as_signed()
        m.d.sync += self.out.eq(Mux(p2 >= above, hi3, Mux(p2 < below, lo3, r)))
        return m
