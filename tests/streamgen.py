"""Random instruction streams for ISA v2: race-free by construction, tokens included.

Random LOADs into W, X, Q and R (from random data, and into X and R from what earlier STOREs
wrote), convolution GEMMs (some in max mode, some adding a residual from R) and 2-D STOREs get
their tokens from ``compiler.tokens.add_tokens``, so any legal execution order gives the same
memory. Optional faults keep the outcome timing-independent: a dropped push or an extra
pop (a DEADLOCK), or an illegal instruction or operand part way (fetch stops there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rmsmp.arch import AccelConfig, isa, layout, numerics
from rmsmp.arch.isa import Buf, Opcode
from rmsmp.arch.layout import Entry
from rmsmp.compiler.tokens import Op, add_tokens

DATA = 1 << 14
"""Window offset of the random data region (instructions live below it)."""


@dataclass
class Stream:
    """A memory image and the instruction words to run from offset 0."""

    image: bytes
    words: list[int]
    fault: str


def _data(rng: np.random.Generator, cfg: AccelConfig, n: int) -> dict[Entry, bytes]:
    fmts = [numerics.weight_format(f) for f in layout.row_formats(cfg)]
    w = np.zeros((n, cfg.rows, cfg.cols), np.int64)
    for r, f in enumerate(fmts):
        w[:, r] = rng.integers(0, 1 << f.bits, size=(n, cfg.cols))
    q = np.zeros((n, cfg.rows, len(layout.Q_FIELDS)), np.int64)
    q[..., 0] = rng.integers(-(2**20), 2**20, q.shape[:2])
    for idx in np.ndindex(q.shape[:2]):
        q[idx][1:3] = numerics.requant_multiplier(float(rng.uniform(1e-4, 0.2)))
        q[idx][3] = numerics.requant_multiplier(float(rng.uniform(1e-4, 0.2)))[0]
    x = rng.integers(-128, 128, (n, cfg.cols))
    return {
        Entry.W: layout.pack(cfg, Entry.W, w.reshape(n, -1)),
        Entry.X: layout.pack(cfg, Entry.X, x),
        Entry.Q: layout.pack(cfg, Entry.Q, q.reshape(n, -1)),
    }


def _r(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


def _gemm(rng: np.random.Generator, cfg: AccelConfig) -> Op:
    """A random GEMM: a quarter in max mode (some with kernels up to 9 x 9, mostly padding), a
    quarter adding a residual from R, independently."""
    pool, res = int(rng.random() < 0.25), int(rng.random() < 0.25)
    big = 9 if pool and rng.random() < 0.3 else 3
    kh, kw = _r(rng, 1, big), _r(rng, 1, big)
    c_count = _r(rng, 1, 2)
    while c_count * kh * kw > cfg.w_depth:
        c_count = kh = kw = 1
    th, tw = _r(rng, 1, 4), _r(rng, 1, 4)
    c_stride = th * tw + _r(rng, 0, 2)
    span = (c_count - 1) * c_stride + th * tw
    mcap = min(cfg.out_depth, cfg.acc_depth)
    oh = _r(rng, 1, 3)
    ow = _r(rng, 1, max(1, min(3, mcap // oh)))
    m, k = oh * ow, c_count * kh * kw
    reset, final = _r(rng, 0, 1) | pool, _r(rng, 0, 1) | pool | res
    a = dict(
        reset=reset,
        final=final,
        w_base=_r(rng, 0, cfg.w_depth - k),
        x_base=_r(rng, 0, cfg.x_depth - span),
        acc_base=_r(rng, 0, cfg.acc_depth - m),
        o_base=_r(rng, 0, cfg.out_depth - m),
        q_base=_r(rng, 0, cfg.q_depth - 1),
        max=pool,
        res=res,
        r_base=_r(rng, 0, cfg.out_depth - m),
        oh_count=oh,
        ow_count=ow,
        c_count=c_count,
        kh=kh,
        kw=kw,
        stride_y=_r(rng, 1, 2),
        stride_x=_r(rng, 1, 2),
        pad_top=_r(rng, 0, min(kh - 1, (1 << isa.PAD_BITS) - 1)),
        pad_left=_r(rng, 0, min(kw - 1, (1 << isa.PAD_BITS) - 1)),
        tile_h=th,
        tile_w=tw,
        c_stride=c_stride,
        lo=_r(rng, -128, 0),
        hi=_r(rng, 0, 127),
    )
    reads = [
        ("W", a["w_base"], a["w_base"] + k),
        ("X", a["x_base"], a["x_base"] + span),
        ("Q", a["q_base"], a["q_base"] + 1),
    ]
    if not reset:
        reads.append(("ACC", a["acc_base"], a["acc_base"] + m))
    if res:
        reads.append(("R", a["r_base"], a["r_base"] + m))
    out = (
        ("OUT", a["o_base"], a["o_base"] + m)
        if final
        else ("ACC", a["acc_base"], a["acc_base"] + m)
    )
    return Op(Opcode.GEMM, a, tuple(reads), (out,))


def random_stream(
    rng: np.random.Generator, cfg: AccelConfig, size: int, n_ops: int, fault: str = "none"
) -> Stream:
    """A random program of about ``n_ops`` instructions in a ``size``-byte window.

    ``fault`` is "none", "drop_push", "extra_pop", "illegal" or "bad_operand"; ``Stream.fault``
    says what was injected ("none" where the stream offered no place for it). A fault-free stream
    whose tokens would overflow the small queues of ``cfg`` (a legal DEADLOCK) is drawn again.
    """
    while True:
        s = _stream(rng, cfg, size, n_ops, fault)
        if s.fault != "none":
            return s
        insns = [isa.decode(cfg, w) for w in s.words]
        if not isa.schedule(cfg, insns).deadlock:
            return s


def _stream(
    rng: np.random.Generator, cfg: AccelConfig, size: int, n_ops: int, fault: str
) -> Stream:
    eb = {k: layout.entry_bytes(cfg, k) for k in Entry}
    n_data = 64
    blobs = _data(rng, cfg, n_data)
    region = {}
    pos = DATA
    for k in (Entry.W, Entry.X, Entry.Q):
        region[k], pos = pos, pos + len(blobs[k])
    out_base = -(-pos // 64) * 64
    out_entries = (size - out_base) // eb[Entry.OUT]
    depth = {b: isa.buf_depth(cfg, b) for b in Buf}
    ops: list[Op] = []
    for _ in range(n_ops):
        kind = rng.choice(["load", "load", "gemm", "gemm", "store", "load_out"])
        if kind in ("load", "load_out"):
            buf = Buf(int(rng.integers(0, len(Buf)))) if kind == "load" else Buf.X
            if kind == "load_out" and rng.random() < 0.5:
                buf = Buf.R
            ent = layout.BUF_ENTRY[buf]
            ys = _r(rng, 1, min(3, depth[buf]))
            xs = _r(rng, 1, max(1, min(6, depth[buf] // ys)))
            st = xs + _r(rng, 0, 3) if ys > 1 else xs
            sram = _r(rng, 0, depth[buf] - ys * xs)
            if kind == "load":
                first = _r(rng, 0, n_data - isa.block_entries(ys, xs, st))
                base, space = region[ent] + first * eb[ent], "data"
            else:
                first = _r(rng, 0, min(out_entries, 64) - isa.block_entries(ys, xs, st))
                base, space = out_base + first * eb[ent], "out"
            nbytes = isa.block_entries(ys, xs, st) * eb[ent]
            args = dict(buf=int(buf), sram=sram, dram=base // 8, y_size=ys, x_size=xs, x_stride=st)
            rd = (space, base, base + nbytes)
            ops.append(Op(Opcode.LOAD, args, (rd,), ((buf.name, sram, sram + ys * xs),)))
        elif kind == "gemm":
            ops.append(_gemm(rng, cfg))
        else:
            ys = _r(rng, 1, min(3, cfg.out_depth))
            xs = _r(rng, 1, max(1, min(4, cfg.out_depth // ys)))
            st = xs + _r(rng, 0, 3) if ys > 1 else xs
            sram = _r(rng, 0, cfg.out_depth - ys * xs)
            first = _r(rng, 0, min(out_entries, 64) - isa.block_entries(ys, xs, st))
            base = out_base + first * eb[Entry.OUT]
            nbytes = isa.block_entries(ys, xs, st) * eb[Entry.OUT]
            args = dict(sram=sram, dram=base // 8, y_size=ys, x_size=xs, x_stride=st)
            rd = (("OUT", sram, sram + ys * xs),)
            ops.append(Op(Opcode.STORE, args, rd, (("out", base, base + nbytes),)))
    ops = add_tokens(ops)
    words = [isa.encode(cfg, o.op, **o.args, **o.flags) for o in ops]
    if fault in ("drop_push", "extra_pop"):
        cands = [
            i
            for i, o in enumerate(ops)
            if (fault == "drop_push" and any(k.startswith("push") for k in o.flags))
            or (fault == "extra_pop" and o.op is Opcode.GEMM and not o.flags.get("pop_prev"))
        ]
        if not cands:
            fault = "none"
        else:
            i = int(rng.choice(cands))
            o = ops[i]
            flags = dict(o.flags)
            if fault == "drop_push":
                flags.pop(next(k for k in flags if k.startswith("push")))
            else:
                flags["pop_prev"] = 1
            words[i] = isa.encode(cfg, o.op, **o.args, **flags)
    elif fault in ("illegal", "bad_operand"):
        i = int(rng.integers(0, len(words)))
        if fault == "illegal":
            words[i] = int(rng.integers(5, 16))
        else:
            words[i] = isa.encode(
                cfg, Opcode.LOAD, buf=0, sram=0, dram=0, y_size=1, x_size=0, x_stride=1
            )
    img = bytearray(size)
    img[: len(words) * (cfg.insn_bits // 8)] = isa.to_bytes(cfg, words)
    for k in (Entry.W, Entry.X, Entry.Q):
        img[region[k] : region[k] + len(blobs[k])] = blobs[k]
    if len(words) * (cfg.insn_bits // 8) > DATA:
        raise ValueError(f"{len(words)} instructions do not fit below the data region")
    return Stream(bytes(img), words, fault)
