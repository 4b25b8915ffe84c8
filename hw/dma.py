"""AXI4 burst engines for the Zynq HP port: a reader and a writer of contiguous beat ranges.

Bursts are INCR, at most ``max_burst`` beats, never across a 4 KiB boundary; up to
``max_outstanding`` bursts are in flight. A non-OKAY response sets a sticky ``err``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from .axi import AXI_4K, AXI_BURST_INCR, AXI_SIZE_64, axi_read_master, axi_write_master

BEAT_COUNT_BITS = 24
"""Width of a transfer length in beats (16 Mi beats = 128 MiB)."""


def _burst_len(m: Module, cfg: AccelConfig, addr, remaining) -> Signal:
    """Beats of the next burst: min(remaining, max_burst, beats left in this 4 KiB page)."""
    beat_bytes = cfg.axi_data_bits // 8
    to_page = Signal(range(AXI_4K // beat_bytes + 1))
    n = Signal(range(cfg.max_burst + 1))
    m.d.comb += to_page.eq((AXI_4K - addr[: AXI_4K.bit_length() - 1]) // beat_bytes)
    cap = Mux(to_page < cfg.max_burst, to_page, cfg.max_burst)
    m.d.comb += n.eq(Mux(remaining < cap, remaining, cap))
    return n


def _command(cfg: AccelConfig) -> dict:
    """Members shared by both engines: a transfer command and its status."""
    return {
        "start": In(1),
        "addr": In(cfg.axi_addr_bits),
        "beats": In(BEAT_COUNT_BITS),
        "busy": Out(1),
        "err": Out(1),
    }


class AxiReader(wiring.Component):
    """Reads ``beats`` beats from byte address ``addr``; every beat appears on ``data``/``valid``.

    The consumer is always ready (it writes a buffer register each beat). ``busy`` is high from
    ``start`` until the last beat has arrived.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                **axi_read_master("m_axi", cfg.axi_addr_bits, cfg.axi_data_bits),
                **_command(cfg),
                "data": Out(cfg.axi_data_bits),
                "valid": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        ar_addr = Signal(cfg.axi_addr_bits)
        ar_left = Signal(BEAT_COUNT_BITS)
        rx_left = Signal(BEAT_COUNT_BITS)
        inflight = Signal(range(cfg.max_outstanding + 1))
        n = _burst_len(m, cfg, ar_addr, ar_left)
        ar_fire = self.m_axi_arvalid & self.m_axi_arready
        r_fire = self.m_axi_rvalid & self.m_axi_rready
        r_end = r_fire & self.m_axi_rlast
        m.d.comb += [
            self.m_axi_araddr.eq(ar_addr),
            self.m_axi_arlen.eq(n - 1),
            self.m_axi_arsize.eq(AXI_SIZE_64),
            self.m_axi_arburst.eq(AXI_BURST_INCR),
            self.m_axi_arvalid.eq((ar_left != 0) & (inflight < cfg.max_outstanding)),
            self.m_axi_rready.eq(rx_left != 0),
            self.busy.eq(rx_left != 0),
            self.data.eq(self.m_axi_rdata),
            self.valid.eq(r_fire),
        ]
        with m.If(ar_fire):
            m.d.sync += [
                ar_addr.eq(ar_addr + n * (cfg.axi_data_bits // 8)),
                ar_left.eq(ar_left - n),
            ]
        m.d.sync += inflight.eq(inflight + ar_fire - r_end)
        with m.If(r_fire):
            m.d.sync += rx_left.eq(rx_left - 1)
            with m.If(self.m_axi_rresp != 0):
                m.d.sync += self.err.eq(1)
        with m.If(self.start):
            m.d.sync += [
                ar_addr.eq(self.addr),
                ar_left.eq(self.beats),
                rx_left.eq(self.beats),
                self.err.eq(0),
            ]
        return m


class AxiWriter(wiring.Component):
    """Writes ``beats`` beats to byte address ``addr`` from the ``data``/``valid``/``ready`` stream.

    W data of a burst is sent only after its AW was accepted. ``busy`` stays high until every
    write response has come back.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                **axi_write_master("m_axi", cfg.axi_addr_bits, cfg.axi_data_bits),
                **_command(cfg),
                "data": In(cfg.axi_data_bits),
                "valid": In(1),
                "ready": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        bb = cfg.axi_data_bits // 8
        aw_addr = Signal(cfg.axi_addr_bits)
        aw_left = Signal(BEAT_COUNT_BITS)
        w_addr = Signal(cfg.axi_addr_bits)
        w_left = Signal(BEAT_COUNT_BITS)
        w_pos = Signal(range(cfg.max_burst))
        aw_ahead = Signal(range(cfg.max_outstanding + 1))
        b_wait = Signal(range(cfg.max_outstanding + 1))
        n_aw = _burst_len(m, cfg, aw_addr, aw_left)
        n_w = _burst_len(m, cfg, w_addr, w_left)
        aw_fire = self.m_axi_awvalid & self.m_axi_awready
        w_fire = self.m_axi_wvalid & self.m_axi_wready
        w_last = w_pos == n_w - 1
        b_fire = self.m_axi_bvalid & self.m_axi_bready
        m.d.comb += [
            self.m_axi_awaddr.eq(aw_addr),
            self.m_axi_awlen.eq(n_aw - 1),
            self.m_axi_awsize.eq(AXI_SIZE_64),
            self.m_axi_awburst.eq(AXI_BURST_INCR),
            self.m_axi_awvalid.eq((aw_left != 0) & (b_wait + aw_ahead < cfg.max_outstanding)),
            self.m_axi_wdata.eq(self.data),
            self.m_axi_wstrb.eq(-1),
            self.m_axi_wlast.eq(w_last),
            self.m_axi_wvalid.eq(self.valid & (aw_ahead != 0)),
            self.ready.eq(self.m_axi_wready & (aw_ahead != 0)),
            self.m_axi_bready.eq(1),
            self.busy.eq((aw_left != 0) | (w_left != 0) | (b_wait != 0)),
        ]
        with m.If(aw_fire):
            m.d.sync += [aw_addr.eq(aw_addr + n_aw * bb), aw_left.eq(aw_left - n_aw)]
        burst_done = w_fire & w_last
        m.d.sync += [
            aw_ahead.eq(aw_ahead + aw_fire - burst_done),
            b_wait.eq(b_wait + burst_done - b_fire),
        ]
        with m.If(w_fire):
            m.d.sync += w_pos.eq(Mux(w_last, 0, w_pos + 1))
            with m.If(w_last):
                m.d.sync += [w_addr.eq(w_addr + n_w * bb), w_left.eq(w_left - n_w)]
        with m.If(b_fire & (self.m_axi_bresp != 0)):
            m.d.sync += self.err.eq(1)
        with m.If(self.start):
            m.d.sync += [
                aw_addr.eq(self.addr),
                aw_left.eq(self.beats),
                w_addr.eq(self.addr),
                w_left.eq(self.beats),
                w_pos.eq(0),
                self.err.eq(0),
            ]
        return m
