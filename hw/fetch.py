"""Fetch: read instructions in program order, check them (``arch.isa.check``), dispatch them.

Reads run ahead of dispatch by up to ``max_outstanding`` instructions (one read each, through
the shared read port). Each instruction then goes through ``Checker`` and, if legal, into its
unit's command queue with its program index, waiting while that queue is full. Fetch stops at
the first instruction that fails the check, that lies outside the window (DMA_WINDOW) or whose
read got an error response (AXI_RESP): those are reported in program order, so the end of a run
does not depend on how far reads ran ahead.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from ..arch.isa import OPCODE_BITS, UNIT_OF, Buf, Error, Opcode, Unit, buf_depth
from ..arch.layout import BUF_ENTRY, Entry, entry_beats
from ..arch.timing import CHECK_LATENCY
from .arith import log2_exact, small_mul
from .dma import BurstGen, ReadClientSignature
from .queues import ERROR_BITS, PC_BITS, command_layout, field

QUEUED_UNITS = (Unit.LOAD, Unit.COMPUTE, Unit.STORE)
"""Units with a command queue, in the order fetch's queue ports are declared."""


class Checker(wiring.Component):
    """``isa.check`` in hardware: ``err`` is the check of ``insn``, ``LATENCY`` cycles later.

    ``insn`` and ``window_bytes`` (WINDOW_LIMIT - WINDOW_BASE) must hold still meanwhile.
    Products are registered (DSP48 M registers), then sums, then comparisons; a range check
    ``base + n <= depth`` compares ``n`` with ``depth - base`` (registered), so no stage adds
    and then compares.
    """

    LATENCY = CHECK_LATENCY
    """Its four register stages below; the cycle model reads the same constant."""

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                "insn": In(cfg.insn_bits),
                "window_bytes": In(PC_BITS),
                "err": Out(ERROR_BITS),
            }
        )

    def elaborate(self, platform) -> Module:  # noqa: C901 - one table of checks
        m = Module()
        cfg, insn = self.cfg, self.insn
        beat_shift = log2_exact(cfg.axi_data_bits // 8)

        def f(op: Opcode, name: str) -> Value:
            return field(cfg, insn, op, name)

        def reg(value: Value, name: str) -> Signal:
            s = Signal.like(value, name=name)
            m.d.sync += s.eq(value)
            return s

        ld, sto, gm = Opcode.LOAD, Opcode.STORE, Opcode.GEMM
        op = insn[:OPCODE_BITS]
        is_load, is_store, is_gemm = (op == ld), (op == sto), (op == gm)
        legal = Cat(op == o for o in Opcode).any()
        tok_bad = (is_load & (f(ld, "pop_prev") | f(ld, "push_prev"))) | (
            is_store & (f(sto, "pop_next") | f(sto, "push_next"))
        )

        # LOAD / STORE: the block's fields (same names, different offsets), depth, entry size.
        def ls(name: str) -> Value:
            return Mux(is_load, f(ld, name), f(sto, name))

        ys, xs, st, sram, dram = (ls(n) for n in ("y_size", "x_size", "x_stride", "sram", "dram"))
        buf = f(ld, "buf")
        depth = Signal(range(max(cfg.out_depth, *(buf_depth(cfg, b) for b in Buf)) + 1))
        beats = Signal(range(max(entry_beats(cfg, k) for k in Entry) + 1))
        m.d.comb += [depth.eq(cfg.out_depth), beats.eq(entry_beats(cfg, Entry.OUT))]
        buf_ok = Signal()
        with m.If(is_load):
            m.d.comb += buf_ok.eq(0)
            with m.Switch(buf):
                for b in Buf:
                    with m.Case(b):
                        m.d.comb += [
                            buf_ok.eq(1),
                            depth.eq(buf_depth(cfg, b)),
                            beats.eq(entry_beats(cfg, BUF_ENTRY[b])),
                        ]
        with m.Else():
            m.d.comb += buf_ok.eq(1)

        # Stage 1: products and the simple conditions.
        s1_legal, s1_tok_bad = reg(legal, "s1_legal"), reg(tok_bad, "s1_tok_bad")
        s1_ls = reg(is_load | is_store, "s1_ls")
        s1_gemm = reg(is_gemm, "s1_gemm")
        s1_ls_bad = reg(~buf_ok | (ys < 1) | (xs < 1) | ((ys > 1) & (st < xs)), "s1_ls_bad")
        s1_area = reg(ys * xs, "s1_area")
        s1_span = reg((ys - 1) * st, "s1_span")
        s1_xs, s1_sram, s1_dram = reg(xs, "s1_xs"), reg(sram, "s1_sram"), reg(dram, "s1_dram")
        s1_depth, s1_beats = reg(depth, "s1_depth"), reg(beats, "s1_beats")
        c_count = f(gm, "c_count")
        s1_m = reg(f(gm, "oh_count") * f(gm, "ow_count"), "s1_m")
        s1_ck = reg(small_mul(c_count, f(gm, "kh")), "s1_ck")
        s1_cs = reg((c_count - 1) * f(gm, "c_stride"), "s1_cs")
        s1_tile = reg(f(gm, "tile_h") * f(gm, "tile_w"), "s1_tile")
        g_simple = (
            (f(gm, "stride_y") >= 1)
            & (f(gm, "stride_x") >= 1)
            & (f(gm, "tile_h") >= 1)
            & (f(gm, "tile_w") >= 1)
            & (f(gm, "q_base") < cfg.q_depth)
            & (f(gm, "lo") <= f(gm, "hi"))
            & (~f(gm, "max") | (f(gm, "reset") & f(gm, "final")))
            & (~f(gm, "res") | f(gm, "final"))
        )
        s1_g_simple = reg(g_simple, "s1_g_simple")

        # Stage 2: sums; the room each GEMM range has left above its base (base + n <= depth
        # becomes n <= depth - base, so stage 3 compares without adding first).
        s2_ls_bad = reg(s1_ls_bad | (s1_sram + s1_area > s1_depth), "s2_ls_bad")
        s2_block = reg(s1_span + s1_xs, "s2_block")
        s2_k = reg(small_mul(s1_ck, f(gm, "kw")), "s2_k")
        s2_x_end = reg(f(gm, "x_base") + s1_cs + s1_tile, "s2_x_end")
        s2_m = reg(s1_m, "s2_m")
        s2_g_simple = reg(s1_g_simple, "s2_g_simple")
        room = {
            name: reg(depth - f(gm, name), f"s2_{name}_room")
            for name, depth in (
                ("w_base", cfg.w_depth),
                ("acc_base", cfg.acc_depth),
                ("o_base", cfg.out_depth),
                ("r_base", cfg.out_depth),
            )
        }

        # Stage 3: the block's extent in beats and the window's room above the block's start
        # (in beats: end <= window_bytes <=> end/8 <= window_bytes // 8); the GEMM's ranges.
        s3_ls_bad = reg(s2_ls_bad, "s3_ls_bad")
        s3_extent = reg(s2_block * s1_beats, "s3_extent")
        s3_room = reg((self.window_bytes >> beat_shift) - s1_dram, "s3_room")
        reset, final = f(gm, "reset"), f(gm, "final")
        g_ok = (
            s2_g_simple
            & (s2_m >= 1)
            & (s2_k >= 1)
            & (s2_k <= room["w_base"])
            & (s2_x_end <= cfg.x_depth)
            & ((reset & final) | (s2_m <= room["acc_base"]))
            & (~final | (s2_m <= room["o_base"]))
            & (~f(gm, "res") | (s2_m <= room["r_base"]))
        )
        s3_g_ok = reg(g_ok, "s3_g_ok")

        # Stage 4: the window.
        in_window = s3_extent <= s3_room
        err = Mux(
            ~s1_legal,
            Error.ILLEGAL_OPCODE,
            Mux(
                s1_tok_bad,
                Error.BAD_OPERAND,
                Mux(
                    s1_ls,
                    Mux(s3_ls_bad, Error.BAD_OPERAND, Mux(in_window, Error.NONE, Error.DMA_WINDOW)),
                    Mux(~s1_gemm | s3_g_ok, Error.NONE, Error.BAD_OPERAND),
                ),
            ),
        )
        m.d.sync += self.err.eq(err)
        return m


class Fetch(wiring.Component):
    """Instruction fetch, check and dispatch for one run (held in reset between runs).

    ``insn_addr``, ``insn_count``, ``window_base`` and ``window_bytes`` are the run's registers.
    ``dispatched`` counts instructions dispatched; ``error`` is what fetch stopped on (NONE if it
    dispatched them all or has not stopped); ``stuck`` means it cannot make progress (stopped, or
    its next instruction's queue is full).
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        members = {
            "rd": Out(ReadClientSignature(cfg)),
            "insn_addr": In(PC_BITS),
            "insn_count": In(PC_BITS),
            "window_base": In(cfg.axi_addr_bits),
            "window_bytes": In(PC_BITS),
            "dispatched": Out(PC_BITS),
            "error": Out(ERROR_BITS),
            "stuck": Out(1),
        }
        for u in QUEUED_UNITS:
            members[f"{u.name.lower()}_q"] = Out(stream.Signature(command_layout(cfg, u)))
        super().__init__(members)

    def queue(self, unit: Unit) -> stream.Interface:
        """The port to ``unit``'s command queue."""
        return getattr(self, f"{unit.name.lower()}_q")

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        ahead = cfg.max_outstanding
        insn_bytes = cfg.insn_bits // 8
        insn_beats = cfg.insn_bits // cfg.axi_data_bits

        # Requests: one read per instruction while there is room for its data.
        m.submodules.gen = gen = BurstGen(cfg)
        m.submodules.ififo = ififo = SyncFIFO(width=cfg.insn_bits + 1, depth=ahead)
        req_idx = Signal(PC_BITS + 1)
        req_off = Signal(PC_BITS + 2)
        req_pc = Signal(PC_BITS)
        inflight = Signal(range(ahead + 1))
        off_window = Signal()
        taken = Signal()
        started = Signal(2)
        fits, more = Signal(), Signal()
        req_addr = Signal.like(self.window_base)
        wiring.connect(m, wiring.flipped(self.rd.req), gen.req)
        m.d.comb += self.rd.pc.eq(req_pc)
        # Registered: req_idx and req_off change only as a read starts, and the next start waits
        # until the burst generator has sent that read's request (``gen.busy``), a cycle or more.
        m.d.sync += [
            fits.eq(req_off + insn_bytes <= self.window_bytes),
            more.eq(req_idx < self.insn_count),
            req_addr.eq(self.window_base + req_off),
        ]
        want = more & ~off_window & started[1]
        with m.If(want & (inflight < ahead) & ~gen.busy):
            with m.If(fits):
                m.d.comb += [
                    gen.start.eq(1),
                    gen.addr.eq(req_addr),
                    gen.rows.eq(1),
                    gen.row_beats.eq(insn_beats),
                ]
                m.d.sync += [
                    req_pc.eq(req_idx),
                    req_idx.eq(req_idx + 1),
                    req_off.eq(req_off + insn_bytes),
                ]
            with m.Else():
                m.d.sync += off_window.eq(1)
        m.d.sync += started.eq(Cat(1, started[0]))
        m.d.sync += inflight.eq(inflight + gen.start - taken)
        with m.If(~started[0]):
            m.d.sync += req_off.eq(self.insn_addr)

        # Data: beats assemble into instructions (the first beat ends up lowest).
        asm = Signal(cfg.insn_bits)
        asm_err = Signal()
        pos = Signal(range(insn_beats))
        beat = self.rd.beat
        last = pos == insn_beats - 1
        m.d.comb += [
            ififo.w_data.eq(Cat(asm[cfg.axi_data_bits :], beat.data, asm_err | beat.err)),
            ififo.w_en.eq(beat.valid & last),
        ]
        with m.If(beat.valid):
            m.d.sync += [
                asm.eq(Cat(asm[cfg.axi_data_bits :], beat.data)),
                asm_err.eq(Mux(last, 0, asm_err | beat.err)),
                pos.eq(Mux(last, 0, pos + 1)),
            ]

        # Check and dispatch, one instruction at a time.
        m.submodules.checker = checker = Checker(cfg)
        insn = Signal(cfg.insn_bits)
        wait = Signal(range(Checker.LATENCY + 1))
        m.d.comb += [checker.insn.eq(insn), checker.window_bytes.eq(self.window_bytes)]
        op = insn[:OPCODE_BITS]
        target_ready = Signal()
        mine = {u: Cat(op == o for o, uu in UNIT_OF.items() if uu is u).any() for u in QUEUED_UNITS}
        for u in QUEUED_UNITS:
            q = self.queue(u)
            m.d.comb += [q.payload.insn.eq(insn), q.payload.pc.eq(self.dispatched)]
            with m.If(mine[u]):
                m.d.comb += target_ready.eq(q.ready)
        with m.FSM():
            with m.State("TAKE"):
                with m.If(self.dispatched == self.insn_count):
                    m.next = "STOP"
                with m.Elif(ififo.r_rdy):
                    m.d.comb += [ififo.r_en.eq(1), taken.eq(1)]
                    m.d.sync += [insn.eq(ififo.r_data[: cfg.insn_bits]), wait.eq(0)]
                    with m.If(ififo.r_data[-1]):
                        m.d.sync += self.error.eq(Error.AXI_RESP)
                        m.next = "STOP"
                    with m.Else():
                        m.next = "CHECK"
                with m.Elif(off_window & (inflight == 0)):
                    m.d.sync += self.error.eq(Error.DMA_WINDOW)
                    m.next = "STOP"
            with m.State("CHECK"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == Checker.LATENCY):
                    with m.If(checker.err != Error.NONE):
                        m.d.sync += self.error.eq(checker.err)
                        m.next = "STOP"
                    with m.Else():
                        m.next = "DISPATCH"
            with m.State("DISPATCH"):
                m.d.comb += [self.queue(u).valid.eq(mine[u]) for u in QUEUED_UNITS]
                m.d.comb += self.stuck.eq(~target_ready)
                with m.If(target_ready):
                    m.d.sync += self.dispatched.eq(self.dispatched + 1)
                    m.next = "TAKE"
            with m.State("STOP"):
                m.d.comb += self.stuck.eq(1)
        return m
