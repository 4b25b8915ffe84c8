"""Requantisation lane: ``clamp(round_half_up((acc * 2^F + bias) * mult / 2^shift), lo, hi)``.

The exact hardware form of ``arch.numerics.requant``: the accumulator shifted left by
``BIAS_FRAC_BITS`` plus the bias, the full product, a rounding add of 2^(shift-1) and an
arithmetic shift, then saturation (ReLU is ``lo = 0``).
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.numerics import BIAS_BITS, BIAS_FRAC_BITS, MULT_BITS, SHIFT_BITS


class RequantLane(wiring.Component):
    """One output per cycle, combinational."""

    def __init__(self, acc_bits: int, act_bits: int) -> None:
        if acc_bits < 2 or act_bits < 2:
            raise ValueError("RequantLane needs acc_bits and act_bits >= 2")
        self.acc_bits = acc_bits
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
        pbits = vbits + MULT_BITS + 1
        v = Signal(signed(vbits))
        p = Signal(signed(pbits))
        r = Signal(signed(pbits))
        rnd = Mux(self.shift == 0, 0, Const(1, unsigned(pbits)) << (self.shift - 1)[:SHIFT_BITS])
        m.d.comb += [
            v.eq((self.acc << BIAS_FRAC_BITS) + self.bias),
            p.eq(v * self.mult),
            r.eq((p + rnd.as_signed()) >> self.shift),
            self.out.eq(Mux(r < self.lo, self.lo, Mux(r > self.hi, self.hi, r))),
        ]
        return m
