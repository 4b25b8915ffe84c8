"""The store unit: STORE copies a 2-D block of OUT entries to the DMA window.

OUT entry ``sram + y*x_size + x`` goes to entry ``y*x_stride + x`` after beat offset ``dram``.
Bursts are requested row after row (BurstGen) while the entries stream out of the OUT buffer one
beat per cycle: the read port prefetches the next entry while the current one shifts out. The
instruction finishes when every write response is back; an error response stops the run
(AXI_RESP) at this instruction.
"""

from __future__ import annotations

from amaranth import Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from ..arch.isa import Error, Opcode, Unit
from ..arch.layout import Entry, entry_beats, entry_bytes
from .arith import small_mul
from .buffers import Buffer, read_sig
from .dma import BurstGen, WriteClientSignature
from .queues import FaultSignature, command_layout, field, sequence, token_members


class Store(wiring.Component):
    """The store unit.

    Between runs it is held in reset only once the write port is quiet, so that the W beats of
    bursts already addressed still go out after a fault.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                "cmd": In(stream.Signature(command_layout(cfg, Unit.STORE))),
                "wr": Out(WriteClientSignature(cfg)),
                "window_base": In(cfg.axi_addr_bits),
                "out_rd": In(read_sig(cfg, Buffer.OUT)),
                "fault": Out(FaultSignature()),
                "idle": Out(1),
                "blocked": Out(1),
                "working": Out(1),
                **token_members(Unit.STORE),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        data_bits = cfg.axi_data_bits
        nbeats = entry_beats(cfg, Entry.OUT)
        done = Signal()
        tokens = {n: getattr(self, n) for n in token_members(Unit.STORE)}
        seq = sequence(m, cfg, Unit.STORE, self.cmd, tokens, done)
        m.d.comb += [
            self.idle.eq(seq.idle),
            self.blocked.eq(seq.blocked),
            self.working.eq(seq.working),
            self.wr.pc.eq(seq.cmd.pc),
        ]

        def field_of(insn, name: str):
            return field(cfg, insn, Opcode.STORE, name)

        def f(name: str):
            return field_of(seq.cmd.insn, name)

        def block_addr(insn) -> Value:
            return self.window_base + small_mul(field_of(insn, "dram"), data_bits // 8)

        def row_stride(insn) -> Value:
            return small_mul(field_of(insn, "x_stride"), entry_bytes(cfg, Entry.OUT))

        # The block's address and row stride are formed as the command is taken
        # (``Sequence.prepare``), off the cycle it starts in.
        m.submodules.gen = gen = BurstGen(cfg)
        wiring.connect(m, wiring.flipped(self.wr.req), gen.req)
        m.d.comb += [
            gen.start.eq(seq.start),
            gen.addr.eq(seq.prepare(m, block_addr, "block_addr")),
            gen.rows.eq(f("y_size")),
            gen.row_beats.eq(small_mul(f("x_size"), nbeats)),
            gen.row_stride.eq(seq.prepare(m, row_stride, "row_stride")),
        ]

        # Entries: read (one cycle) into `ahead`, then shifted out beat by beat from `sreg`.
        col = Signal.like(f("x_size"))
        x_last = seq.prepare(m, lambda insn: field_of(insn, "x_size") - 1, "x_last")
        rows_left = Signal.like(f("y_size"))
        addr = Signal.like(f("sram"))
        ahead = Signal()
        sreg = Signal(nbeats * data_bits)
        have = Signal(range(nbeats + 1))
        out = self.wr.data
        send = out.valid & out.ready
        emptying = (have == 0) | ((have == 1) & send)
        refill = emptying & ahead
        issue = (rows_left != 0) & (~ahead | refill)
        m.d.comb += [
            out.valid.eq(have != 0),
            out.payload.eq(sreg[:data_bits]),
            self.out_rd.addr.eq(addr),
            self.out_rd.en.eq(issue),
        ]
        with m.If(refill):
            m.d.sync += [sreg.eq(self.out_rd.data), have.eq(nbeats)]
        with m.Elif(send):
            m.d.sync += [sreg.eq(sreg >> data_bits), have.eq(have - 1)]
        with m.If(issue):
            m.d.sync += [ahead.eq(1), addr.eq(addr + 1)]
            with m.If(col == x_last):
                m.d.sync += [col.eq(0), rows_left.eq(rows_left - 1)]
            with m.Else():
                m.d.sync += col.eq(col + 1)
        with m.Elif(refill):
            m.d.sync += ahead.eq(0)
        with m.If(seq.start):
            m.d.sync += [col.eq(0), rows_left.eq(f("y_size")), addr.eq(f("sram"))]
        m.d.comb += done.eq(
            seq.working & ~gen.busy & (rows_left == 0) & ~ahead & (have == 0) & ~self.wr.busy
        )

        m.d.comb += [
            self.fault.valid.eq(self.wr.err),
            self.fault.code.eq(Error.AXI_RESP),
            self.fault.unit.eq(Unit.STORE),
            self.fault.pc.eq(seq.cmd.pc),
        ]
        return m
