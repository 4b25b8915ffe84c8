"""Control/status registers behind an AXI4-Lite slave, generated from ``arch.regs``."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from ..arch.regs import AXIL_ADDR_BITS, MAGIC, REGS, Access
from .axi import axil_slave

REG_WIDTH = 32


def _rw_names() -> list[str]:
    return [r.name for r in REGS if r.access is Access.RW]


def _status_names() -> list[str]:
    return [r.name for r in REGS if r.access is Access.RO and r.name not in _CONSTANT_REGS]


_CONSTANT_REGS = ("CONFIG_HASH_LO", "CONFIG_HASH_HI", "MAGIC")


class Csr(wiring.Component):
    """AXI4-Lite slave ``s_axil_*``; RW registers out, RO status in, ``start`` pulse out.

    One write and one read are in flight at most; writes need AW and W together (as the Zynq GP
    port issues them). Unmapped addresses read as 0 and ignore writes, with an OKAY response.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        members = {}
        members.update(axil_slave("s_axil", AXIL_ADDR_BITS))
        members["start"] = Out(1)
        for n in _rw_names():
            members[n.lower()] = Out(REG_WIDTH)
        for n in _status_names():
            members[n.lower()] = In(REG_WIDTH)
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        consts = {
            "CONFIG_HASH_LO": self.cfg.hash_int & 0xFFFF_FFFF,
            "CONFIG_HASH_HI": self.cfg.hash_int >> 32,
            "MAGIC": MAGIC,
        }
        bvalid = Signal()
        rvalid = Signal()
        rdata = Signal(REG_WIDTH)
        do_write = self.s_axil_awvalid & self.s_axil_wvalid & ~bvalid
        m.d.comb += [
            self.s_axil_awready.eq(do_write),
            self.s_axil_wready.eq(do_write),
            self.s_axil_bvalid.eq(bvalid),
            self.s_axil_bresp.eq(0),
            self.s_axil_arready.eq(~rvalid),
            self.s_axil_rvalid.eq(rvalid),
            self.s_axil_rdata.eq(rdata),
            self.s_axil_rresp.eq(0),
        ]
        m.d.sync += self.start.eq(0)
        with m.If(do_write):
            m.d.sync += bvalid.eq(1)
            with m.Switch(self.s_axil_awaddr):
                for reg in REGS:
                    if reg.name == "CTRL":
                        with m.Case(reg.offset):
                            m.d.sync += self.start.eq(self.s_axil_wdata[0])
                    elif reg.access is Access.RW:
                        with m.Case(reg.offset):
                            m.d.sync += getattr(self, reg.name.lower()).eq(self.s_axil_wdata)
        with m.Elif(bvalid & self.s_axil_bready):
            m.d.sync += bvalid.eq(0)
        with m.If(self.s_axil_arvalid & ~rvalid):
            m.d.sync += [rvalid.eq(1), rdata.eq(0)]
            with m.Switch(self.s_axil_araddr):
                for reg in REGS:
                    if reg.access is Access.WO:
                        continue
                    with m.Case(reg.offset):
                        src = consts.get(reg.name, None)
                        if src is None:
                            src = getattr(self, reg.name.lower())
                        m.d.sync += rdata.eq(src)
        with m.Elif(rvalid & self.s_axil_rready):
            m.d.sync += rvalid.eq(0)
        return m
