"""The compute unit: GEMM (a convolution window walk) and SYNC.

GEMM issues one (W entry, X entry) pair per cycle into the MAC array, walking
``oy, ox, c, i, j`` (``arch.isa``). Every address is kept incrementally: the W address counts up
through ``(c*kh + i)*kw + j``; the X address, taken modulo ``x_depth`` (only in-tile addresses are
used), steps by 1 along a kernel row, by ``tile_w`` to the next row, by ``c_stride`` to the next
channel chunk, by ``stride_x`` / ``stride_y * tile_w`` to the next output. The tile coordinates
``y``, ``x`` are kept beside it and make the input zero outside the tile. The only products
(``pad_top * tile_w``, ``stride_y * tile_w``) are formed once, in setup, by shift-and-add.

Pipeline, in cycles after a pair issues: buffer reads (1), the MAC array (``MacArray.latency``),
accumulate (1). The accumulator starts from 0 or ACC; a finished output goes to ACC, or, if
``final``, to the requant unit: ``requant_lanes`` lanes take one group of rows per cycle, with
their parameters rotating through a register loaded once from Q, and the output entry is written
when its last group leaves the lanes. The array keeps issuing meanwhile; only outputs closer than
``rows / requant_lanes`` cycles apart (few MACs per output) are spaced out. An instruction ends
once the pipeline is empty.

``max`` (pooling): the X entry and its in-tile flag travel down a delay line from the buffer read
to the accumulate stage, which then keeps the running maximum instead of adding the array's dot
products: ``acc[r] = v`` on an output's first pair, else ``max(acc[r], v)``, with ``v`` lane r of
the X entry, or ``-2^(acc_bits-1)`` outside the tile (it never wins). The maximum is selected
behind the adder: the array's dot products leave the PE rows' output registers, so the add and
that select fit one cycle, and the compare-and-select loop has no carry chain of ``acc_bits``
(through the adder it was the core's worst path, 7.3 ns on a -1 part).
``res`` (residual): R[r_base + m] is read as the output's accumulator finishes, held
beside it and shifted group by group into the lanes' ``res`` inputs (zero without ``res``, so the
residual term vanishes); each row's ``res_mult`` comes from its Q row like the other parameters.
"""

from __future__ import annotations

from itertools import accumulate

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from ..arch.isa import CONV_STRIDE_BITS, OPCODE_BITS, Opcode, Unit, layout
from ..arch.layout import Q_FIELDS, Q_ROW_BITS
from ..arch.numerics import BIAS_BITS, MULT_BITS, SHIFT_BITS
from .arith import small_mul
from .buffers import Buffer, addr_width, read_sig, write_sig
from .mac_array import MacArray
from .queues import command_layout, field, sequence, token_members
from .requant import RequantLane


