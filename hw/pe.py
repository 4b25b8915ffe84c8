"""Processing elements: a PE row computes a ``cols``-wide dot product with one weight format.

Fixed rows multiply (Yosys maps each product to a DSP48E1, and the first adder-tree level to the
DSP's post-adder through the PCIN cascade). Two Fixed-4 rows share one DSP per column
(``PairRow``): their weights are packed on the A port as ``w_hi * 2^k + w_lo`` and multiplied by
the shared activation, the packed products are summed down one tree, and the sum is split once
at the end.

PoT and SP2 rows are shifts and adds in LUTs (``DotRow``). A negative weight does not negate
its product: the leaf is the ones' complement ``~p = -p - 1`` (an XOR folded into the shifter's
LUTs), and the missing ``+1`` enters the adder tree as a carry-in, one per adder. A tree of
``cols`` leaves has ``cols - 1`` adders, so column 0 negates its product outright. Every tree
node is a signal of exactly the width its operands need, which also keeps Yosys from merging the
tree into one full-adder compressor (more LUTs than a tree of carry chains).

A pipelined row registers three times. Fixed rows after the first tree level: the products
take their operands straight from the array's input register, and each pair of them is added in
a DSP48E1's post-adder (the PCIN cascade), so that register is the DSP's P register; a DSP's
output read unregistered (1.7 ns clock-to-out on a -1 part) held the rows to 139 MHz. Shift rows
after the shifters and the first tree level. Both then part way down the tree (``tree_split``)
and at the output, so the accumulator's add behind a row starts from a register.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch.layout import PAIRED_FORMAT
from ..arch.numerics import Scheme, WeightFormat, weight_format

DSP_A_BITS = 25
"""Signed width of the DSP48E1 multiplier's A operand (after the pre-adder)."""
DSP_B_BITS = 18
"""Signed width of the DSP48E1 multiplier's B operand."""
FIXED4 = weight_format(PAIRED_FORMAT)
"""The format ``PairRow`` packs two rows of (``arch.layout.pe_units`` pairs them)."""


def product_bits(fmt: WeightFormat, act_bits: int) -> int:
    """Signed width of one weight x activation product."""
    return act_bits + fmt.max_level.bit_length() + 1


def dot_bits(fmt: WeightFormat, act_bits: int, cols: int) -> int:
    """Signed width of a row's dot product over ``cols`` columns."""
    return product_bits(fmt, act_bits) + max(1, (cols - 1).bit_length())


def pair_shift(act_bits: int, cols: int) -> int:
    """``k`` of a Fixed-4 pair: the high row's weight sits at 2^k on the A port.

    The low row's dot product (plus the offset ``2^(k-1)``) must stay inside the low ``k`` bits
    of the packed sum, so ``k`` is the low row's dot width.
    """
    return dot_bits(FIXED4, act_bits, cols)


def tree_levels(n: int) -> int:
    """Levels of a balanced adder tree over ``n`` values."""
    return max(0, (n - 1).bit_length())


