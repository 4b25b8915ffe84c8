"""The row-wise mixed-scheme MAC array: one DotRow per PE row, grouped by format."""

from __future__ import annotations

from amaranth import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig, weight_format
from ..arch.layout import Entry, entry_bits, row_bits, row_formats, w_row_offsets
from .pe import DotRow


class MacArray(wiring.Component):
    """Dot products of every PE row with one input vector; combinational.

    ``w`` is one W buffer entry and ``x`` one X entry (``arch.layout``); ``dots[r]`` is row r's
    dot product, sign-extended to ``acc_bits``.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                "w": In(entry_bits(cfg, Entry.W)),
                "x": In(entry_bits(cfg, Entry.X)),
                "dots": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.rows)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        offs, bits = w_row_offsets(cfg), row_bits(cfg)
        for r, fmt in enumerate(row_formats(cfg)):
            row = DotRow(weight_format(fmt), cfg.cols, cfg.act_bits)
            m.submodules[f"row{r}"] = row
            lo = int(offs[r])
            m.d.comb += [
                row.w.eq(self.w[lo : lo + cfg.cols * int(bits[r])]),
                row.x.eq(self.x),
                self.dots[r].eq(row.dot),
            ]
        return m
