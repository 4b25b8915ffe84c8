"""Processing elements: one PE row computes a ``cols``-wide dot product with one weight format.

PoT rows are a shift and a negate per column, SP2 rows two shifts and an add: LUTs only. Fixed
rows use a real multiply, which Yosys maps to DSP48E1 slices. A pipelined row registers the
products (the DSP48's M register for fixed rows) and the adder tree part way, so that the tree's
last levels and the accumulator's add that follows them fit in one cycle.
"""

from __future__ import annotations

import operator
from functools import reduce

from amaranth import Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.numerics import Scheme, WeightFormat


def product_bits(fmt: WeightFormat, act_bits: int) -> int:
    """Signed width of one weight x activation product."""
    return act_bits + fmt.max_level.bit_length() + 1


def dot_bits(fmt: WeightFormat, act_bits: int, cols: int) -> int:
    """Signed width of a row's dot product over ``cols`` columns."""
    return product_bits(fmt, act_bits) + max(1, (cols - 1).bit_length())


def tree_levels(n: int) -> int:
    """Levels of a balanced adder tree over ``n`` values."""
    return max(0, (n - 1).bit_length())


def tree_sum(values: list, levels: int | None = None) -> list:
    """Add ``values`` pairwise for ``levels`` levels (all the way down to one value by default)."""
    done = 0
    while len(values) > 1 and (levels is None or done < levels):
        values = [
            values[i] + values[i + 1] if i + 1 < len(values) else values[i]
            for i in range(0, len(values), 2)
        ]
        done += 1
    return values


def _pow2_times(x: Value, e: Value) -> Value:
    """``x * 2**(e - 1)``, or 0 if ``e`` is 0: the OR of one masked shift per value of ``e``, the
    and-or a case statement synthesizes to, written without one because Verilator turns a case
    into data-dependent branches (slow on random weights)."""
    return reduce(operator.or_, (Mux(e == j, x << (j - 1), 0) for j in range(1, 1 << len(e))))


class DotRow(wiring.Component):
    """``dot = sum_c level(w[c]) * x[c]`` for one PE row of format ``fmt``.

    Combinational unless ``pipelined``; then ``dot`` follows ``w``/``x`` by ``latency`` cycles.
    """

    def __init__(
        self, fmt: WeightFormat, cols: int, act_bits: int, pipelined: bool = False
    ) -> None:
        if cols < 1 or act_bits < 2:
            raise ValueError(f"DotRow needs cols >= 1 and act_bits >= 2, got {cols}, {act_bits}")
        self.fmt, self.cols, self.act_bits, self.pipelined = fmt, cols, act_bits, pipelined
        levels = tree_levels(cols)
        self.split = min(levels, (levels + 2) // 2)
        """Adder-tree levels before the middle register (the rest follow it)."""
        super().__init__(
            {
                "w": In(cols * fmt.bits),
                "x": In(cols * act_bits),
                "dot": Out(signed(dot_bits(fmt, act_bits, cols))),
            }
        )

    @property
    def latency(self) -> int:
        """Cycles from ``w``/``x`` to ``dot``."""
        return 2 if self.pipelined else 0

    def _product(self, m: Module, code, x) -> Signal:
        pb = product_bits(self.fmt, self.act_bits)
        prod = Signal(signed(pb))
        if self.fmt.scheme is Scheme.FIXED:
            m.d.comb += prod.eq(x * code.as_signed())
            return prod
        mag = Signal(signed(pb))
        if self.fmt.scheme is Scheme.POT:
            m.d.comb += mag.eq(_pow2_times(x, code[0:3]))
        else:
            a, b = code[1:3], code[0]
            m.d.comb += mag.eq(_pow2_times(x, a) + Mux(b, x << 2, 0))
        m.d.comb += prod.eq(Mux(code[3], -mag, mag))
        return prod

    def _stage(self, m: Module, values: list, name: str) -> list:
        """``values`` registered when pipelined (as they are otherwise)."""
        if not self.pipelined:
            return values
        regs = []
        for i, v in enumerate(values):
            r = Signal(signed(len(v)), name=f"{name}{i}")
            m.d.sync += r.eq(v)
            regs.append(r)
        return regs

    def elaborate(self, platform) -> Module:
        m = Module()
        bits, ab = self.fmt.bits, self.act_bits
        prods = [
            self._product(
                m, self.w[c * bits : (c + 1) * bits], self.x[c * ab : (c + 1) * ab].as_signed()
            )
            for c in range(self.cols)
        ]
        prods = self._stage(m, prods, "prod")
        partial = self._stage(m, tree_sum(prods, self.split), "part")
        m.d.comb += self.dot.eq(tree_sum(partial)[0])
        return m