def tree_split(n: int) -> int:
    """Adder-tree levels over ``n`` values before the middle pipeline register (the first level
    and about half of the rest; the rest go before the output register)."""
    levels = tree_levels(n)
    return min(levels, (levels + 2) // 2)


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


Node = tuple[Value, list[Value]]
"""A partial sum of a shift row and the carries (``+1`` each) still owed to it."""


def _carry_sum(m: Module, nodes: list[Node], levels: int | None, name: str) -> list[Node]:
    """``tree_sum`` over nodes, each adder taking one owed carry as its carry-in.

    A subtree of ``n`` leaves owes at most ``n`` carries and has ``n - 1`` adders, and at most one
    leaf (column 0) owes none, so every adder has a carry to take and none is left at the root.
    """
    done = 0
    while len(nodes) > 1 and (levels is None or done < levels):
        nxt = []
        for i in range(0, len(nodes), 2):
            if i + 1 == len(nodes):
                nxt.append(nodes[i])
                continue
            (a, ca), (b, cb) = nodes[i], nodes[i + 1]
            owed = ca + cb
            s = Signal(signed(max(len(a), len(b)) + 1), name=f"{name}{done}_{i // 2}")
            m.d.comb += s.eq(a + b + owed.pop())
            nxt.append((s, owed))
        nodes = nxt
        done += 1
    return nodes


class _Row(wiring.Component):
    """What every PE component shares: the pipeline and its ``latency``."""

    def __init__(self, cols: int, act_bits: int, pipelined: bool, signature: dict) -> None:
        if cols < 1 or act_bits < 2:
            raise ValueError(f"a PE row needs cols >= 1 and act_bits >= 2, got {cols}, {act_bits}")
        self.cols, self.act_bits, self.pipelined = cols, act_bits, pipelined
        super().__init__(signature)

    @property
    def latency(self) -> int:
        """Cycles from ``w``/``x`` to the dot products."""
        return 3 if self.pipelined else 0

    def _stage(self, m: Module, values: list, name: str) -> list:
        """``values`` registered when pipelined (as they are otherwise)."""
        if not self.pipelined:
            return values
        regs = []
        for i, v in enumerate(values):
            r = Signal(signed(len(v)) if v.shape().signed else len(v), name=f"{name}{i}")
            m.d.sync += r.eq(v)
            regs.append(r)
        return regs

    def _x(self, c: int) -> Value:
        """Activation of column ``c``."""
        ab = self.act_bits
        return self.x[c * ab : (c + 1) * ab].as_signed()

    def _result(self, m: Module, out: Value, value: Value) -> None:
        """``out`` = ``value``, through the row's output register when pipelined."""
        if self.pipelined:
            m.d.sync += out.eq(value)
        else:
            m.d.comb += out.eq(value)

    def _fixed_sum(self, m: Module, prods: list[Value], out: Value) -> None:
        """``out`` = the sum of products, registered after the first level (the DSP's P
        register), after ``tree_split`` levels and at the output."""
        sums = self._stage(m, tree_sum(prods, 1), "sum")
        partial = self._stage(m, tree_sum(sums, max(0, tree_split(len(prods)) - 1)), "part")
        self._result(m, out, tree_sum(partial)[0])


class DotRow(_Row):
    """``dot = sum_c level(w[c]) * x[c]`` for one PE row of format ``fmt``.

    Combinational unless ``pipelined``; then ``dot`` follows ``w``/``x`` by ``latency`` cycles.
    """

    def __init__(
        self, fmt: WeightFormat, cols: int, act_bits: int, pipelined: bool = False
    ) -> None:
        self.fmt = fmt
        super().__init__(
            cols,
            act_bits,
            pipelined,
            {
                "w": In(cols * fmt.bits),
                "x": In(cols * act_bits),
                "dot": Out(signed(dot_bits(fmt, act_bits, cols))),
            },
        )

    @property
    def dots(self) -> list[Value]:
        """The row's output, as a list like ``PairRow.dots``."""
        return [self.dot]

    def _code(self, c: int) -> Value:
        bits = self.fmt.bits
        return self.w[c * bits : (c + 1) * bits]

    def _magnitudes(self, code: Value, x: Value) -> list[Value]:
        """The shifted activations whose sum is ``|level| * x``: one for PoT, two for SP2.

        ``x << e`` drops its zero LSB to give ``x * 2^(e-1)``, and is zero for ``e = 0``.
        """
        if self.fmt.scheme is Scheme.POT:
            e = code[0:3]
            return [Mux(e != 0, x << e, 0)[1:].as_signed()]
        a, b = code[1:3], code[0]
        return [Mux(a != 0, x << a, 0)[1:].as_signed(), Mux(b, x, 0).shift_left(2)]

    def _signed_magnitudes(self, c: int) -> list[tuple[Value, Value]]:
        """Column ``c``'s product as (magnitude, sign) terms: ``_magnitudes`` and the weight's
        sign."""
        code = self._code(c)
        sign = code[self.fmt.bits - 1]
        return [(mag, sign) for mag in self._magnitudes(code, self._x(c))]

    def _shift_leaves(self, m: Module, c: int) -> list[Node]:
        """Column ``c``'s product as tree leaves (one per shifted activation), each the ones'
        complement owing one carry when the weight is negative; column 0's first leaf is exact
        instead, owing none. Every leaf has the exact one's width (``-mag`` needs a bit more):
        with column 0's one bit wider than its siblings, Yosys' maccmap built a full adder into
        the first pipelined subtree (7.50 ns against 6.52 for the others on 40 columns)."""
        leaves = []
        for i, (mag, sign) in enumerate(self._signed_magnitudes(c)):
            exact = c == 0 and i == 0
            p = Signal(signed(len(mag) + 1), name=f"leaf{c}_{i}")
            ones = mag ^ sign.replicate(len(mag)).as_signed()
            m.d.comb += p.eq(Mux(sign, -mag, mag) if exact else ones)
            leaves.append((p, [] if exact else [sign]))
        return leaves

    def _stage_nodes(self, m: Module, nodes: list[Node], name: str) -> list[Node]:
        """Nodes (values and owed carries) registered when pipelined."""
        flat = self._stage(m, [Cat(v, *cs) for v, cs in nodes], name)
        return [
            (f[: len(v)].as_signed(), [f[len(v) + j] for j in range(len(cs))])
            for f, (v, cs) in zip(flat, nodes, strict=True)
        ]

    def elaborate(self, platform) -> Module:
        m = Module()
        if self.fmt.scheme is Scheme.FIXED:
            prods = [self._x(c) * self._code(c).as_signed() for c in range(self.cols)]
            self._fixed_sum(m, prods, self.dot)
            return m
        self._shift_tree(m)
        return m

    def _shift_tree(self, m: Module) -> None:
        """``dot`` = the sum of every column's ``_shift_leaves``, carries taken by the adders,
        registered after the first levels and after ``tree_split`` levels."""
        nodes = [leaf for c in range(self.cols) for leaf in self._shift_leaves(m, c)]
        split = tree_split(len(nodes))
        first = min(1, split)
        nodes = self._stage_nodes(m, _carry_sum(m, nodes, first, "sa"), "top")
        nodes = self._stage_nodes(m, _carry_sum(m, nodes, split - first, "sb"), "part")
        (root, owed), *rest = _carry_sum(m, nodes, None, "sc")
        assert not owed and not rest
        self._result(m, self.dot, root)


class PairRow(_Row):
    """Two Fixed-4 PE rows in one DSP48E1 per column: ``dots[i] = sum_c w_i[c] * x[c]``.

    ``w`` holds row 0's codes, then row 1's (as they lie in a W entry). Column c's DSP multiplies
    ``A = w_1[c] * 2^k + w_0[c]`` (``k = pair_shift``; the add is the DSP's pre-adder) by
    ``x[c]``; column 0 also adds ``2^(k-1)``. The packed sum ``S = 2^k * dot_1 + dot_0 +
    2^(k-1)`` has ``0 <= dot_0 + 2^(k-1) < 2^k``, so ``S``'s bits from k are ``dot_1`` exactly and
    its low k bits with the top one flipped are ``dot_0``: the low row's sign needs no correction.
    """

    def __init__(self, cols: int, act_bits: int, pipelined: bool = False) -> None:
        self.k = pair_shift(act_bits, cols)
        a_bits = self.k + FIXED4.bits + 1
        if a_bits > DSP_A_BITS or act_bits > DSP_B_BITS:
            raise ValueError(
                f"a Fixed-4 pair of {cols} columns with {act_bits}-bit activations packs a "
                f"{a_bits}-bit weight and an {act_bits}-bit activation: the DSP48E1 takes "
                f"{DSP_A_BITS} x {DSP_B_BITS}; use fewer columns"
            )
        super().__init__(
            cols,
            act_bits,
            pipelined,
            {
                "w": In(2 * cols * FIXED4.bits),
                "x": In(cols * act_bits),
                "dot": Out(data.ArrayLayout(signed(dot_bits(FIXED4, act_bits, cols)), 2)),
            },
        )

    @property
    def dots(self) -> list[Value]:
        """Row 0's and row 1's dot products."""
        return [self.dot[0], self.dot[1]]

    def elaborate(self, platform) -> Module:
        m = Module()
        k, bits, cols = self.k, FIXED4.bits, self.cols
        prods = []
        for c in range(cols):
            lo = self.w[c * bits : (c + 1) * bits].as_signed()
            hi = self.w[(cols + c) * bits : (cols + c + 1) * bits].as_signed()
            a = Signal(signed(k + bits + 1), name=f"a{c}")
            m.d.comb += a.eq((hi << k) + lo)
            p = self._x(c) * a
            prods.append(p + (1 << (k - 1)) if c == 0 else p)
        total = Signal(2 * k)  # the packed sum fits 2k bits; the tree above them may wrap
        self._fixed_sum(m, prods, total)
        m.d.comb += [
            self.dot[0].eq(Cat(total[: k - 1], ~total[k - 1])),
            self.dot[1].eq(total[k:]),
        ]
        return m
