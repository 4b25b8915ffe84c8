"""Lowering an IntGraph to a Program for one AccelConfig: row mapping, tiling, instructions.

Each layer is a GEMM ``out[M, N] = A[M, K] @ W[N, K]^T``. Output rows are placed by weight format
into the PE row groups of successive row tiles ("slots"); the host keeps every intermediate tensor
in slot order, padding slots dropped, and the next layer's weight columns are permuted to match,
so no data is ever reordered between layers. Only the final output is gathered back to logical
order (by the runtime, from ``Program.output_slots``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..arch import AccelConfig, isa, layout, numerics
from ..arch.isa import Buf, Opcode
from ..arch.layout import Entry
from ..host.program import LayerRecord, Program, Segment, align
from ..host.tensors import chunks, conv_out_hw, k_tiles, x_entry_index
from .ir import IntGraph, IntLayer


class CompileError(ValueError):
    """A graph that cannot run on the given AccelConfig; the message names the layer and fix."""


@dataclass
class _Insn:
    """An instruction whose ``dram`` field is an entry offset inside a named region."""

    op: Opcode
    args: dict[str, int]
    region: str | None = None
    entry: int = 0
    entry_bytes: int = 0


@dataclass
class _Plan:
    rec: LayerRecord
    insns: list[_Insn]
    w_blob: bytes
    q_blob: bytes
    slots: np.ndarray


def _act_max(lo: int, hi: int) -> int:
    return max(abs(lo), abs(hi))


def _place_rows(layer: IntLayer, cfg: AccelConfig) -> tuple[int, np.ndarray]:
    """Row tile count and the hardware slot of every logical output row."""
    offs = cfg.group_offsets()
    by_fmt: dict[str, list[int]] = {}
    for n, f in enumerate(layer.formats):
        by_fmt.setdefault(f, []).append(n)
    for f in by_fmt:
        if f not in offs:
            raise CompileError(
                f"layer {layer.name}: rows use weight format {f!r}, but config {cfg.name!r} has "
                f"row groups {[g.fmt for g in cfg.groups]}; quantize the model with the config's "
                f"formats or use a config with a {f} group"
            )
    n_tiles = max(chunks(len(rows), offs[f][1]) for f, rows in by_fmt.items())
    slot = np.empty(layer.out_channels, dtype=np.int64)
    for f, rows in by_fmt.items():
        first, size = offs[f]
        for i, n in enumerate(rows):
            slot[n] = (i // size) * cfg.rows + first + i % size
    return n_tiles, slot


def _slot_weight(layer: IntLayer, in_map: np.ndarray | None) -> np.ndarray:
    """Weight [N, K] with K in the slot order of the tensor the layer consumes.

    ``in_map`` gives the logical channel of every input slot (-1 for padding); None means the
    input is in logical order. Input channels are the leading axis of the per-sample input, so a
    flattened (C_slots, H, W) input keeps its H*W positions per slot.
    """
    w = layer.weight.astype(np.int64)
    n = w.shape[0]
    if in_map is None:
        return w.reshape(n, -1)
    wv = w.reshape(n, int(in_map.max()) + 1, -1)
    out = np.zeros((n, len(in_map), wv.shape[2]), dtype=np.int64)
    valid = np.flatnonzero(in_map >= 0)
    out[:, valid] = wv[:, in_map[valid]]
    return out.reshape(n, -1)


def _check_numerics(layer: IntLayer, cfg: AccelConfig, x_max: int) -> None:
    a_lo, a_hi = numerics.act_range(cfg.act_bits, signed=True)
    if not (a_lo <= layer.lo and layer.hi <= a_hi):
        raise CompileError(
            f"layer {layer.name}: output range [{layer.lo}, {layer.hi}] does not fit the "
            f"{cfg.act_bits}-bit signed activations [{a_lo}, {a_hi}]; re-export with "
            "activations of at most 8 bits"
        )
    checks = (
        ("bias", layer.bias, -(1 << (numerics.BIAS_BITS - 1)), (1 << (numerics.BIAS_BITS - 1)) - 1),
        ("mult", layer.mult, -(1 << (numerics.MULT_BITS - 1)), (1 << (numerics.MULT_BITS - 1)) - 1),
        ("shift", layer.shift, 0, numerics.MAX_SHIFT),
    )
    for name, v, lo, hi in checks:
        v = np.asarray(v, dtype=np.int64)
        if v.size and (v.min() < lo or v.max() > hi):
            raise CompileError(
                f"layer {layer.name}: {name} values must lie in [{lo}, {hi}], got "
                f"[{v.min()}, {v.max()}]; re-export with numerics.requant_multiplier"
            )
    row_abs = np.abs(layer.weight.astype(np.int64)).reshape(layer.out_channels, -1).sum(axis=1)
    acc = row_abs * x_max
    bound = int(acc.max())
    if bound >= 1 << (cfg.acc_bits - 1):
        raise CompileError(
            f"layer {layer.name}: accumulators may reach {bound} (sum|w| * {x_max}), which "
            f"overflows the {cfg.acc_bits}-bit accumulator; use a config with larger acc_bits "
            "or split the layer"
        )


def _split(cfg: AccelConfig, op: Opcode, total: int) -> int:
    field = isa.layout(cfg)[op]["count"]
    return min(total, (1 << field.width) - 1)


def _load(
    cfg: AccelConfig, buf: Buf, sram: int, region: str, entry: int, count: int
) -> list[_Insn]:
    kind = {Buf.W: Entry.W, Buf.X: Entry.X, Buf.Q: Entry.Q}[buf]
    eb = layout.entry_bytes(cfg, kind)
    out, done = [], 0
    while done < count:
        n = _split(cfg, Opcode.LOAD, count - done)
        args = {"buf": int(buf), "sram": sram + done, "count": n}
        out.append(_Insn(Opcode.LOAD, args, region, entry + done, eb))
        done += n
    return out


def _store(cfg: AccelConfig, sram: int, entry: int, count: int) -> list[_Insn]:
    eb = layout.entry_bytes(cfg, Entry.OUT)
    out, done = [], 0
    while done < count:
        n = _split(cfg, Opcode.STORE, count - done)
        out.append(_Insn(Opcode.STORE, {"sram": sram + done, "count": n}, "out", entry + done, eb))
        done += n
    return out


def _plan_layer(
    layer: IntLayer,
    cfg: AccelConfig,
    batch: int,
    in_shape: tuple[int, ...],
    in_map: np.ndarray | None,
    x_max: int,
) -> _Plan:
    _check_numerics(layer, cfg, x_max)
    n_tiles, slot = _place_rows(layer, cfg)
    rows, cols = cfg.rows, cfg.cols
    wk = _slot_weight(layer, in_map)
    k = wk.shape[1]
    if layer.kind == "conv":
        kh, kw = (int(i) for i in layer.weight.shape[2:])
        oh, ow = conv_out_hw(in_shape[1], in_shape[2], kh, kw, layer.stride, layer.padding)
        m, out_shape = batch * oh * ow, (layer.out_channels, oh, ow)
    else:
        kh = kw = 1
        m, out_shape = batch, (layer.out_channels,)
    kc = chunks(k, cols)

    levels = np.zeros((n_tiles * rows, kc * cols), dtype=np.int64)
    levels[slot, :k] = wk
    levels = levels.reshape(n_tiles, rows, kc, cols)
    codes = np.empty_like(levels)
    offs = cfg.group_offsets()
    for g in cfg.groups:
        r0, size = offs[g.fmt]
        codes[:, r0 : r0 + size] = numerics.weight_format(g.fmt).encode(levels[:, r0 : r0 + size])
    w_entries = codes.transpose(0, 2, 1, 3).reshape(n_tiles * kc, rows * cols)
    w_blob = layout.pack(cfg, Entry.W, w_entries)

    q = np.zeros((n_tiles * rows, 3), dtype=np.int64)
    q[slot, 0], q[slot, 1], q[slot, 2] = layer.bias, layer.mult, layer.shift
    q_blob = layout.pack(cfg, Entry.Q, q.reshape(n_tiles, rows * 3))

    kt = min(kc, cfg.w_depth, cfg.x_depth)
    tiles = k_tiles(kc, kt)
    nk = len(tiles)
    if nk == 1:
        mt = min(m, cfg.out_depth, cfg.x_depth // kc)
    else:
        mt = min(m, cfg.out_depth, cfg.acc_depth, cfg.x_depth // kt)
    w_res = n_tiles * kc <= cfg.w_depth
    q_res = n_tiles <= cfg.q_depth

    insns: list[_Insn] = []
    if w_res:
        insns += _load(cfg, Buf.W, 0, "w", 0, n_tiles * kc)
    if q_res:
        insns += _load(cfg, Buf.Q, 0, "q", 0, n_tiles)
    for m0 in range(0, m, mt):
        mc = min(mt, m - m0)
        if nk == 1:
            insns += _load(cfg, Buf.X, 0, "in", m0 * kc, mc * kc)
        for t in range(n_tiles):
            if not q_res:
                insns += _load(cfg, Buf.Q, 0, "q", t, 1)
            for j, (k0, kn) in enumerate(tiles):
                if not w_res:
                    insns += _load(cfg, Buf.W, 0, "w", t * kc + k0, kn)
                if nk > 1:
                    insns += _load(cfg, Buf.X, 0, "in", x_entry_index(m, kt, kc, j, m0), mc * kn)
                gemm = {
                    "reset": int(j == 0),
                    "final": int(j == nk - 1),
                    "w_base": t * kc + k0 if w_res else 0,
                    "x_base": 0,
                    "acc_base": 0,
                    "o_base": 0,
                    "q_base": t if q_res else 0,
                    "m_count": mc,
                    "k_count": kn,
                    "lo": layer.lo,
                    "hi": layer.hi,
                }
                insns.append(_Insn(Opcode.GEMM, gemm))
            insns += _store(cfg, 0, t * m + m0, mc)

    keep = np.sort(slot)
    slots = np.argsort(slot)
    rec = LayerRecord(
        name=layer.name,
        kind=layer.kind,
        in_shape=tuple(int(i) for i in in_shape),
        out_shape=tuple(int(i) for i in out_shape),
        kernel=(kh, kw),
        stride=tuple(int(i) for i in layer.stride),
        padding=tuple(int(i) for i in layer.padding),
        flatten=bool(layer.flatten),
        lo=int(layer.lo),
        hi=int(layer.hi),
        m=m,
        k=k,
        kc=kc,
        kt=kt,
        nk=nk,
        mt=mt,
        n_tiles=n_tiles,
        keep=tuple(int(i) for i in keep),
        w_resident=w_res,
        q_resident=q_res,
        insn_offset=0,
        insn_count=len(insns),
        w_offset=0,
        w_size=len(w_blob),
        q_offset=0,
        q_size=len(q_blob),
        in_offset=0,
        in_size=m * kc * layout.entry_bytes(cfg, Entry.X),
        out_offset=0,
        out_size=n_tiles * m * layout.entry_bytes(cfg, Entry.OUT),
        macs=m * layer.out_channels * int(np.prod(layer.weight.shape[1:])),
    )
    return _Plan(rec, insns, w_blob, q_blob, slots)


def _json_meta(meta: dict) -> dict:
    out = {}
    for key, v in meta.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[str(key)] = v
    return out


def lower(graph: IntGraph, cfg: AccelConfig, batch: int) -> Program:
    """Compile an IntGraph for ``cfg`` at a fixed ``batch`` size into a Program."""
    if not isinstance(cfg, AccelConfig):
        raise TypeError(f"cfg must be an AccelConfig, got {type(cfg).__name__}")
    if not isinstance(batch, int | np.integer) or batch < 1:
        raise CompileError(f"batch must be a positive int, got {batch!r}")
    batch = int(batch)
    if not graph.is_chain:
        raise CompileError(
            "the graph has residual adds or pooling; the accelerator lowering handles chains of "
            "Conv2d/Linear layers so far: compile the chain parts separately"
        )
    a_lo, a_hi = numerics.act_range(cfg.act_bits, signed=True)
    if not (a_lo <= graph.input_lo <= graph.input_hi <= a_hi):
        raise CompileError(
            f"graph input range [{graph.input_lo}, {graph.input_hi}] does not fit the "
            f"{cfg.act_bits}-bit signed activations [{a_lo}, {a_hi}]"
        )
    plans: list[_Plan] = []
    in_shape, in_map = tuple(graph.input_shape), None
    x_max = _act_max(graph.input_lo, graph.input_hi)
    for layer in graph.layers:
        p = _plan_layer(layer, cfg, batch, in_shape, in_map, x_max)
        plans.append(p)
        in_shape, in_map, x_max = p.rec.out_shape, p.slots, _act_max(layer.lo, layer.hi)

    ib = cfg.insn_bits // 8
    pos = 0
    for p in plans:
        p.rec.insn_offset, pos = pos, align(pos + len(p.insns) * ib)
    w_start = pos
    for p in plans:
        p.rec.w_offset, pos = pos, align(pos + p.rec.w_size)
    q_start = pos
    for p in plans:
        p.rec.q_offset, pos = pos, align(pos + p.rec.q_size)
    for p in plans:
        p.rec.in_offset, pos = pos, align(pos + p.rec.in_size)
    for p in plans:
        p.rec.out_offset, pos = pos, align(pos + p.rec.out_size)
    window_size = pos
    if window_size >= 1 << 32:
        raise CompileError(
            f"the program needs a {window_size}-byte DDR window, beyond the 32-bit address "
            "space; compile for a smaller batch"
        )

    insn_img = bytearray(w_start)
    w_img = bytearray(q_start - w_start)
    q_img = bytearray(plans[-1].rec.q_offset + plans[-1].rec.q_size - q_start)
    for p in plans:
        r = p.rec
        base = {"w": r.w_offset, "q": r.q_offset, "in": r.in_offset, "out": r.out_offset}
        words = []
        for ins in p.insns:
            args = dict(ins.args)
            if ins.region is not None:
                args["dram"] = (base[ins.region] + ins.entry * ins.entry_bytes) // 8
            words.append(isa.encode(cfg, ins.op, **args))
        insn_img[r.insn_offset : r.insn_offset + len(words) * ib] = isa.to_bytes(cfg, words)
        w_img[r.w_offset - w_start : r.w_offset - w_start + r.w_size] = p.w_blob
        q_img[r.q_offset - q_start : r.q_offset - q_start + r.q_size] = p.q_blob

    return Program(
        config=cfg,
        batch=batch,
        layers=[p.rec for p in plans],
        segments={
            "insn": Segment(0, bytes(insn_img)),
            "w": Segment(w_start, bytes(w_img)),
            "q": Segment(q_start, bytes(q_img)),
        },
        window_size=window_size,
        input_shape=tuple(int(i) for i in graph.input_shape),
        input_scale=float(graph.input_scale),
        input_lo=int(graph.input_lo),
        input_hi=int(graph.input_hi),
        output_shape=tuple(int(i) for i in graph.shapes()[-1]),
        output_scale=float(graph.output_scale),
        output_slots=[int(s) for s in plans[-1].slots],
        meta=_json_meta(graph.meta),
    )


def compile_model(qmodel: object, example_input: object, config: AccelConfig | str) -> Program:
    """Export a quantized model to an IntGraph and lower it for ``config`` (or a preset name).

    The batch size is ``example_input.shape[0]``.
    """
    from .export import export

    cfg = config if isinstance(config, AccelConfig) else AccelConfig.for_board(config)
    graph = export(qmodel)
    shape = tuple(int(i) for i in example_input.shape)  # type: ignore[attr-defined]
    if shape[1:] != tuple(graph.input_shape):
        raise CompileError(
            f"example_input has per-sample shape {shape[1:]} but the model takes "
            f"{tuple(graph.input_shape)}; pass an input of shape "
            f"({', '.join(['batch', *map(str, graph.input_shape)])})"
        )
    return lower(graph, cfg, batch=shape[0])