class Compute(wiring.Component):
    """The compute unit (held in reset between runs). ``mac`` is high when a pair issues."""

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        self.array = MacArray(cfg)
        super().__init__(
            {
                "cmd": In(stream.Signature(command_layout(cfg, Unit.COMPUTE))),
                "w_rd": In(read_sig(cfg, Buffer.W)),
                "x_rd": In(read_sig(cfg, Buffer.X)),
                "q_rd": In(read_sig(cfg, Buffer.Q)),
                "r_rd": In(read_sig(cfg, Buffer.R)),
                "acc_rd": In(read_sig(cfg, Buffer.ACC)),
                "acc_wr": In(write_sig(cfg, Buffer.ACC)),
                "out_wr": In(write_sig(cfg, Buffer.OUT)),
                "idle": Out(1),
                "blocked": Out(1),
                "working": Out(1),
                "mac": Out(1),
                **token_members(Unit.COMPUTE),
            }
        )

    def elaborate(self, platform) -> Module:  # noqa: C901 - one datapath, kept in one place
        m = Module()
        cfg = self.cfg
        rows, lanes = cfg.rows, cfg.requant_lanes
        groups = rows // lanes
        done = Signal()
        tokens = {n: getattr(self, n) for n in token_members(Unit.COMPUTE)}
        seq = sequence(m, cfg, Unit.COMPUTE, self.cmd, tokens, done)
        m.d.comb += [
            self.idle.eq(seq.idle),
            self.blocked.eq(seq.blocked),
            self.working.eq(seq.working),
        ]
        insn = seq.cmd.insn

        def f(name: str):
            return field(cfg, insn, Opcode.GEMM, name)

        is_gemm = insn[:OPCODE_BITS] == Opcode.GEMM
        reset, final = f("reset"), f("final")
        pool, res = f("max"), f("res")
        lo, hi = f("lo"), f("hi")

        # Walk state.
        lay = layout(cfg)[Opcode.GEMM]
        xab = addr_width(cfg, Buffer.X)
        coord = signed(
            max(lay["oh_count"].width + CONV_STRIDE_BITS, lay["tile_h"].width, lay["tile_w"].width)
            + 2
        )
        j, i = Signal.like(f("kw")), Signal.like(f("kh"))
        c = Signal.like(f("c_count"))
        ox, oy = Signal.like(f("ow_count")), Signal.like(f("oh_count"))
        x, y, bx, by = (Signal(coord, name=n) for n in ("x", "y", "bx", "by"))
        xa, xa_row, xa_chan, xa_pos, xa_posrow = (
            Signal(xab, name=n) for n in ("xa", "xa_row", "xa_chan", "xa_pos", "xa_posrow")
        )
        sy_tw = Signal(xab)
        w_addr = Signal(addr_width(cfg, Buffer.W))
        mdepth = max(cfg.acc_depth, cfg.out_depth)
        m_idx = Signal(range(mdepth))
        first = Signal()
        gap = Signal(range(groups + 1))
        qreg = Signal(rows * Q_ROW_BITS)

        # Each loop's last index, registered from the command like sy_tw: the compares that end
        # the loops are then plain equalities, off the walk's critical path.
        ends = {}
        for name in ("kw", "kh", "c_count", "ow_count", "oh_count"):
            ends[name] = Signal.like(f(name), name=f"{name}_last")
            m.d.sync += ends[name].eq(f(name) - 1)
        last_j, last_i = j == ends["kw"], i == ends["kh"]
        last_c = c == ends["c_count"]
        last_ox, last_oy = ox == ends["ow_count"], oy == ends["oh_count"]
        last = last_j & last_i & last_c
        in_tile = (y >= 0) & (y < f("tile_h")) & (x >= 0) & (x < f("tile_w"))
        issuing = Signal()
        fire = Signal()
        m.d.comb += [
            fire.eq(issuing & ~(final & last & (gap < groups))),
            self.mac.eq(fire),
            self.w_rd.addr.eq(w_addr),
            self.x_rd.addr.eq(xa),
            self.q_rd.addr.eq(f("q_base")),
        ]

        # Pipeline: stage k holds the pair issued k cycles ago.
        step = data.StructLayout({"valid": 1, "in_tile": 1, "first": 1, "last": 1, "m": len(m_idx)})
        array = m.submodules.array = self.array
        acc_stage = 1 + array.latency
        pipe = [Signal(step, name="issue")]
        m.d.comb += [
            pipe[0].valid.eq(fire),
            pipe[0].in_tile.eq(in_tile),
            pipe[0].first.eq(first),
            pipe[0].last.eq(last),
            pipe[0].m.eq(m_idx),
        ]
        for k in range(1, acc_stage + 2):
            pipe.append(Signal(step, name=f"stage{k}"))
            m.d.sync += pipe[k].eq(pipe[k - 1])
        m.d.comb += [
            array.w.eq(self.w_rd.data),
            array.x.eq(self.x_rd.data),
            array.x_valid.eq(pipe[1].in_tile),
        ]
        x_line = self.x_rd.data
        for k in range(2, acc_stage + 1):
            x_next = Signal.like(x_line, name=f"x_stage{k}")
            m.d.sync += x_next.eq(x_line)
            x_line = x_next

        # Accumulate: from 0 or ACC, into `acc`; or the running maximum. ACC is read two cycles
        # ahead and its data registered: a block RAM's clock-to-out (2.45 ns on a -1 part) in
        # front of the select and the add took 6.9 ns.
        acc_layout = data.ArrayLayout(signed(cfg.acc_bits), rows)
        lanes_of_x = data.ArrayLayout(signed(cfg.act_bits), cfg.cols)
        acc = Signal(acc_layout)
        acc_init = Signal.like(self.acc_rd.data)
        m.d.sync += acc_init.eq(self.acc_rd.data)
        init = data.View(acc_layout, acc_init)
        s = pipe[acc_stage]
        xs = data.View(lanes_of_x, x_line)
        m.d.comb += self.acc_rd.addr.eq(f("acc_base") + pipe[acc_stage - 2].m)
        with m.If(s.valid):
            for r in range(rows):
                start = Mux(s.first, Mux(reset, 0, init[r]), acc[r])
                v = Mux(s.in_tile, xs[r], -(1 << (cfg.acc_bits - 1)))
                # While pooling, acc[r] holds an activation or -2^(acc_bits-1) (``max`` needs
                # ``reset``: an output's first pair sets it), so x > acc[r] is a compare of
                # act_bits, or acc[r] is the low end: not the sign extension of its low bits.
                low, high = acc[r][: cfg.act_bits].as_signed(), acc[r][cfg.act_bits - 1 :]
                at_bottom = high.any() & ~high.all()
                top = Mux(s.first | (s.in_tile & (at_bottom | (xs[r] > low))), v, acc[r])
                m.d.sync += acc[r].eq(Mux(pool, top, start + array.dots[r]))
        done_out = pipe[acc_stage + 1]
        finished = done_out.valid & done_out.last
        m.d.comb += [
            self.acc_wr.addr.eq(f("acc_base") + done_out.m),
            self.acc_wr.data.eq(acc),
            self.acc_wr.en.eq(finished & ~final),
        ]

        # Requant: `groups` cycles per output, `lanes` rows per cycle. R is read like ACC, so
        # that its entry arrives with the finished accumulator.
        hold = Signal(acc_layout)
        res_hold = Signal(lanes_of_x)
        left = Signal(range(groups + 1))
        rq_m = Signal.like(m_idx)
        feeding = left != 0
        m.d.comb += self.r_rd.addr.eq(f("r_base") + s.m)
        with m.If(feeding):
            m.d.sync += [
                hold.eq(hold.as_value() >> (lanes * cfg.acc_bits)),
                res_hold.eq(res_hold.as_value() >> (lanes * cfg.act_bits)),
                qreg.eq(qreg.rotate_right(lanes * Q_ROW_BITS)),
                left.eq(left - 1),
            ]
        with m.If(finished & final):
            m.d.sync += [
                hold.eq(acc),
                res_hold.eq(Mux(res, self.r_rd.data, 0)),
                left.eq(groups),
                rq_m.eq(done_out.m),
            ]
        side = data.StructLayout({"valid": 1, "last": 1, "m": len(m_idx)})
        tags = [Signal(side, name="rq_in")]
        m.d.comb += [tags[0].valid.eq(feeding), tags[0].last.eq(left == 1), tags[0].m.eq(rq_m)]
        for k in range(RequantLane.LATENCY):
            tags.append(Signal(side, name=f"rq_stage{k + 1}"))
            m.d.sync += tags[-1].eq(tags[-2])
        outs = []
        bias_at, mult_at, shift_at, res_mult_at, _ = accumulate((0, *Q_FIELDS))
        for lane in range(lanes):
            ln = RequantLane(cfg.acc_bits, cfg.act_bits)
            m.submodules[f"rq{lane}"] = ln
            q = qreg[lane * Q_ROW_BITS : (lane + 1) * Q_ROW_BITS]
            m.d.comb += [
                ln.acc.eq(hold[lane]),
                ln.bias.eq(q[bias_at : bias_at + BIAS_BITS]),
                ln.mult.eq(q[mult_at : mult_at + MULT_BITS]),
                ln.shift.eq(q[shift_at : shift_at + SHIFT_BITS]),
                ln.res.eq(res_hold[lane]),
                ln.res_mult.eq(q[res_mult_at : res_mult_at + MULT_BITS]),
                ln.lo.eq(lo),
                ln.hi.eq(hi),
            ]
            outs.append(ln.out)
        out_tag = tags[-1]
        group_bits = lanes * cfg.act_bits
        staging = Signal(rows * cfg.act_bits)
        entry = Cat(staging[group_bits:], *outs)
        with m.If(out_tag.valid):
            m.d.sync += staging.eq(entry)
        m.d.comb += [
            self.out_wr.addr.eq(f("o_base") + out_tag.m),
            self.out_wr.data.eq(entry),
            self.out_wr.en.eq(out_tag.valid & out_tag.last),
        ]
        pipe_busy = (
            Cat(p.valid for p in pipe[1:]).any() | feeding | Cat(t.valid for t in tags[1:]).any()
        )

        # The Q entry is read from the start (its port keeps reading Q[q_base]) and kept for the
        # whole instruction; the walk's only products are formed from the command (registered:
        # the command holds still from the start, and the walk uses them a cycle later).
        xa_start = Signal(xab)
        m.d.comb += xa_start.eq(f("x_base") - small_mul(f("tile_w"), f("pad_top")) - f("pad_left"))
        q_load = Signal()
        m.d.sync += [q_load.eq(seq.start), sy_tw.eq(small_mul(f("tile_w"), f("stride_y")))]
        with m.If(q_load):
            m.d.sync += qreg.eq(self.q_rd.data)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += done.eq(seq.working)
                with m.If(seq.start & is_gemm):
                    m.d.sync += [
                        j.eq(0),
                        i.eq(0),
                        c.eq(0),
                        ox.eq(0),
                        oy.eq(0),
                        y.eq(-f("pad_top")),
                        by.eq(-f("pad_top")),
                        x.eq(-f("pad_left")),
                        bx.eq(-f("pad_left")),
                        xa.eq(xa_start),
                        xa_row.eq(xa_start),
                        xa_chan.eq(xa_start),
                        xa_pos.eq(xa_start),
                        xa_posrow.eq(xa_start),
                        w_addr.eq(f("w_base")),
                        m_idx.eq(0),
                        first.eq(1),
                        gap.eq(groups),
                        issuing.eq(1),
                    ]
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.sync += gap.eq(Mux(fire & last, 1, Mux(gap < groups, gap + 1, gap)))
                with m.If(fire):
                    m.d.sync += [w_addr.eq(w_addr + 1), first.eq(0)]
                    with m.If(~last_j):
                        m.d.sync += [j.eq(j + 1), x.eq(x + 1), xa.eq(xa + 1)]
                    with m.Elif(~last_i):
                        m.d.sync += [
                            j.eq(0),
                            i.eq(i + 1),
                            x.eq(bx),
                            y.eq(y + 1),
                            xa_row.eq(xa_row + f("tile_w")),
                            xa.eq(xa_row + f("tile_w")),
                        ]
                    with m.Elif(~last_c):
                        m.d.sync += [
                            j.eq(0),
                            i.eq(0),
                            c.eq(c + 1),
                            x.eq(bx),
                            y.eq(by),
                            xa_chan.eq(xa_chan + f("c_stride")),
                            xa_row.eq(xa_chan + f("c_stride")),
                            xa.eq(xa_chan + f("c_stride")),
                        ]
                    with m.Else():
                        m.d.sync += [
                            j.eq(0),
                            i.eq(0),
                            c.eq(0),
                            w_addr.eq(f("w_base")),
                            m_idx.eq(m_idx + 1),
                            first.eq(1),
                        ]
                        with m.If(~last_ox):
                            nxt = xa_pos + f("stride_x")
                            m.d.sync += [
                                ox.eq(ox + 1),
                                bx.eq(bx + f("stride_x")),
                                x.eq(bx + f("stride_x")),
                                y.eq(by),
                                xa_pos.eq(nxt),
                                xa_chan.eq(nxt),
                                xa_row.eq(nxt),
                                xa.eq(nxt),
                            ]
                        with m.Elif(~last_oy):
                            nxt = xa_posrow + sy_tw
                            m.d.sync += [
                                ox.eq(0),
                                oy.eq(oy + 1),
                                bx.eq(-f("pad_left")),
                                x.eq(-f("pad_left")),
                                by.eq(by + f("stride_y")),
                                y.eq(by + f("stride_y")),
                                xa_posrow.eq(nxt),
                                xa_pos.eq(nxt),
                                xa_chan.eq(nxt),
                                xa_row.eq(nxt),
                                xa.eq(nxt),
                            ]
                        with m.Else():
                            m.d.sync += issuing.eq(0)
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += done.eq(~pipe_busy)
                with m.If(~pipe_busy):
                    m.next = "IDLE"
        return m
