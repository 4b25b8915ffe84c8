"""Control/status registers behind an AXI4-Lite slave, generated from ``arch.regs``."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from ..arch.regs import AXIL_ADDR_BITS, MAGIC, REG_BYTES, REGS, Access
from .axi import axil_slave

REG_WIDTH = 32
OKAY = 0
SLVERR = 2
"""AXI response codes."""
WORD_SHIFT = (REG_BYTES - 1).bit_length()
"""Address bits below the register (word) index: addresses decode by word, lanes by WSTRB."""


def _rw_names() -> list[str]:
    return [r.name for r in REGS if r.access is Access.RW]


def _status_names() -> list[str]:
    return [r.name for r in REGS if r.access is Access.RO and r.name not in _CONSTANT_REGS]


_CONSTANT_REGS = ("CONFIG_HASH_LO", "CONFIG_HASH_HI", "MAGIC")


def _merge(old, new, strb) -> Cat:
    """``new`` in the byte lanes ``strb`` selects, ``old`` in the others."""
    return Cat(
        Mux(strb[i], new[8 * i : 8 * i + 8], old[8 * i : 8 * i + 8]) for i in range(REG_BYTES)
    )


class Csr(wiring.Component):
    """AXI4-Lite slave ``s_axil_*``; RW registers out, RO status in, ``start`` pulse out.

    One write and one read are in flight at most. AW and W are accepted independently, in either
    order or together; the write happens once both are in, and BVALID follows it. Addresses
    decode by 32-bit word (the two low bits are ignored); WSTRB selects the byte lanes written,
    and CTRL's start bit counts only if lane 0 is strobed.

    Responses: reads of any register answer OKAY (CTRL, write-only, reads 0). Accesses to an
    unmapped address, and writes to a read-only register, answer SLVERR and change nothing: the
    golden model rejects read-only writes too, so a driver that writes one hears about it rather
    than losing the write silently (on the Zynq GP port SLVERR becomes a bus fault).
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
        word_bits = AXIL_ADDR_BITS - WORD_SHIFT

        # Write: AW and W each wait in a holding register until the other arrives.
        aw_full, w_full = Signal(), Signal()
        aw_word = Signal(word_bits)
        w_data, w_strb = Signal(REG_WIDTH), Signal(REG_BYTES)
        bvalid, bresp = Signal(), Signal(2)
        aw_fire = self.s_axil_awvalid & self.s_axil_awready
        w_fire = self.s_axil_wvalid & self.s_axil_wready
        do_write = (aw_full | aw_fire) & (w_full | w_fire)
        word = Mux(aw_full, aw_word, self.s_axil_awaddr[WORD_SHIFT:])
        data = Mux(w_full, w_data, self.s_axil_wdata)
        strb = Mux(w_full, w_strb, self.s_axil_wstrb)
        m.d.comb += [
            self.s_axil_awready.eq(~aw_full & ~bvalid),
            self.s_axil_wready.eq(~w_full & ~bvalid),
            self.s_axil_bvalid.eq(bvalid),
            self.s_axil_bresp.eq(bresp),
        ]
        m.d.sync += self.start.eq(0)
        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bvalid.eq(1), bresp.eq(SLVERR)]
            with m.Switch(word):
                for reg in REGS:
                    if reg.access is Access.RO:
                        continue
                    with m.Case(reg.offset >> WORD_SHIFT):
                        m.d.sync += bresp.eq(OKAY)
                        if reg.name == "CTRL":
                            m.d.sync += self.start.eq(data[0] & strb[0])
                        else:
                            port = getattr(self, reg.name.lower())
                            m.d.sync += port.eq(_merge(port, data, strb))
        with m.Else():
            with m.If(aw_fire):
                m.d.sync += [aw_full.eq(1), aw_word.eq(self.s_axil_awaddr[WORD_SHIFT:])]
            with m.If(w_fire):
                m.d.sync += [
                    w_full.eq(1),
                    w_data.eq(self.s_axil_wdata),
                    w_strb.eq(self.s_axil_wstrb),
                ]
            with m.If(bvalid & self.s_axil_bready):
                m.d.sync += bvalid.eq(0)

        # Read: one cycle from the AR handshake to RVALID.
        rvalid, rresp = Signal(), Signal(2)
        rdata = Signal(REG_WIDTH)
        m.d.comb += [
            self.s_axil_arready.eq(~rvalid),
            self.s_axil_rvalid.eq(rvalid),
            self.s_axil_rdata.eq(rdata),
            self.s_axil_rresp.eq(rresp),
        ]
        with m.If(self.s_axil_arvalid & ~rvalid):
            m.d.sync += [rvalid.eq(1), rdata.eq(0), rresp.eq(SLVERR)]
            with m.Switch(self.s_axil_araddr[WORD_SHIFT:]):
                for reg in REGS:
                    with m.Case(reg.offset >> WORD_SHIFT):
                        m.d.sync += rresp.eq(OKAY)
                        if reg.access is not Access.WO:
                            src = consts.get(reg.name)
                            if src is None:
                                src = getattr(self, reg.name.lower())
                            m.d.sync += rdata.eq(src)
        with m.Elif(rvalid & self.s_axil_rready):
            m.d.sync += rvalid.eq(0)
        return m
