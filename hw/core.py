"""The accelerator: instruction fetch/decode, DMA, buffers, MAC pipeline, requantisation.

Execution is one instruction at a time (see ``arch.isa`` for the semantics). GEMM is a three-stage
pipeline: issue (buffer addresses), dot products of the array, accumulate; a finished output
vector is handed to the requant unit, which runs ``requant_lanes`` rows per cycle while the array
goes on with the next output. The issue stage spaces output vectors so the requant unit is free
when the next one arrives, so nothing ever stalls and no back-pressure is needed.
"""

from __future__ import annotations

import contextlib

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from ..arch import AccelConfig
from ..arch.isa import Buf, Error, Opcode, layout
from ..arch.layout import BUF_ENTRY, Q_ROW_BITS, Entry, entry_beats, entry_bits
from ..arch.numerics import BIAS_BITS, MULT_BITS, SHIFT_BITS
from ..arch.regs import AXIL_ADDR_BITS
from .axi import axi_read_master, axi_write_master, axil_slave
from .csr import Csr
from .dma import BEAT_COUNT_BITS, AxiReader, AxiWriter
from .mac_array import MacArray
from .requant import RequantLane

WORD = 32
OFFSET_BITS = 40
"""Width of window-offset arithmetic (beat offsets are 32 bits, i.e. 35-bit byte offsets)."""


