"""A Fixed-4 PE row multiplied in LUTs: the rows a Fixed-4-only design adds once its DSPs are full.

Each weight is Booth radix-4 recoded into two digits, ``w = d0 + 4 * d1`` with ``d0 = w0 - 2 w1``
and ``d1 = w1 + w2 - 2 w3`` (both in {-2, ..., 2}), so a product is two partial products of
``0``, ``x`` or ``2x`` (the second shifted by two), each a one-LUT-per-bit select. They enter
the row's adder tree as ``DotRow``'s shift leaves do: a negative digit gives the ones'
complement (an XOR folded into the select's LUTs) and owes the ``+1`` as an adder's carry-in,
column 0's first leaf is exact, and the tree is registered as a shift row's is, so the row has
``DotRow``'s latency.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Value

from .pe import FIXED4, DotRow


class LutMulRow(DotRow):
    """``dot = sum_c w[c] * x[c]`` for one Fixed-4 row, in LUTs and carry chains (no DSP48E1)."""

    def __init__(self, cols: int, act_bits: int, pipelined: bool = False) -> None:
        super().__init__(FIXED4, cols, act_bits, pipelined)

    def _signed_magnitudes(self, c: int) -> list[tuple[Value, Value]]:
        """Column ``c``'s Booth digits as (``|d0| * x``, sign of d0), (``4 |d1| * x``, sign of
        d1)."""
        w, x = self._code(c), self._x(c)
        out = []
        for i, (hi, mid, lo) in enumerate(((w[1], w[0], Const(0, 1)), (w[3], w[2], w[1]))):
            one = mid ^ lo
            two = Mux(hi, ~mid & ~lo, mid & lo)
            mag = Mux(two, x << 1, Mux(one, x, 0)).as_signed()
            out.append((mag.shift_left(2 * i), hi))
        return out

    def elaborate(self, platform) -> Module:
        m = Module()
        self._shift_tree(m)
        return m
