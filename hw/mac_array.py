"""The row-wise mixed-scheme MAC array: PE rows grouped by format, Fixed-4 rows in DSP pairs (or
in LUTs, a group's ``lut_rows``)."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig, weight_format
from ..arch.layout import Entry, PeUnit, entry_bits, pe_units, w_row_offsets
from ..arch.timing import MAC_LATENCY
from .pe import DotRow, PairRow
from .pe_lut import LutMulRow


def unit(u: PeUnit, cols: int, act_bits: int) -> DotRow | PairRow:
    """The pipelined component of PE unit ``u``: a packed Fixed-4 pair, a Fixed-4 row in LUTs,
    or one row of its format."""
    if u.rows == 2:
        return PairRow(cols, act_bits, pipelined=True)
    if u.lut_mul:
        return LutMulRow(cols, act_bits, pipelined=True)
    return DotRow(weight_format(u.fmt), cols, act_bits, pipelined=True)


class MacArray(wiring.Component):
    """Dot products of every PE row with one input vector, ``latency`` cycles after the input.

    ``w`` is one W buffer entry and ``x`` one X entry (``arch.layout``); ``x_valid`` low makes the
    input vector zero (padding outside the tile). ``dots[r]`` is row r's dot product,
    sign-extended to ``acc_bits``. The inputs are registered first (they come straight from the
    buffers' read ports and fan out to every row), then each PE unit (``arch.layout.pe_units``:
    a Fixed-4 pair, a Fixed-4 row in LUTs or a single row) is pipelined.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        self.units = [unit(u, cfg.cols, cfg.act_bits) for u in pe_units(cfg)]
        if {1 + u.latency for u in self.units} != {MAC_LATENCY}:
            raise ValueError(f"PE units + input register must take MAC_LATENCY = {MAC_LATENCY}")
        super().__init__(
            {
                "w": In(entry_bits(cfg, Entry.W)),
                "x": In(entry_bits(cfg, Entry.X)),
                "x_valid": In(1),
                "dots": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.rows)),
            }
        )

    @property
    def latency(self) -> int:
        """Cycles from ``w``/``x`` to ``dots`` (``arch.timing.MAC_LATENCY``)."""
        return MAC_LATENCY

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        w = Signal.like(self.w)
        x = Signal.like(self.x)
        m.d.sync += [w.eq(self.w), x.eq(Mux(self.x_valid, self.x, 0))]
        offs = w_row_offsets(cfg)
        r = 0
        for i, unit in enumerate(self.units):
            m.submodules[f"pe{i}"] = unit
            lo = int(offs[r])
            m.d.comb += [unit.w.eq(w[lo : lo + len(unit.w)]), unit.x.eq(x)]
            for dot in unit.dots:
                m.d.comb += self.dots[r].eq(dot)
                r += 1
        return m
