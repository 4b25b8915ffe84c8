"""From ordered instructions to the Program: the DDR window laid out (instructions, W and Q
blobs, then every feature map region), each instruction's DDR address resolved and encoded,
the segments and layer records filled in."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ...arch import AccelConfig, isa
from ...host.program import LayerRecord, Program, Segment, align
from ...host.tensors import InputFold
from ..ir import IntGraph
from ..tokens import Op
from .checks import CompileError


@dataclass
class PassPlan:
    """One pass, scheduled: its record, its instructions in pass order and its static bytes."""

    rec: LayerRecord
    ops: list[Op]
    w_blob: bytes
    q_blob: bytes


@dataclass(frozen=True)
class Window:
    """Byte offsets of the W and Q segments and of every feature map region; the window size."""

    w_start: int
    q_start: int
    region: dict[str, int]
    size: int


def lay_out_window(cfg: AccelConfig, plans: list[PassPlan], n_insns: int) -> Window:
    """Place the segments and maps (``host.program``'s window layout) and set the records'
    offsets."""
    pos = align(n_insns * (cfg.insn_bits // 8))
    w_start = pos
    for p in plans:
        p.rec.w_offset, pos = pos, align(pos + p.rec.w_size)
    q_start = pos
    for p in plans:
        p.rec.q_offset, pos = pos, align(pos + p.rec.q_size)
    region = {"fm0": pos}
    pos = align(pos + plans[0].rec.in_size)
    for p in plans:
        region[p.rec.dst], pos = pos, align(pos + p.rec.out_size)
    for p in plans:
        p.rec.in_offset, p.rec.out_offset = region[p.rec.src], region[p.rec.dst]
    if pos >= 1 << 32:
        raise CompileError(
            f"the program needs a {pos}-byte DDR window, beyond the 32-bit address "
            "space; compile for a smaller batch"
        )
    return Window(w_start, q_start, region, pos)


def encode(
    cfg: AccelConfig, plans: list[PassPlan], ops: list[Op], window: Window
) -> tuple[list[int], list[int]]:
    """The instruction words, and the runs of (pass, count) that say which pass each belongs to
    (a SYNC to the pass of the instruction before it); sets the records' instruction spans."""
    words: list[int] = []
    owner = {id(o): i for i, p in enumerate(plans) for o in p.ops}
    counts = [0] * len(plans)
    first: list[int | None] = [None] * len(plans)
    runs: list[list[int]] = []
    cur = 0
    for n, o in enumerate(ops):
        cur = owner.get(id(o), cur)
        counts[cur] += 1
        if first[cur] is None:
            first[cur] = n
        if runs and runs[-1][0] == cur:
            runs[-1][1] += 1
        else:
            runs.append([cur, 1])
        args = {**o.args, **o.flags}
        if o.region is not None:
            base = {"w": plans[cur].rec.w_offset, "q": plans[cur].rec.q_offset}.get(o.region)
            base = window.region[o.region] if base is None else base
            args["dram"] = (base + o.offset) // (cfg.axi_data_bits // 8)
        words.append(isa.encode(cfg, o.op, **args))
    ib = cfg.insn_bits // 8
    for p, f, c in zip(plans, first, counts, strict=True):
        p.rec.insn_offset, p.rec.insn_count = f * ib, c
    return words, [v for run in runs for v in run]


def build_program(
    graph: IntGraph,
    cfg: AccelConfig,
    batch: int,
    plans: list[PassPlan],
    window: Window,
    words: list[int],
    insn_owner: list[int],
    slots: tuple[np.ndarray, np.ndarray],
    fold: InputFold | None = None,
) -> Program:
    """The Program: segments, records, I/O shapes and scales, ``slots`` (input, output), and
    the ``fold`` the host applies to the input (``graph`` is then the folded one)."""
    w_img = bytearray(window.q_start - window.w_start)
    q_img = bytearray(plans[-1].rec.q_offset + plans[-1].rec.q_size - window.q_start)
    for p in plans:
        r = p.rec
        w_img[r.w_offset - window.w_start : r.w_offset - window.w_start + r.w_size] = p.w_blob
        q_img[r.q_offset - window.q_start : r.q_offset - window.q_start + r.q_size] = p.q_blob
    in_slots, out_slots = slots
    return Program(
        config=cfg,
        batch=batch,
        layers=[p.rec for p in plans],
        segments={
            "insn": Segment(0, isa.to_bytes(cfg, words)),
            "w": Segment(window.w_start, bytes(w_img)),
            "q": Segment(window.q_start, bytes(q_img)),
        },
        window_size=window.size,
        insn_count=len(words),
        input_shape=tuple(int(i) for i in (fold.in_shape if fold else graph.input_shape)),
        input_scale=float(graph.input_scale),
        input_lo=int(graph.input_lo),
        input_hi=int(graph.input_hi),
        output_shape=tuple(int(i) for i in graph.shapes()[-1]),
        output_scale=float(graph.output_scale),
        output_slots=[int(s) for s in out_slots],
        input_slots=[int(s) for s in in_slots],
        insn_owner=insn_owner,
        meta=_json_meta(graph.meta),
        input_fold=fold,
    )


def _json_meta(meta: dict) -> dict:
    """The entries of ``meta`` that JSON can hold."""
    out = {}
    for key, v in meta.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[str(key)] = v
    return out