class Accelerator(wiring.Component):
    """Top level: ``s_axil_*`` control slave, ``m_axi_*`` memory master, ``irq`` (done or error)."""

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                **axil_slave("s_axil", AXIL_ADDR_BITS),
                **axi_read_master("m_axi", cfg.axi_addr_bits, cfg.axi_data_bits),
                **axi_write_master("m_axi", cfg.axi_addr_bits, cfg.axi_data_bits),
                "irq": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:  # noqa: C901 - one FSM, kept in one place
        m = Module()
        cfg = self.cfg
        beat = cfg.axi_data_bits
        bb = beat // 8
        ins_bytes = cfg.insn_bits // 8
        beats = {k: entry_beats(cfg, k) for k in Entry}
        insn_beats = cfg.insn_bits // beat
        max_beats = max([*beats.values(), insn_beats])
        depth = {Buf.W: cfg.w_depth, Buf.X: cfg.x_depth, Buf.Q: cfg.q_depth}
        lay = layout(cfg)
        rows, lanes = cfg.rows, cfg.requant_lanes
        n_groups = rows // lanes

        m.submodules.csr = csr = Csr(cfg)
        m.submodules.rd = rd = AxiReader(cfg)
        m.submodules.wr = wr = AxiWriter(cfg)
        m.submodules.array = arr = MacArray(cfg)
        for name in self.signature.members:
            if name.startswith("s_axil_"):
                port, sub = getattr(self, name), getattr(csr, name)
                if self.signature.members[name].flow == wiring.In:
                    m.d.comb += sub.eq(port)
                else:
                    m.d.comb += port.eq(sub)
        for sub in (rd, wr):
            for name, mem in sub.signature.members.items():
                if name.startswith("m_axi_"):
                    port, s = getattr(self, name), getattr(sub, name)
                    if mem.flow == wiring.In:
                        m.d.comb += s.eq(port)
                    else:
                        m.d.comb += port.eq(s)

        # Buffers.
        def mem(name: str, width: int, d: int) -> Memory:
            mm = Memory(shape=unsigned(width), depth=d, init=[])
            m.submodules[name] = mm
            return mm

        wmem = mem("wbuf", entry_bits(cfg, Entry.W), cfg.w_depth)
        xmem = mem("xbuf", entry_bits(cfg, Entry.X), cfg.x_depth)
        qmem = mem("qbuf", entry_bits(cfg, Entry.Q), cfg.q_depth)
        amem = mem("accbuf", rows * cfg.acc_bits, cfg.acc_depth)
        omem = mem("obuf", entry_bits(cfg, Entry.OUT), cfg.out_depth)
        w_rd, x_rd, q_rd, a_rd, o_rd = (b.read_port() for b in (wmem, xmem, qmem, amem, omem))
        w_wr, x_wr, q_wr, a_wr, o_wr = (b.write_port() for b in (wmem, xmem, qmem, amem, omem))

        # Run state, counters, status.
        busy = Signal()
        done = Signal()
        err = Signal(range(max(Error) + 1))
        pc = Signal(WORD)
        cycles = Signal(2 * WORD)
        mac_cycles = Signal(WORD)
        dma_beats = Signal(WORD)
        insn = Signal(cfg.insn_bits)
        m.d.comb += [
            csr.status.eq(Cat(busy, done, err != 0)),
            csr.error.eq(err),
            csr.pc.eq(pc),
            csr.cycles_lo.eq(cycles[:WORD]),
            csr.cycles_hi.eq(cycles[WORD:]),
            csr.mac_cycles.eq(mac_cycles),
            csr.dma_beats.eq(dma_beats),
            self.irq.eq(done),
        ]
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(rd.valid | (self.m_axi_wvalid & self.m_axi_wready)):
            m.d.sync += dma_beats.eq(dma_beats + 1)

        def field(op: Opcode, name: str):
            f = lay[op][name]
            v = insn[f.offset : f.offset + f.width]
            return v.as_signed() if f.signed else v

        opcode = insn[:4]

        # DMA window check: [off, off + nbytes) must lie inside [0, LIMIT - BASE).
        win_size = Signal(OFFSET_BITS)
        win_ok = Signal()
        m.d.comb += [
            win_size.eq(csr.window_limit - csr.window_base),
            win_ok.eq(csr.window_limit >= csr.window_base),
        ]

        def in_window(off, nbytes):
            return win_ok & (off + nbytes <= win_size)

        # Inbound beats are shifted in from the top of an assembly register.
        asm = Signal(max_beats * beat)
        asm_next = Signal(max_beats * beat)
        m.d.comb += asm_next.eq(Cat(asm[beat:], rd.data))
        with m.If(rd.valid):
            m.d.sync += asm.eq(asm_next)

        def top_slice(sig, nbeats: int, width: int):
            lo = (max_beats - nbeats) * beat
            return sig[lo : lo + width]

        # LOAD state.
        ld_buf = Signal(2)
        ld_addr = Signal(range(max(depth.values()) + 1))
        ld_beat = Signal(range(max_beats + 1))
        ld_beats = Signal(range(max_beats + 1))

        # STORE state.
        o_ptr = Signal(range(cfg.out_depth + 1))
        st_left = Signal(range(cfg.out_depth + 1))
        st_have = Signal(range(beats[Entry.OUT] + 1))
        st_loading = Signal()
        sreg = Signal(beats[Entry.OUT] * beat)
        m.d.comb += o_rd.addr.eq(o_ptr)

        # GEMM state.
        reset = field(Opcode.GEMM, "reset")
        final = field(Opcode.GEMM, "final")
        w_base = field(Opcode.GEMM, "w_base")
        x_base = field(Opcode.GEMM, "x_base")
        acc_base = field(Opcode.GEMM, "acc_base")
        o_base = field(Opcode.GEMM, "o_base")
        q_base = field(Opcode.GEMM, "q_base")
        m_count = field(Opcode.GEMM, "m_count")
        k_count = field(Opcode.GEMM, "k_count")
        lo = field(Opcode.GEMM, "lo")
        hi = field(Opcode.GEMM, "hi")
        m_i = Signal.like(m_count)
        k_i = Signal.like(k_count)
        x_addr = Signal(range(cfg.x_depth + 1))
        issuing = Signal()
        issue_done = Signal()
        gap = Signal(range(n_groups + 1))
        is_last = k_i == k_count - 1
        can_issue = ~(final & is_last & (gap < n_groups))
        fire = Signal()
        m.d.comb += [
            fire.eq(issuing & ~issue_done & can_issue),
            w_rd.addr.eq(w_base + k_i),
            x_rd.addr.eq(x_addr),
            a_rd.addr.eq(acc_base + m_i),
            q_rd.addr.eq(q_base),
            arr.w.eq(w_rd.data),
            arr.x.eq(x_rd.data),
        ]
        acc_layout = data.ArrayLayout(signed(cfg.acc_bits), rows)
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_m = Signal.like(m_count)
        s2_valid, s2_first, s2_last = Signal(), Signal(), Signal()
        s2_m = Signal.like(m_count)
        s2_dot = Signal(acc_layout)
        s2_init = Signal(acc_layout)
        acc = Signal(acc_layout)
        total = Signal(acc_layout)
        a_rd_view = data.View(acc_layout, a_rd.data)
        with m.If(fire):
            m.d.sync += mac_cycles.eq(mac_cycles + 1)
            with m.If(is_last):
                m.d.sync += [k_i.eq(0), m_i.eq(m_i + 1)]
                with m.If(m_i == m_count - 1):
                    m.d.sync += issue_done.eq(1)
            with m.Else():
                m.d.sync += k_i.eq(k_i + 1)
            m.d.sync += x_addr.eq(x_addr + 1)
        m.d.sync += [
            s1_valid.eq(fire),
            s1_first.eq(k_i == 0),
            s1_last.eq(is_last),
            s1_m.eq(m_i),
            s2_valid.eq(s1_valid),
            s2_first.eq(s1_first),
            s2_last.eq(s1_last),
            s2_m.eq(s1_m),
            s2_dot.eq(arr.dots),
            s2_init.eq(Mux(reset, 0, a_rd_view.as_value())),
            gap.eq(Mux(fire & is_last, 1, Mux(gap < n_groups, gap + 1, gap))),
        ]
        for r in range(rows):
            m.d.comb += total[r].eq(Mux(s2_first, s2_init[r], acc[r]) + s2_dot[r])
        with m.If(s2_valid):
            m.d.sync += acc.eq(total)
        m.d.comb += [a_wr.addr.eq(acc_base + s2_m), a_wr.data.eq(total.as_value())]
        m.d.comb += a_wr.en.eq(s2_valid & s2_last & ~final)

        # Requant unit: one group of `lanes` rows per cycle.
        qreg = Signal(entry_bits(cfg, Entry.Q))
        hold = Signal(acc_layout)
        rq_busy = Signal()
        rq_g = Signal(range(n_groups))
        rq_m = Signal.like(m_count)
        wr_pending = Signal()
        wr_addr = Signal.like(o_base)
        out_lay = data.ArrayLayout(signed(cfg.act_bits), rows)
        staging = Signal(out_lay)
        for lane in range(lanes):
            ln = RequantLane(cfg.acc_bits, cfg.act_bits)
            m.submodules[f"rq{lane}"] = ln
            sel_acc = Signal(signed(cfg.acc_bits))
            sel_q = Signal(Q_ROW_BITS)
            with m.Switch(rq_g):
                for g in range(n_groups):
                    r = g * lanes + lane
                    with m.Case(g):
                        m.d.comb += [
                            sel_acc.eq(hold[r]),
                            sel_q.eq(qreg[r * Q_ROW_BITS : (r + 1) * Q_ROW_BITS]),
                        ]
                        with m.If(rq_busy):
                            m.d.sync += staging[r].eq(ln.out)
            m.d.comb += [
                ln.acc.eq(sel_acc),
                ln.bias.eq(sel_q[:BIAS_BITS]),
                ln.mult.eq(sel_q[BIAS_BITS : BIAS_BITS + MULT_BITS]),
                ln.shift.eq(sel_q[BIAS_BITS + MULT_BITS : BIAS_BITS + MULT_BITS + SHIFT_BITS]),
                ln.lo.eq(lo),
                ln.hi.eq(hi),
            ]
        rq_finish = rq_busy & (rq_g == n_groups - 1)
        with m.If(rq_busy):
            m.d.sync += rq_g.eq(rq_g + 1)
        with m.If(rq_finish):
            m.d.sync += [rq_busy.eq(0), wr_addr.eq(o_base + rq_m)]
        m.d.sync += wr_pending.eq(rq_finish)
        with m.If(s2_valid & s2_last & final):
            m.d.sync += [hold.eq(total), rq_busy.eq(1), rq_g.eq(0), rq_m.eq(s2_m)]
        gemm_idle = ~s1_valid & ~s2_valid & ~rq_busy & ~wr_pending

        # Output buffer write port: requant results; read port feeds STORE.
        m.d.comb += [
            o_wr.addr.eq(wr_addr),
            o_wr.data.eq(staging.as_value()),
            o_wr.en.eq(wr_pending),
        ]

        # Load write ports.
        entry_done = rd.valid & (ld_beat == ld_beats - 1)
        for b, port in ((Buf.W, w_wr), (Buf.X, x_wr), (Buf.Q, q_wr)):
            kind = BUF_ENTRY[b]
            m.d.comb += [
                port.addr.eq(ld_addr),
                port.data.eq(top_slice(asm_next, beats[kind], entry_bits(cfg, kind))),
            ]

        # Store beat source.
        st_push = (st_have != 0) & wr.ready
        st_issue = (st_left != 0) & ~st_loading & ((st_have == 0) | ((st_have == 1) & st_push))
        m.d.comb += [wr.data.eq(sreg[:beat]), wr.valid.eq(st_have != 0)]

        # Decode-time operand checks.
        ld_depth = Signal(range(max(depth.values()) + 1))
        ld_nbeats = Signal(range(max_beats + 1))
        with m.Switch(field(Opcode.LOAD, "buf")):
            for b in Buf:
                with m.Case(b):
                    kind = BUF_ENTRY[b]
                    m.d.comb += [ld_depth.eq(depth[b]), ld_nbeats.eq(beats[kind])]
        ld_count = field(Opcode.LOAD, "count")
        ld_total = Signal(BEAT_COUNT_BITS)
        m.d.comb += ld_total.eq(ld_count * ld_nbeats)
        ld_off = Signal(OFFSET_BITS)
        m.d.comb += ld_off.eq(field(Opcode.LOAD, "dram") * bb)
        ld_bad = (
            (ld_count == 0) | (ld_depth == 0) | (field(Opcode.LOAD, "sram") + ld_count > ld_depth)
        )
        st_count = field(Opcode.STORE, "count")
        st_total = Signal(BEAT_COUNT_BITS)
        m.d.comb += st_total.eq(st_count * beats[Entry.OUT])
        st_off = Signal(OFFSET_BITS)
        m.d.comb += st_off.eq(field(Opcode.STORE, "dram") * bb)
        st_bad = (st_count == 0) | (field(Opcode.STORE, "sram") + st_count > cfg.out_depth)
        x_span = Signal(range(cfg.x_depth * 2 + (1 << (len(m_count) + len(k_count)))))
        m.d.comb += x_span.eq(x_base + m_count * k_count)
        uses_acc = ~reset | ~final
        gemm_bad = (
            (m_count == 0)
            | (k_count == 0)
            | (w_base + k_count > cfg.w_depth)
            | (x_span > cfg.x_depth)
            | (lo > hi)
            | (uses_acc & (acc_base + m_count > cfg.acc_depth))
            | (final & (o_base + m_count > cfg.out_depth))
        )
        insn_off = Signal(OFFSET_BITS)
        m.d.comb += insn_off.eq(csr.insn_addr + pc * ins_bytes)

        def fail(code: Error):
            m.d.sync += err.eq(code)
            m.next = "FINISH"

        @contextlib.contextmanager
        def dma_start(engine, bad, off, total):
            """Check operands and the window, then start ``engine``; the body runs on success."""
            with m.If(bad):
                fail(Error.BAD_OPERAND)
            with m.Elif(~in_window(off, total * bb)):
                fail(Error.DMA_WINDOW)
            with m.Else():
                m.d.comb += [
                    engine.start.eq(1),
                    engine.addr.eq(csr.window_base + off),
                    engine.beats.eq(total),
                ]
                yield

        with m.FSM():
            with m.State("IDLE"):
                with m.If(csr.start):
                    m.d.sync += [
                        busy.eq(1),
                        done.eq(0),
                        err.eq(0),
                        pc.eq(0),
                        cycles.eq(0),
                        mac_cycles.eq(0),
                        dma_beats.eq(0),
                    ]
                    with m.If(csr.insn_count == 0):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("FETCH"):
                with m.If(in_window(insn_off, ins_bytes)):
                    m.d.comb += [
                        rd.start.eq(1),
                        rd.addr.eq(csr.window_base + insn_off),
                        rd.beats.eq(insn_beats),
                    ]
                    m.next = "FETCH_WAIT"
                with m.Else():
                    fail(Error.DMA_WINDOW)
            with m.State("FETCH_WAIT"):
                with m.If(~rd.busy):
                    with m.If(rd.err):
                        fail(Error.AXI_RESP)
                    with m.Else():
                        m.d.sync += insn.eq(top_slice(asm, insn_beats, cfg.insn_bits))
                        m.next = "DECODE"
            with m.State("DECODE"):
                with m.Switch(opcode):
                    with m.Case(Opcode.LOAD):
                        with dma_start(rd, ld_bad, ld_off, ld_total):
                            m.d.sync += [
                                ld_buf.eq(field(Opcode.LOAD, "buf")),
                                ld_addr.eq(field(Opcode.LOAD, "sram")),
                                ld_beat.eq(0),
                                ld_beats.eq(ld_nbeats),
                            ]
                            m.next = "LOAD"
                    with m.Case(Opcode.STORE):
                        with dma_start(wr, st_bad, st_off, st_total):
                            m.d.sync += [
                                o_ptr.eq(field(Opcode.STORE, "sram")),
                                st_left.eq(st_count),
                                st_have.eq(0),
                                st_loading.eq(0),
                            ]
                            m.next = "STORE"
                    with m.Case(Opcode.GEMM):
                        with m.If(gemm_bad):
                            fail(Error.BAD_OPERAND)
                        with m.Else():
                            m.d.sync += [
                                m_i.eq(0),
                                k_i.eq(0),
                                x_addr.eq(x_base),
                                issue_done.eq(0),
                                gap.eq(n_groups),
                            ]
                            m.next = "GEMM_Q"
                    with m.Default():
                        fail(Error.ILLEGAL_OPCODE)
            with m.State("LOAD"):
                with m.If(rd.valid):
                    m.d.sync += ld_beat.eq(Mux(entry_done, 0, ld_beat + 1))
                    with m.If(entry_done):
                        m.d.sync += ld_addr.eq(ld_addr + 1)
                        m.d.comb += [
                            w_wr.en.eq(ld_buf == Buf.W),
                            x_wr.en.eq(ld_buf == Buf.X),
                            q_wr.en.eq(ld_buf == Buf.Q),
                        ]
                with m.If(~rd.busy):
                    with m.If(rd.err):
                        fail(Error.AXI_RESP)
                    with m.Else():
                        m.next = "NEXT"
            with m.State("STORE"):
                with m.If(st_loading):
                    m.d.sync += [sreg.eq(o_rd.data), st_have.eq(beats[Entry.OUT])]
                with m.Elif(st_push):
                    m.d.sync += [sreg.eq(sreg >> beat), st_have.eq(st_have - 1)]
                m.d.sync += st_loading.eq(st_issue)
                with m.If(st_issue):
                    m.d.sync += [o_ptr.eq(o_ptr + 1), st_left.eq(st_left - 1)]
                with m.If(~wr.busy):
                    with m.If(wr.err):
                        fail(Error.AXI_RESP)
                    with m.Else():
                        m.next = "NEXT"
            with m.State("GEMM_Q"):
                m.d.sync += [qreg.eq(q_rd.data), issuing.eq(1)]
                m.next = "GEMM"
            with m.State("GEMM"):
                with m.If(issue_done & gemm_idle):
                    m.d.sync += issuing.eq(0)
                    m.next = "NEXT"
            with m.State("NEXT"):
                m.d.sync += pc.eq(pc + 1)
                with m.If(pc + 1 == csr.insn_count):
                    m.next = "FINISH"
                with m.Else():
                    m.next = "FETCH"
            with m.State("FINISH"):
                m.d.sync += [busy.eq(0), done.eq(1)]
                m.next = "IDLE"
        return m
