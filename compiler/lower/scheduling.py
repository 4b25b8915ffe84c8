"""A pass's instructions: loads of input tiles and weight groups into buffer halves, GEMMs band
by band of output rows, stores. Whatever streams is double-buffered; each load is held back
until the first GEMM that reads it, and the order between units is left to dependency tokens
(``compiler.tokens``)."""

from __future__ import annotations

from ...arch import AccelConfig, isa, layout
from ...arch.isa import Buf, Opcode
from ...arch.layout import Entry
from ..tokens import Op, Range
from .passes import Pass
from .tiling import Tiling


def block(region: str, first: int, y_size: int, x_size: int, x_stride: int, eb: int) -> Range:
    """The DDR bytes a 2-D block spans (gaps between its rows included)."""
    return (region, first * eb, (first + isa.block_entries(y_size, x_size, x_stride)) * eb)


class Halves:
    """Which half of each double-buffered region its next user gets. The count runs on from
    pass to pass, so a pass's first loads go to the half the previous pass is not reading, and
    land while it runs."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def next(self, kind: str, half: int) -> int:
        """Base of the half the next user of ``kind`` gets (``half`` entries each)."""
        self.count[kind] = self.count.get(kind, 0) + 1
        return (self.count[kind] - 1) % 2 * half


class Scheduler:
    """The instructions of one pass under its tiling, in program order (``run``)."""

    def __init__(self, p: Pass, t: Tiling, cfg: AccelConfig, halves: Halves) -> None:
        self.p, self.t, self.g, self.halves = p, t, t.geom, halves
        self.eb_x, self.eb_w, self.eb_q = (
            layout.entry_bytes(cfg, k) for k in (Entry.X, Entry.W, Entry.Q)
        )
        self.out_half, self.x_half = cfg.out_depth // 2, cfg.x_depth // 2
        self.w_half, self.q_half = cfg.w_depth // 2, max(1, cfg.q_depth // 2)
        self.ops: list[Op] = []
        self.pending: list[Op] = []
        """Loads not emitted yet: each goes just before the first GEMM that reads it, so
        program order follows the data and the token counters never hold more than needed."""
        self.packed: dict[str, int] = {}
        """Base of each resident region (from the first resident item's ``slot_of``)."""

    def run(self) -> list[Op]:
        """Every load, GEMM and store of the pass, in the tiling's loop order."""
        t = self.t
        if t.w_outer:
            x_bases: dict[int, int] = {}
            for i_w in range(len(t.groups)):
                wb, qb = self.load_w(i_w)
                for i_x in range(len(t.tiles)):
                    if not t.matches(i_x, i_w):
                        continue
                    if i_x not in x_bases or not t.x_res:
                        x_bases[i_x] = self.load_x(i_x)
                    self.compute(i_x, x_bases[i_x], i_w, wb, qb)
        else:
            w_bases: dict[int, tuple[int, int]] = {}
            for i_x in range(len(t.tiles)):
                xb = self.load_x(i_x)
                for i_w in range(len(t.groups)):
                    if not t.matches(i_x, i_w):
                        continue
                    if i_w not in w_bases or not t.w_res:
                        w_bases[i_w] = self.load_w(i_w)
                    self.compute(i_x, xb, i_w, *w_bases[i_w])
        self.flush()
        return self.ops

    def slot_of(self, kind: str, i: int, resident: bool, sizes: tuple[int, ...], half: int) -> int:
        """Where item ``i`` goes: the next half if it streams; if resident, packed after the
        others, from the next half's base when they all fit one half (else from 0)."""
        if not resident:
            return self.halves.next(kind, half)
        if kind not in self.packed:
            self.packed[kind] = self.halves.next(kind, half) if sum(sizes) <= half else 0
        return self.packed[kind] + sum(sizes[:i])

    def flush(self, upto: Op | None = None, space: str | None = None) -> None:
        """Emit the pending loads ``upto`` reads (or that write ``space``, or all), in order.

        Loads it does not read stay pending; moving a load later is always safe, because the
        tokens are derived from the final program order."""

        def needed(ld: Op) -> bool:
            if upto is not None:
                return any(
                    a[0] == b[0] and a[1] < b[2] and b[1] < a[2]
                    for a in ld.writes
                    for b in upto.reads
                )
            return space is None or ld.writes[0][0] == space

        need = [needed(ld) for ld in self.pending]
        self.ops.extend(ld for ld, n in zip(self.pending, need, strict=True) if n)
        self.pending[:] = [ld for ld, n in zip(self.pending, need, strict=True) if not n]

    def load_x(self, i: int) -> int:
        """Queue the loads of input tile ``i``; its X base."""
        g, src, eb_x = self.g, self.p.src, self.eb_x
        self.flush(space="X")
        t = self.t.tiles[i]
        base = self.slot_of("X", i, self.t.x_res and self.t.w_outer, self.t.x_sizes, self.x_half)
        size = t.th * t.tw
        if t.tw == g.w:  # full-width rows: loaded in row pieces so compute starts on the first
            step = max(g.kh, -(-t.th // 8))
            pieces = [(a, min(step, t.th - a)) for a in range(0, t.th, step)]
            if t.cn == 1 or len(pieces) == 1:
                blocks = [(0, a, t.cn, n * t.tw, g.h * g.w) for a, n in pieces]
            else:
                blocks = [(c, a, 1, n * t.tw, n * t.tw) for a, n in pieces for c in range(t.cn)]
        elif t.cn == 1:
            blocks = [(0, 0, t.th, t.tw, g.w)]
        else:
            blocks = [(c, 0, t.th, t.tw, g.w) for c in range(t.cn)]
        claimed = False
        for c, a, ys, xs, st in blocks:
            f = layout.fmap_entry(g.in_chunks, g.h, g.w, t.b, t.c0 + c, t.y0 + a, t.x0)
            sram = base + c * size + a * t.tw
            args = dict(buf=int(Buf.X), sram=sram, y_size=ys, x_size=xs, x_stride=st)
            rd = block(src, f, ys, xs, st, eb_x)
            wr = tuple(("X", sram + y * size, sram + y * size + xs) for y in range(ys))
            # The first piece is recorded as writing the whole tile: the next load into this
            # region then waits for one token (the last GEMM that read it) instead of one per
            # piece, which would overflow the token counters; GEMMs still start on early pieces.
            if not claimed:
                wr, claimed = (("X", base, base + t.cn * size),), True
            self.pending.append(Op(Opcode.LOAD, args, (rd,), wr, src, f * eb_x))
        return base

    def load_w(self, i: int) -> tuple[int, int]:
        """Queue the loads of weight group ``i`` and its Q rows; its W and Q bases."""
        g, p, t = self.g, self.p, self.t
        per_tile = g.w_chunks * g.kh * g.kw
        grp = t.groups[i]
        w_keep = t.w_res and not t.w_outer
        wb = self.slot_of("W", i, w_keep, t.w_sizes, self.w_half)
        if not w_keep:  # streamed: Q follows W into the same half
            qb = (wb // self.w_half) * self.q_half
        elif self.packed["W"] and g.n_tiles <= self.q_half:  # resident in the upper half: so is Q
            qb = self.q_half + grp[0][0]
        else:  # resident from 0 (or in the lower half)
            qb = grp[0][0]
        at = wb
        for tt, c0, cn in grp if not p.max else ():
            # one load per row tile, so its GEMMs start as soon as it lands
            first, n = tt * per_tile + (c0 - g.first_chunk(tt)) * g.kh * g.kw, cn * g.kh * g.kw
            args = dict(buf=int(Buf.W), sram=at, y_size=1, x_size=n, x_stride=n)
            claim = ("W", at, at + n) if at > wb else ("W", wb, wb + t.w_sizes[i])  # as for X
            self.pending.append(Op(Opcode.LOAD, args, (), (claim,), "w", first * self.eb_w))
            at += n
        tiles_in = sorted({tt for tt, _, _ in grp})
        nq = len(tiles_in)
        args = dict(buf=int(Buf.Q), sram=qb, y_size=1, x_size=nq, x_stride=nq)
        self.ops.append(
            Op(Opcode.LOAD, args, (), (("Q", qb, qb + nq),), "q", tiles_in[0] * self.eb_q)
        )
        return wb, qb

    def compute(self, i_x: int, xb: int, i_w: int, wb: int, qb: int) -> None:
        """GEMMs (and stores) of one X tile with one W group, band by band of output rows."""
        g, p, eb_x = self.g, self.p, self.eb_x
        t = self.t.tiles[i_x]
        group = self.t.groups[i_w]
        sy, sx = g.stride
        tiles_in = sorted({tt for tt, _, _ in group})
        c_stride = t.th * t.tw
        pad_left = t.x0 - (t.ox0 * sx - g.pad[1])
        items, w_off = [], 0
        for tt, c0, cn in group:
            items.append((tt, c0, cn, 0 if p.max else wb + w_off))
            w_off += cn * g.kh * g.kw
        band = self.t.band(t, group, self.out_half)
        bands = range(t.oy0, t.oy0 + t.rows, band)
        # Whichever streams in longer goes outer: input bands (each one serves every row tile
        # before the next arrives) or row tiles (each one's weights land while the last runs).
        if g.in_chunks * t.th * t.tw * eb_x >= w_off * self.eb_w:
            steps = [(oy1, it) for oy1 in bands for it in items]
        else:
            steps = [(oy1, it) for it in items for oy1 in bands]
        for oy1, (tt, c0, cn, wbase) in steps:
            c_first = g.first_chunk(tt)
            first, last = c0 == c_first, c0 + cn == c_first + g.w_chunks
            q_base = qb + tiles_in.index(tt)
            rb = min(band, t.oy0 + t.rows - oy1)
            m = rb * t.cols
            acc = (oy1 - t.oy0) * t.cols if self.t.split else 0
            if self.t.chunk_tiles:  # the row tiles' partial sums interleave: one entry each
                acc = tt
            rel = oy1 * sy - g.pad[0] - t.y0
            off, th, pad_top = (rel * t.tw, t.th - rel, 0) if rel >= 0 else (0, t.th, -rel)
            r0, r1 = max(0, rel), min(t.th, rel + (rb - 1) * sy + g.kh)
            ob = self.halves.next("OUT", self.out_half) if last else 0
            out_at = layout.fmap_entry(g.n_tiles, g.oh, g.ow, t.b, tt, oy1, t.ox0)
            rbase = 0
            reads = [
                *(
                    ("X", xb + c * c_stride + r0 * t.tw, xb + c * c_stride + r1 * t.tw)
                    for c in range(c0 - t.c0, c0 - t.c0 + cn)
                ),
                ("Q", q_base, q_base + 1),
            ]
            if not p.max:
                reads.append(("W", wbase, wbase + cn * g.kh * g.kw))
            if p.res is not None and last:
                rbase = self.halves.next("R", self.out_half)
                args = dict(buf=int(Buf.R), sram=rbase, y_size=rb, x_size=t.cols, x_stride=g.ow)
                rd = block(p.res, out_at, rb, t.cols, g.ow, eb_x)
                wr = (("R", rbase, rbase + m),)
                self.pending.append(Op(Opcode.LOAD, args, (rd,), wr, p.res, out_at * eb_x))
                reads.append(("R", rbase, rbase + m))
            args = dict(
                reset=int(first),
                final=int(last),
                w_base=wbase,
                x_base=xb + (c0 - t.c0) * c_stride + off,
                acc_base=acc,
                o_base=ob,
                q_base=q_base,
                max=int(p.max),
                res=int(p.res is not None and last),
                r_base=rbase,
                oh_count=rb,
                ow_count=t.cols,
                c_count=cn,
                kh=g.kh,
                kw=g.kw,
                stride_y=sy,
                stride_x=sx,
                pad_top=pad_top,
                pad_left=pad_left,
                tile_h=th,
                tile_w=t.tw,
                c_stride=c_stride,
                lo=p.lo,
                hi=p.hi,
            )
            if not first:
                reads.append(("ACC", acc, acc + m))
            writes = [("OUT", ob, ob + m)] if last else [("ACC", acc, acc + m)]
            gemm = Op(Opcode.GEMM, args, tuple(reads), tuple(writes))
            self.flush(gemm)
            self.ops.append(gemm)
            if last:
                args = dict(sram=ob, y_size=rb, x_size=t.cols, x_stride=g.ow)
                wr = block(p.dst, out_at, rb, t.cols, g.ow, eb_x)
                reads = (("OUT", ob, ob + m),)
                self.ops.append(Op(Opcode.STORE, args, reads, (wr,), p.dst, out_at * eb_x))
