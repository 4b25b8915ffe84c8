"""What the Program records of each pass (``LayerRecord``): shapes, tiling, work and DMA bytes;
the window offsets are filled in when the window is laid out."""

from __future__ import annotations

from ...arch import AccelConfig, layout
from ...arch.isa import Buf, Opcode
from ...arch.layout import Entry
from ...host.program import LayerRecord
from ..tokens import Op
from .passes import Pass
from .tiling import Tiling


def dma_bytes(cfg: AccelConfig, ops: list[Op]) -> int:
    """DDR bytes the loads and stores of ``ops`` move."""
    eb_x, eb_w, eb_q = (layout.entry_bytes(cfg, k) for k in (Entry.X, Entry.W, Entry.Q))
    eb = {int(Buf.X): eb_x, int(Buf.W): eb_w, int(Buf.Q): eb_q, int(Buf.R): eb_x}
    return sum(
        o.args["y_size"] * o.args["x_size"] * eb.get(o.args.get("buf", int(Buf.X)))
        for o in ops
        if o.op in (Opcode.LOAD, Opcode.STORE)
    )


def layer_record(
    p: Pass, t: Tiling, cfg: AccelConfig, batch: int, ops: list[Op], w_size: int, q_size: int
) -> LayerRecord:
    """The record of pass ``p`` scheduled as ``ops`` (offsets 0 until the window is laid out)."""
    g, nt = t.geom, t.geom.n_tiles
    eb_x = layout.entry_bytes(cfg, Entry.X)
    in_bytes = batch * g.in_chunks * g.h * g.w * eb_x
    out_bytes = batch * nt * g.oh * g.ow * eb_x
    res_bytes = out_bytes if p.res is not None else 0
    return LayerRecord(
        name=p.name,
        kind=p.kind + ("+res" if p.res is not None else ""),
        in_shape=tuple(int(i) for i in p.in_shape),
        out_shape=tuple(int(i) for i in p.out_shape),
        kernel=(g.kh, g.kw),
        stride=g.stride,
        padding=g.pad,
        in_chunks=g.in_chunks,
        out_tiles=nt,
        out_hw=(g.oh, g.ow),
        order="weights outer" if t.w_outer else "inputs outer",
        x_tiles=len(t.tiles),
        w_groups=len(t.groups),
        lo=int(p.lo),
        hi=int(p.hi),
        insn_offset=0,
        insn_count=0,
        w_offset=0,
        w_size=w_size,
        q_offset=0,
        q_size=q_size,
        in_offset=0,
        in_size=in_bytes,
        out_offset=0,
        out_size=out_bytes,
        macs=batch * p.macs,
        array_macs=batch * g.oh * g.ow * nt * cfg.rows * g.w_chunks * cfg.cols * g.kh * g.kw,
        dma_bytes=dma_bytes(cfg, ops),
        min_dma_bytes=w_size + q_size + in_bytes + out_bytes + res_bytes,
        src=p.src,
        dst=p.dst,
        res=p.res or "",
    )
