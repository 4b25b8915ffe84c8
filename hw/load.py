"""The load unit: LOAD copies a 2-D block of entries from the DMA window into W, X, Q or R.

Row y is ``x_size`` entries at entry offset ``y * x_stride`` from beat offset ``dram``; rows are
packed on chip from ``sram``. Every row's bursts are requested back to back (BurstGen) without
waiting for data; beats assemble into entries, each written to its buffer as its last beat
arrives. An error response stops the run (AXI_RESP) at this instruction.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from ..arch.isa import Buf, Error, Opcode, Unit
from ..arch.layout import BUF_ENTRY, entry_beats, entry_bits, entry_bytes
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

        def f(name: str):
            return field(cfg, seq.cmd.insn, Opcode.LOAD, name)

        # Requests: every row's bursts, back to back.
        m.submodules.gen = gen = BurstGen(cfg)
        wiring.connect(m, wiring.flipped(self.rd.req), gen.req)
        buf = f("buf")
        m.d.comb += [
            gen.start.eq(seq.start),
            gen.addr.eq(self.window_base + small_mul(f("dram"), data_bits // 8)),
            gen.rows.eq(f("y_size")),
        ]
        with m.Switch(buf):
            for b in BUF_OF:
                kind = BUF_ENTRY[b]
                with m.Case(b):
                    m.d.comb += [
                        gen.row_beats.eq(small_mul(f("x_size"), entry_beats(cfg, kind))),
                        gen.row_stride.eq(small_mul(f("x_stride"), entry_bytes(cfg, kind))),
                    ]

        # Data: beats shift in from the top; an entry's last beat writes it.
        most = max(entry_beats(cfg, BUF_ENTRY[b]) for b in BUF_OF)
        asm = Signal(most * data_bits)
        asm_next = Cat(asm[data_bits:], self.rd.beat.data)
        pos = Signal(range(most))
        col = Signal.like(f("x_size"))
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
            with m.If(col == f("x_size") - 1):
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
