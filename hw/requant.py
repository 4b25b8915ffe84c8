"""Requantisation lane: ``clamp(round_half_up((acc * 2^F + bias) * mult / 2^shift), lo, hi)``.

The exact hardware form of ``arch.numerics.requant``, pipelined for the clock:

1. ``v = acc * 2^BIAS_FRAC_BITS + bias`` (the DSP48s' A/B input registers hold its chunks);
2. partial products of ``v`` and ``mult``, split into chunks that each fit one DSP48E1
   multiplier (signed 25 x 18), registered (the DSP48's M register);
3. ``p``, their shifted sum (exact, full width);
4. the rounding shift and the clamp: ``round_half_up(p / 2^s) = ((2p >> s) + 1) >> 1`` for every
   ``s >= 0`` (for ``s >= 1``, ``2p >> s = floor(p / 2^(s-1))``), and only the low bits of
   ``2p >> s`` are needed once it is known to fit in ``act_bits + 2`` bits (otherwise its sign
   says which bound it clamps to).
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
        tbits = self.act_bits + 2

        def carry(sig, stages: int) -> list[Signal]:
            """``sig`` delayed by 1..stages cycles."""
            out = []
            for i in range(stages):
                d = Signal.like(sig, name=f"{sig.name}_d{i + 1}")
                m.d.sync += d.eq(out[-1] if out else sig)
                out.append(d)
            return out

        shift = carry(self.shift, 3)
        lo = carry(self.lo, 3)
        hi = carry(self.hi, 3)

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

        # 3: the exact product.
        p = Signal(signed(pbits))
        total = parts[0][0] << parts[0][1]
        for pp, off in parts[1:]:
            total = total + (pp << off)
        m.d.sync += p.eq(total)

        # 4: rounding shift and clamp.
        t = Signal(signed(pbits + 1))
        m.d.comb += t.eq((p << 1) >> shift[2])
        top = t[tbits - 1 :]
        fits = top.all() | ~top.any()
        r = Signal(signed(tbits))
        m.d.comb += r.eq((t[:tbits].as_signed() + 1) >> 1)
        lo3, hi3 = lo[2], hi[2]
        inside = Mux(r < lo3, lo3, Mux(r > hi3, hi3, r))
        m.d.sync += self.out.eq(Mux(fits, inside, Mux(t[-1], lo3, hi3)))
        return m
