"""The load unit: LOAD copies a 2-D block of entries from the DMA window into W, X, Q or R.

Row y is ``x_size`` entries at entry offset ``y * x_stride`` from beat offset ``dram``; rows are
packed on chip from ``sram``. Every row's bursts are requested back to back (BurstGen) without
waiting for data; beats assemble into entries, each written to its buffer as its last beat
arrives. An error response stops the run (AXI_RESP) at this instruction.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from ..arch.isa import Buf, Error, Opcode, Unit
from ..arch.layout import BUF_ENTRY, Entry, entry_beats, entry_bits, entry_bytes
from .arith import small_mul
from .buffers import Buffer, write_sig
from .dma import BurstGen, ReadClientSignature
from .queues import FaultSignature, command_layout, field, sequence, token_members

BUF_OF: dict[Buf, Buffer] = {b: Buffer[b.name] for b in Buf}
"""The on-chip buffer each LOAD target names."""


class Load(wiring.Component):
    """The load unit (held in reset between runs)."""

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        members = {
            "cmd": In(stream.Signature(command_layout(cfg, Unit.LOAD))),
            "rd": Out(ReadClientSignature(cfg)),
            "window_base": In(cfg.axi_addr_bits),
            "fault": Out(FaultSignature()),
            "idle": Out(1),
            "blocked": Out(1),
            "working": Out(1),
            **token_members(Unit.LOAD),
        }
        for b, buf in BUF_OF.items():
            members[f"{b.name.lower()}_wr"] = In(write_sig(cfg, buf))
        super().__init__(members)

    def port(self, b: Buf) -> wiring.PureInterface:
        """The write port of buffer ``b``."""
        return getattr(self, f"{b.name.lower()}_wr")

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        data_bits = cfg.axi_data_bits
        done = Signal()
        tokens = {n: getattr(self, n) for n in token_members(Unit.LOAD)}
        seq = sequence(m, cfg, Unit.LOAD, self.cmd, tokens, done)
        m.d.comb += [
            self.idle.eq(seq.idle),
            self.blocked.eq(seq.blocked),
            self.working.eq(seq.working),
            self.rd.pc.eq(seq.cmd.pc),
        ]

        def field_of(insn, name: str):
            return field(cfg, insn, Opcode.LOAD, name)

        def f(name: str):
            return field_of(seq.cmd.insn, name)

        def per_buf(insn, value_of: Callable[[Entry], int]) -> Value:
            """``value_of(kind)`` of the instruction's target buffer's entry kind."""
            out = Const(0)
            for b in BUF_OF:
                out = Mux(field_of(insn, "buf") == b, value_of(BUF_ENTRY[b]), out)
            return out

        def block_addr(insn) -> Value:
            return self.window_base + small_mul(field_of(insn, "dram"), data_bits // 8)

        # One multiplier each (a DSP48 with its P register): the entry size depends on the
        # target buffer, and shift-and-add over a choice of constants is three carry chains deep.
        def row_beats(insn) -> Value:
            return field_of(insn, "x_size") * per_buf(insn, lambda k: entry_beats(cfg, k))

        def row_stride(insn) -> Value:
            return field_of(insn, "x_stride") * per_buf(insn, lambda k: entry_bytes(cfg, k))

        # Requests: every row's bursts, back to back. The block's address and sizes are formed
        # as the command is taken (``Sequence.prepare``), off the cycle it starts in.
        m.submodules.gen = gen = BurstGen(cfg)
        wiring.connect(m, wiring.flipped(self.rd.req), gen.req)
        buf = f("buf")
        m.d.comb += [
            gen.start.eq(seq.start),
            gen.addr.eq(seq.prepare(m, block_addr, "block_addr")),
            gen.rows.eq(f("y_size")),
            gen.row_beats.eq(seq.prepare(m, row_beats, "row_beats")),
            gen.row_stride.eq(seq.prepare(m, row_stride, "row_stride")),
        ]

        # Data: beats shift in from the top; an entry's last beat writes it.
        most = max(entry_beats(cfg, BUF_ENTRY[b]) for b in BUF_OF)
        asm = Signal(most * data_bits)
        asm_next = Cat(asm[data_bits:], self.rd.beat.data)
        pos = Signal(range(most))
        col = Signal.like(f("x_size"))
        x_last = seq.prepare(m, lambda insn: field_of(insn, "x_size") - 1, "x_last")
        rows_left = Signal.like(f("y_size"))
        addr = Signal.like(f("sram"))
        nbeats = Signal(range(most + 1))
        with m.Switch(buf):
            for b in BUF_OF:
                with m.Case(b):
                    m.d.comb += nbeats.eq(entry_beats(cfg, BUF_ENTRY[b]))
        beat = self.rd.beat
        entry_done = beat.valid & (pos == nbeats - 1)
        for b in BUF_OF:
            kind = BUF_ENTRY[b]
            lo = (most - entry_beats(cfg, kind)) * data_bits
            port = self.port(b)
            m.d.comb += [
                port.addr.eq(addr),
                port.data.eq(asm_next[lo : lo + entry_bits(cfg, kind)]),
                port.en.eq(entry_done & (buf == b)),
            ]
        with m.If(beat.valid):
            m.d.sync += [asm.eq(asm_next), pos.eq(Mux(entry_done, 0, pos + 1))]
        with m.If(entry_done):
            m.d.sync += addr.eq(addr + 1)
            with m.If(col == x_last):
                m.d.sync += [col.eq(0), rows_left.eq(rows_left - 1)]
            with m.Else():
                m.d.sync += col.eq(col + 1)
        with m.If(seq.start):
            m.d.sync += [pos.eq(0), col.eq(0), rows_left.eq(f("y_size")), addr.eq(f("sram"))]
        m.d.comb += done.eq(seq.working & (rows_left == 0))

        m.d.comb += [
            self.fault.valid.eq(beat.valid & beat.err),
            self.fault.code.eq(Error.AXI_RESP),
            self.fault.unit.eq(Unit.LOAD),
            self.fault.pc.eq(seq.cmd.pc),
        ]
        return m
