"""DMA: a 2-D burst generator, the shared AXI read port and the AXI write port.

Bursts are INCR, at most ``max_burst`` beats, never across a 4 KiB boundary; at most
``max_outstanding`` bursts are in flight per port. Each port registers its AR/AW channel, so a
raised VALID holds with a stable payload until READY, and has a watchdog: ``watchdog_cycles``
without a handshake while a transfer is outstanding raise ``timeout``.

``drain`` (high between runs) stops new requests and completes what is on the bus: read data is
taken and dropped, and the W beats of accepted write bursts are still sent (the store unit keeps
streaming them; it is held in reset only once the write port is ``quiet``). A port that never
answers keeps it from becoming quiet: that needs a reset.
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from ..arch.isa import Error, Opcode, Unit, layout
from ..arch.layout import Entry, entry_beats
from .arith import log2_exact
from .axi import (
    AXI_4K,
    AXI_BURST_INCR,
    AXI_RESP_OKAY,
    AxiReadSignature,
    AxiWriteSignature,
    axi_size,
)
from .queues import PC_BITS, UNIT_BITS, FaultSignature


def burst_layout(cfg: AccelConfig) -> data.StructLayout:
    """One burst request: byte address and beat count (1..max_burst)."""
    return data.StructLayout({"addr": cfg.axi_addr_bits, "beats": range(cfg.max_burst + 1)})


def block_widths(cfg: AccelConfig) -> tuple[int, int]:
    """Widths of a 2-D transfer's row count and of its beats per row (LOAD/STORE fields)."""
    lay = layout(cfg)
    rows = max(lay[op]["y_size"].width for op in (Opcode.LOAD, Opcode.STORE))
    xs = max(lay[op]["x_size"].width for op in (Opcode.LOAD, Opcode.STORE))
    most = max([entry_beats(cfg, k) for k in Entry] + [cfg.insn_bits // cfg.axi_data_bits])
    return rows, (((1 << xs) - 1) * most).bit_length()


class BeatSignature(wiring.Signature):
    """One read beat delivered to a client (port view): the client always takes it."""

    def __init__(self, data_bits: int) -> None:
        super().__init__({"valid": Out(1), "data": Out(data_bits), "err": Out(1)})


class ReadClientSignature(wiring.Signature):
    """A read-port client (client view): burst requests, its current program index, beats."""

    def __init__(self, cfg: AccelConfig) -> None:
        super().__init__(
            {
                "req": Out(stream.Signature(burst_layout(cfg))),
                "pc": Out(PC_BITS),
                "beat": In(BeatSignature(cfg.axi_data_bits)),
            }
        )


class WriteClientSignature(wiring.Signature):
    """The write-port client (client view): burst requests, W data, B errors, port busy."""

    def __init__(self, cfg: AccelConfig) -> None:
        super().__init__(
            {
                "req": Out(stream.Signature(burst_layout(cfg))),
                "data": Out(stream.Signature(cfg.axi_data_bits)),
                "pc": Out(PC_BITS),
                "err": In(1),
                "busy": In(1),
            }
        )


def _page_cap(cfg: AccelConfig, addr: Value) -> Value:
    """min(max_burst, beats from byte address ``addr`` to its 4 KiB page's end): with max_burst a
    power of two that divides the page, only an offset in the page's last max_burst beats caps
    it. Depends on the address bits below 4 KiB only."""
    burst_bits = log2_exact(cfg.max_burst)
    if burst_bits == 0:
        return Const(1, range(2))
    offset = addr[log2_exact(cfg.axi_data_bits // 8) : log2_exact(AXI_4K)]
    low, high = offset[:burst_bits], offset[burst_bits:]
    left_in_page = Array(Const(cfg.max_burst - i) for i in range(cfg.max_burst))  # a LUT, no adder
    return Mux(high.all(), left_in_page[low], cfg.max_burst)


class BurstGen(wiring.Component):
    """Splits a 2-D transfer into burst requests, back to back across rows.

    On ``start``: ``rows`` rows of ``row_beats`` beats each, the first at byte address ``addr``,
    each next one ``row_stride`` bytes further. ``busy`` stays high until the last burst of the
    last row has been requested (``req`` handshake). ``rows`` and ``row_beats`` must be >= 1.

    A burst is min(beats left in the row, ``cap``), with ``cap`` = min(max_burst, beats to the
    4 KiB page's end) registered beside the address it belongs to (formed from the next address
    as that is formed). A request's only comparison is then the row's remainder against ``cap``,
    and a burst that does not end its row steps the address and the remainder by ``cap``: no
    carry chain waits for a comparison (the clock's path before, at 7.3 ns on a -1 part).
    ``busy`` and whether the current row is the last are registers too, so clients see
    ``req.valid`` straight from a flip-flop.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        row_bits, beat_bits = block_widths(cfg)
        super().__init__(
            {
                "start": In(1),
                "addr": In(cfg.axi_addr_bits),
                "rows": In(row_bits),
                "row_beats": In(beat_bits),
                "row_stride": In(cfg.axi_addr_bits),
                "req": Out(stream.Signature(burst_layout(cfg))),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        beat_shift = log2_exact(cfg.axi_data_bits // 8)
        row_addr = Signal.like(self.addr)
        addr = Signal.like(self.addr)
        left = Signal.like(self.row_beats)
        rows = Signal.like(self.rows)
        beats = Signal.like(self.row_beats)
        stride = Signal.like(self.row_stride)
        cap = Signal(range(cfg.max_burst + 1))
        busy, last_row = Signal(), Signal()
        width = len(cap)
        row_end = (left[width:] == 0) & (left[:width] <= cap)
        m.d.comb += [
            self.busy.eq(busy),
            self.req.valid.eq(busy),
            self.req.payload.addr.eq(addr),
            self.req.payload.beats.eq(Mux(row_end, left[:width], cap)),
        ]
        with m.If(self.req.valid & self.req.ready):
            with m.If(row_end):
                next_row = row_addr + stride
                m.d.sync += [
                    rows.eq(rows - 1),
                    last_row.eq(rows == 2),
                    row_addr.eq(next_row),
                    addr.eq(next_row),
                    left.eq(beats),
                    cap.eq(_page_cap(cfg, next_row)),
                ]
                with m.If(last_row):
                    m.d.sync += busy.eq(0)
            with m.Else():
                step = addr + (cap << beat_shift)
                m.d.sync += [addr.eq(step), left.eq(left - cap), cap.eq(_page_cap(cfg, step))]
        with m.If(self.start):
            m.d.sync += [
                row_addr.eq(self.addr),
                addr.eq(self.addr),
                left.eq(self.row_beats),
                rows.eq(self.rows),
                last_row.eq(self.rows == 1),
                busy.eq(1),
                beats.eq(self.row_beats),
                stride.eq(self.row_stride),
                cap.eq(_page_cap(cfg, self.addr)),
            ]
        return m


def _watchdog(m: Module, cfg: AccelConfig, waiting, progress) -> Signal:
    """High once ``waiting`` has held for ``watchdog_cycles`` cycles without ``progress``."""
    count = Signal(range(cfg.watchdog_cycles + 1))
    with m.If(~waiting | progress):
        m.d.sync += count.eq(0)
    with m.Elif(count != cfg.watchdog_cycles):
        m.d.sync += count.eq(count + 1)
    return count == cfg.watchdog_cycles


class AxiReadPort(wiring.Component):
    """The AXI read master shared by ``clients`` (highest priority first).

    Bursts go out in request order; a small FIFO of (client, program index) per burst routes the
    in-order responses back. ``timeout`` names the client and instruction of the oldest stalled
    transfer; ``beat`` pulses for every data beat moved (outside ``drain``).
    """

    def __init__(self, cfg: AccelConfig, clients: tuple[Unit, ...]) -> None:
        if not clients or len(set(clients)) != len(clients):
            raise ValueError(f"read port clients must be distinct and non-empty, got {clients}")
        self.cfg, self.clients = cfg, clients
        members = {
            "axi": Out(AxiReadSignature(cfg.axi_addr_bits, cfg.axi_data_bits)),
            "drain": In(1),
            "quiet": Out(1),
            "beat": Out(1),
            "timeout": Out(FaultSignature()),
        }
        for u in clients:
            members[u.name.lower()] = In(ReadClientSignature(cfg))
        super().__init__(members)

    def client(self, unit: Unit) -> wiring.PureInterface:
        """The port of client ``unit``."""
        return getattr(self, unit.name.lower())

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, axi = self.cfg, self.axi
        tag_layout = data.StructLayout({"unit": UNIT_BITS, "pc": PC_BITS})
        m.submodules.tags = tags = SyncFIFO(width=tag_layout.size, depth=cfg.max_outstanding)
        head = data.View(tag_layout, tags.r_data)

        ar_valid = Signal()
        ar = Signal(burst_layout(cfg))
        ar_tag = Signal(tag_layout)
        ar_fire = axi.arvalid & axi.arready
        r_fire = axi.rvalid & axi.rready
        m.d.comb += [
            axi.araddr.eq(ar.addr),
            axi.arlen.eq(ar.beats - 1),
            axi.arsize.eq(axi_size(cfg.axi_data_bits)),
            axi.arburst.eq(AXI_BURST_INCR),
            axi.arvalid.eq(ar_valid),
            axi.rready.eq(tags.r_rdy),
            tags.w_data.eq(ar_tag),
            tags.w_en.eq(ar_fire),
            tags.r_en.eq(r_fire & axi.rlast),
            self.quiet.eq(~ar_valid & ~tags.r_rdy),
            self.beat.eq(r_fire & ~self.drain),
        ]
        room = tags.level + ar_valid < cfg.max_outstanding
        can_take = ~self.drain & (~ar_valid | ar_fire) & room
        with m.If(ar_fire):
            m.d.sync += ar_valid.eq(0)
        granted = Const(0)
        for u in self.clients:
            c = self.client(u)
            m.d.comb += [
                c.beat.valid.eq(r_fire & (head.unit == u) & ~self.drain),
                c.beat.data.eq(axi.rdata),
                c.beat.err.eq(axi.rresp != AXI_RESP_OKAY),
                c.req.ready.eq(can_take & ~granted),
            ]
            with m.If(can_take & ~granted & c.req.valid):
                m.d.sync += [ar_valid.eq(1), ar.eq(c.req.payload), ar_tag.unit.eq(u)]
                m.d.sync += ar_tag.pc.eq(c.pc)
            granted = granted | c.req.valid

        stalled = _watchdog(m, cfg, ~self.quiet, ar_fire | r_fire)
        m.d.comb += [
            self.timeout.valid.eq(stalled),
            self.timeout.code.eq(Error.AXI_TIMEOUT),
            self.timeout.unit.eq(Mux(tags.r_rdy, head.unit, ar_tag.unit)),
            self.timeout.pc.eq(Mux(tags.r_rdy, head.pc, ar_tag.pc)),
        ]
        return m


class AxiWritePort(wiring.Component):
    """The AXI write master of the store unit.

    W beats of a burst go out only after its AW handshake; WLAST comes from a FIFO of the accepted
    bursts' last beat indices (length - 1: the beat counter compares without subtracting).
    ``client.busy`` stays high until every write response is back; a response other than OKAY
    pulses ``client.err``.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                "axi": Out(AxiWriteSignature(cfg.axi_addr_bits, cfg.axi_data_bits)),
                "client": In(WriteClientSignature(cfg)),
                "drain": In(1),
                "quiet": Out(1),
                "beat": Out(1),
                "timeout": Out(FaultSignature()),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, axi, c = self.cfg, self.axi, self.client
        blay = burst_layout(cfg)
        m.submodules.lens = lens = SyncFIFO(
            width=Shape.cast(blay["beats"].shape).width, depth=cfg.max_outstanding
        )

        aw_valid = Signal()
        aw = Signal(blay)
        b_wait = Signal(range(cfg.max_outstanding + 1))
        w_pos = Signal(range(cfg.max_burst))
        aw_fire = axi.awvalid & axi.awready
        w_fire = axi.wvalid & axi.wready
        b_fire = axi.bvalid & axi.bready
        w_last = w_pos == lens.r_data
        busy = aw_valid | lens.r_rdy | (b_wait != 0)
        m.d.comb += [
            axi.awaddr.eq(aw.addr),
            axi.awlen.eq(aw.beats - 1),
            axi.awsize.eq(axi_size(cfg.axi_data_bits)),
            axi.awburst.eq(AXI_BURST_INCR),
            axi.awvalid.eq(aw_valid),
            axi.wdata.eq(c.data.payload),
            axi.wstrb.eq(-1),
            axi.wlast.eq(w_last),
            axi.wvalid.eq(lens.r_rdy & c.data.valid),
            c.data.ready.eq(lens.r_rdy & axi.wready),
            axi.bready.eq(b_wait != 0),
            lens.w_data.eq(aw.beats - 1),
            lens.w_en.eq(aw_fire),
            lens.r_en.eq(w_fire & w_last),
            c.busy.eq(busy),
            c.err.eq(b_fire & (axi.bresp != AXI_RESP_OKAY) & ~self.drain),
            self.quiet.eq(~busy),
            self.beat.eq(w_fire & ~self.drain),
        ]
        room = aw_valid + lens.level + b_wait < cfg.max_outstanding
        m.d.comb += c.req.ready.eq(~self.drain & (~aw_valid | aw_fire) & room)
        with m.If(aw_fire):
            m.d.sync += aw_valid.eq(0)
        with m.If(c.req.valid & c.req.ready):
            m.d.sync += [aw_valid.eq(1), aw.eq(c.req.payload)]
        with m.If(w_fire):
            m.d.sync += w_pos.eq(Mux(w_last, 0, w_pos + 1))
        m.d.sync += b_wait.eq(b_wait + (w_fire & w_last) - b_fire)

        stalled = _watchdog(m, cfg, busy, aw_fire | w_fire | b_fire)
        m.d.comb += [
            self.timeout.valid.eq(stalled),
            self.timeout.code.eq(Error.AXI_TIMEOUT),
            self.timeout.unit.eq(Unit.STORE),
            self.timeout.pc.eq(c.pc),
        ]
        return m
