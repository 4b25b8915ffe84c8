"""The row-wise mixed-scheme MAC array: one DotRow per PE row, grouped by format."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig, weight_format
from ..arch.layout import Entry, entry_bits, row_bits, row_formats, w_row_offsets
from .pe import DotRow


class MacArray(wiring.Component):
    """Dot products of every PE row with one input vector, ``latency`` cycles after the input.

    ``w`` is one W buffer entry and ``x`` one X entry (``arch.layout``); ``x_valid`` low makes the
    input vector zero (padding outside the tile). ``dots[r]`` is row r's dot product,
    sign-extended to ``acc_bits``. The inputs are registered first (they come straight from the
    buffers' read ports and fan out to every row), then each row is a pipelined DotRow.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        self.rows = [
            DotRow(weight_format(fmt), cfg.cols, cfg.act_bits, pipelined=True)
            for fmt in row_formats(cfg)
        ]
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
        """Cycles from ``w``/``x`` to ``dots``."""
        return 1 + self.rows[0].latency

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        w = Signal.like(self.w)
        x = Signal.like(self.x)
        m.d.sync += [w.eq(self.w), x.eq(Mux(self.x_valid, self.x, 0))]
        offs, bits = w_row_offsets(cfg), row_bits(cfg)
        for r, row in enumerate(self.rows):
            m.submodules[f"row{r}"] = row
            lo = int(offs[r])
            m.d.comb += [
                row.w.eq(w[lo : lo + cfg.cols * int(bits[r])]),
                row.x.eq(x),
                self.dots[r].eq(row.dot),
            ]
        return m
