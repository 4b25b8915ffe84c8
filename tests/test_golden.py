"""Lowering + runtime + GoldenDevice reproduce IntGraph.evaluate bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from graphgen import gemm_word, random_graph, random_specs

from rmsmp.arch import AccelConfig, RowGroup, isa, layout, numerics, regs
from rmsmp.arch.isa import Buf, Error, Opcode
from rmsmp.arch.layout import Entry
from rmsmp.compiler.ir import IntGraph, IntLayer
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run, run_with_stats
from rmsmp.sim.golden import GoldenDevice

TINY = AccelConfig.for_board("tiny")
PYNQ = AccelConfig.for_board("pynq-z1")


def _check(graph, cfg, batch, n_samples, rng):
    prog = lower(graph, cfg, batch)
    x = rng.integers(graph.input_lo, graph.input_hi + 1, size=(n_samples, *graph.input_shape))
    got = run(prog, x.astype(np.int16), backend="golden")
    want = graph.evaluate(x)
    assert got.shape == want.shape
    assert got.dtype == np.int64
    assert np.array_equal(got, want)
    return prog


@pytest.mark.parametrize("seed", range(110))
def test_random_graphs_tiny(seed):
    rng = np.random.default_rng(seed)
    shape, specs = random_specs(rng, TINY, max_ch=14)
    graph = random_graph(rng, TINY, shape, specs)
    _check(graph, TINY, int(rng.integers(1, 4)), int(rng.integers(1, 6)), rng)


@pytest.mark.parametrize("seed", range(4))
def test_random_graphs_pynq(seed):
    rng = np.random.default_rng(1000 + seed)
    shape, specs = random_specs(rng, PYNQ, max_ch=40)
    graph = random_graph(rng, PYNQ, shape, specs)
    _check(graph, PYNQ, int(rng.integers(1, 4)), int(rng.integers(1, 6)), rng)


def test_tiny_tiling_paths():
    """One chain whose layers need split input channels (partial sums through ACC), several input
    tiles per image, both loop orders, streamed weights and inputs, and more row tiles than Q."""
    rng = np.random.default_rng(7)
    specs = [
        dict(kind="conv", n=20, kernel=3, stride=1, padding=1),
        dict(kind="conv", n=9, kernel=3, stride=2, padding=0),
        dict(kind="linear", n=30, flatten=True),
        dict(kind="linear", n=5, lo=-128, hi=127),
    ]
    graph = random_graph(rng, TINY, (17, 6, 6), specs)
    batch = 2
    prog = _check(graph, TINY, batch, 5, rng)
    recs = prog.layers
    half_w = TINY.w_depth // 2
    # channels split over W groups: more groups than row tiles, a chunk group fits half of W
    assert any(r.w_groups > r.out_tiles for r in recs)
    assert any(r.in_chunks * r.kernel[0] * r.kernel[1] > half_w for r in recs)
    assert any(r.x_tiles > batch for r in recs)
    assert {r.order for r in recs} == {"weights outer", "inputs outer"}
    assert any(r.dma_bytes > r.min_dma_bytes for r in recs)  # something is fetched again
    assert any(r.out_tiles > TINY.q_depth for r in recs)
    for r in recs:
        assert r.array_macs >= r.macs > 0


def test_pynq_conv_chain_and_float_input():
    rng = np.random.default_rng(11)
    specs = [
        dict(kind="conv", n=24, kernel=3, stride=1, padding=1),
        dict(kind="conv", n=32, kernel=3, stride=2, padding=1),
        dict(kind="linear", n=10, flatten=True, lo=-128, hi=127),
    ]
    graph = random_graph(rng, PYNQ, (3, 8, 8), specs)
    prog = lower(graph, PYNQ, 4)
    xf = rng.normal(0, 2, size=(6, 3, 8, 8)).astype(np.float32)
    res = run_with_stats(prog, xf)
    assert np.array_equal(res.output, graph.evaluate(graph.quantize_input(xf)))
    assert res.placement[0] == ("quantize input", "host")
    on_device = [step for step, where in res.placement if where == "golden"]
    assert len(on_device) == 3 and all(
        r.name in s for r, s in zip(prog.layers, on_device, strict=True)
    )
    assert res.placement[-1] == ("gather output channels", "host")
    # the golden model's counters come from the cycle model: two batch chunks of 4 (6 padded
    # to 8 images), every MAC of the three layers issued once per chunk
    assert res.mac_cycles == 2 * sum(r.array_macs for r in prog.layers) // PYNQ.peak_macs_per_cycle
    assert res.total_cycles > res.mac_cycles and res.load_cycles > 0 and res.store_cycles > 0


def test_output_slot_gather_is_a_permutation():
    rng = np.random.default_rng(3)
    graph = random_graph(rng, TINY, (12,), [dict(kind="linear", n=13, lo=-128, hi=127)])
    prog = lower(graph, TINY, 1)
    gather = prog.output_gather()
    assert sorted(gather.tolist()) == sorted(s for s, c in enumerate(prog.output_slots) if c >= 0)
    assert [prog.output_slots[s] for s in gather] == list(range(13))


def _device(cfg, size=4096):
    dev = GoldenDevice(cfg, size)
    dev.write_reg("WINDOW_BASE", dev.window_base)
    dev.write_reg("WINDOW_LIMIT", dev.window_base + size)
    return dev


def _start(dev, words, at=0):
    dev.write(at, isa.to_bytes(dev.config, words))
    dev.write_reg("INSN_ADDR", at)
    dev.write_reg("INSN_COUNT", len(words))
    dev.write_reg("CTRL", 1)
    dev.wait(1)


def _load(cfg, buf, sram, at, x_size, y_size=1, x_stride=0, **flags):
    """LOAD from window byte ``at`` (a multiple of 8)."""
    assert at % 8 == 0
    args = dict(y_size=y_size, x_size=x_size, x_stride=x_stride)
    return isa.encode(cfg, Opcode.LOAD, buf=int(buf), sram=sram, dram=at // 8, **args, **flags)


def _store(cfg, sram, at, x_size, y_size=1, x_stride=0, **flags):
    assert at % 8 == 0
    args = dict(y_size=y_size, x_size=x_size, x_stride=x_stride)
    return isa.encode(cfg, Opcode.STORE, sram=sram, dram=at // 8, **args, **flags)


def _done(dev, n):
    assert (Error(dev.read_reg("ERROR")), dev.read_reg("PC")) == (Error.NONE, n)
    assert dev.read_reg("STATUS") == regs.Status.DONE


def _random_levels(rng, cfg, k):
    """[k, rows, cols] weight levels, each row from its own format, and their codes."""
    fmts = [numerics.weight_format(f) for f in layout.row_formats(cfg)]
    levels = np.stack([rng.choice(f.levels(), size=(k, cfg.cols)) for f in fmts], axis=1)
    codes = np.stack([f.encode(levels[:, r]) for r, f in enumerate(fmts)], axis=1)
    return levels, codes


def _random_q(rng, cfg):
    bias = rng.integers(-5000, 5000, cfg.rows)
    mult, shift = np.array(
        [numerics.requant_multiplier(rng.uniform(1e-4, 1e-2)) for _ in range(cfg.rows)]
    ).T
    return bias, mult, shift


def test_gemm_semantics_against_numerics():
    """A plain GEMM (the 1x1 case): LOADs, two accumulating GEMMs, STORE; checked with
    numerics.dot row by row."""
    cfg = TINY
    rng = np.random.default_rng(5)
    dev = _device(cfg, 8192)
    fmts = [numerics.weight_format(f) for f in layout.row_formats(cfg)]
    k, m = 3, 2
    _, codes = _random_levels(rng, cfg, k)
    x = rng.integers(-128, 128, size=(2 * k * m, cfg.cols))  # [half][chunk][m]
    bias, mult, shift = _random_q(rng, cfg)
    q = layout.q_values(bias, mult, shift)[None]
    dev.write(1024, layout.pack(cfg, Entry.W, codes.reshape(k, -1)))
    dev.write(2048, layout.pack(cfg, Entry.X, x))
    dev.write(3072, layout.pack(cfg, Entry.Q, q))

    def gemm(reset, final, x_base, **flags):
        return gemm_word(
            cfg,
            reset=reset,
            final=final,
            w_base=1,
            x_base=x_base,
            acc_base=3,
            o_base=2,
            q_base=1,
            ow_count=m,
            c_count=k,
            tile_w=m,
            c_stride=m,
            lo=-20,
            hi=90,
            **flags,
        )

    words = [
        _load(cfg, Buf.W, 1, 1024, k),
        _load(cfg, Buf.X, 0, 2048, 2 * m * k),
        _load(cfg, Buf.Q, 1, 3072, 1, push_next=1),
        gemm(1, 0, 0, pop_prev=1),
        gemm(0, 1, m * k, push_next=1),
        _store(cfg, 2, 4096, m, pop_prev=1),
    ]
    _start(dev, words)
    _done(dev, len(words))
    got = layout.unpack(cfg, Entry.OUT, dev.read(4096, m * layout.entry_bytes(cfg, Entry.OUT)))
    xs = x.reshape(2, k, m, cfg.cols).transpose(0, 2, 1, 3)  # [half][m][chunk][cols]
    s = np.zeros((m, cfg.rows), dtype=np.int64)
    for r, f in enumerate(fmts):
        for half in range(2):
            s[:, r] += numerics.dot(f, codes[None, :, r, :], xs[half]).sum(axis=1)
    want = numerics.requant(s, bias, mult, shift, -20, 90)
    assert np.array_equal(got, want)


CONV_CFG = AccelConfig("conv", TINY.groups, cols=TINY.cols, requant_lanes=2)
"""TINY's rows with the default (deep) buffers, so a window walk can have many outputs."""


def _conv_reference(img, w4, stride, pad, out_hw):
    """Convolution by zero padding and slicing: img [C, H, W], w4 [R, C, kh, kw] -> [M, R]."""
    _, h, w = img.shape
    _, _, kh, kw = w4.shape
    (sy, sx), (pt, pl), (oh, ow) = stride, pad, out_hw
    bottom = max(0, (oh - 1) * sy + kh - pt - h)
    right = max(0, (ow - 1) * sx + kw - pl - w)
    xp = np.pad(img, ((0, 0), (pt, bottom), (pl, right)))
    out = np.zeros((oh, ow, w4.shape[0]), dtype=np.int64)
    for oy in range(oh):
        for ox in range(ow):
            patch = xp[:, oy * sy : oy * sy + kh, ox * sx : ox * sx + kw]
            out[oy, ox] = np.einsum("rcij,cij->r", w4, patch)
    return out.reshape(oh * ow, -1)


def _conv_case(rng):
    kh, kw = (int(v) for v in rng.integers(1, 8, 2))
    sy, sx = (int(v) for v in rng.integers(1, 3, 2))
    pt, pl = int(rng.integers(0, kh)), int(rng.integers(0, kw))
    th, tw = (int(v) for v in rng.integers(1, 10, 2))
    pb, pr = int(rng.integers(0, kh)), int(rng.integers(0, kw))
    oh = max(1, (th + pt + pb - kh) // sy + 1)
    ow = max(1, (tw + pl + pr - kw) // sx + 1)
    return dict(kh=kh, kw=kw, stride=(sy, sx), pad=(pt, pl), tile=(th, tw), out=(oh, ow))


FIXED_CONV_CASES = [
    dict(kh=1, kw=1, stride=(1, 1), pad=(0, 0), tile=(3, 4), out=(3, 4)),  # a plain GEMM
    dict(kh=7, kw=7, stride=(2, 2), pad=(3, 3), tile=(9, 9), out=(5, 5)),
    dict(kh=3, kw=3, stride=(1, 1), pad=(1, 1), tile=(6, 5), out=(6, 5)),  # "same" padding
    dict(kh=3, kw=1, stride=(2, 1), pad=(2, 0), tile=(4, 3), out=(3, 3)),  # asymmetric
    dict(kh=2, kw=7, stride=(1, 2), pad=(0, 6), tile=(2, 2), out=(1, 4)),  # mostly padding
    dict(kh=5, kw=5, stride=(3, 3), pad=(4, 4), tile=(8, 8), out=(4, 4)),  # stride 3
]


@pytest.mark.parametrize(
    "case", FIXED_CONV_CASES + [f"seed{i}" for i in range(40)], ids=lambda c: str(c)[:40]
)
def test_conv_window_walk_against_numpy_convolution(case):
    """One GEMM walks a kh x kw window over c_count channel chunks of an X tile (padding outside
    the tile), accumulating into ACC; a second GEMM adds another kernel and requantises."""
    cfg = CONV_CFG
    seed = int(case[4:]) if isinstance(case, str) else 100 + FIXED_CONV_CASES.index(case)
    rng = np.random.default_rng(seed)
    c = _conv_case(rng) if isinstance(case, str) else case
    kh, kw, (th, tw), (oh, ow) = c["kh"], c["kw"], c["tile"], c["out"]
    m = oh * ow
    cc = int(rng.integers(1, 4))  # channel chunks
    c_stride = th * tw + int(rng.integers(0, 6))  # gaps between chunks are never read
    x_base, w_base, acc_base = (int(v) for v in rng.integers(0, 20, 3))
    o_base = int(rng.integers(0, cfg.out_depth - m + 1))
    k = cc * kh * kw
    # an X region with every entry random (gaps included), and the image it holds
    n_x = (cc - 1) * c_stride + th * tw
    x = rng.integers(-128, 128, size=(n_x, cfg.cols))
    img = np.zeros((cc * cfg.cols, th, tw), dtype=np.int64)
    for ci, yi, xi in np.ndindex(cc, th, tw):
        img[ci * cfg.cols : (ci + 1) * cfg.cols, yi, xi] = x[ci * c_stride + yi * tw + xi]
    # two kernels; W entry (c*kh + i)*kw + j holds tap (i, j) of chunk c for every row
    levels, codes = _random_levels(rng, cfg, 2 * k)
    w4 = (
        levels.reshape(2, cc, kh, kw, cfg.rows, cfg.cols)
        .transpose(0, 4, 1, 5, 2, 3)
        .reshape(2, cfg.rows, cc * cfg.cols, kh, kw)
    )
    bias, mult, shift = _random_q(rng, cfg)
    lo, hi = -100, 110
    dev = _device(cfg, 1 << 18)
    at_w, at_x, at_q, at_out = 0x1000, 0x20000, 0x30000, 0x38000
    dev.write(at_w, layout.pack(cfg, Entry.W, codes.reshape(2 * k, -1)))
    dev.write(at_x, layout.pack(cfg, Entry.X, x))
    dev.write(at_q, layout.pack(cfg, Entry.Q, layout.q_values(bias, mult, shift)[None]))
    walk = dict(
        x_base=x_base,
        acc_base=acc_base,
        o_base=o_base,
        q_base=3,
        oh_count=oh,
        ow_count=ow,
        c_count=cc,
        kh=kh,
        kw=kw,
        stride_y=c["stride"][0],
        stride_x=c["stride"][1],
        pad_top=c["pad"][0],
        pad_left=c["pad"][1],
        tile_h=th,
        tile_w=tw,
        c_stride=c_stride,
        lo=lo,
        hi=hi,
    )
    words = [
        _load(cfg, Buf.W, w_base, at_w, 2 * k),
        _load(cfg, Buf.Q, 3, at_q, 1),
        _load(cfg, Buf.X, x_base, at_x, n_x, push_next=1),
        gemm_word(cfg, reset=1, final=0, w_base=w_base, pop_prev=1, **walk),
    ]
    _start(dev, words)
    _done(dev, len(words))
    first = _conv_reference(img, w4[0], c["stride"], c["pad"], (oh, ow))
    assert np.array_equal(dev.acc[acc_base : acc_base + m], first)
    words = [
        gemm_word(cfg, reset=0, final=1, w_base=w_base + k, push_next=1, **walk),
        _store(cfg, o_base, at_out, m, pop_prev=1),
    ]
    _start(dev, words, at=0x800)  # buffers persist between runs
    _done(dev, len(words))
    both = first + _conv_reference(img, w4[1], c["stride"], c["pad"], (oh, ow))
    got = layout.unpack(cfg, Entry.OUT, dev.read(at_out, m * layout.entry_bytes(cfg, Entry.OUT)))
    assert np.array_equal(got, numerics.requant(both, bias, mult, shift, lo, hi))
    assert got.min() < got.max()  # the requantised outputs are not all clamped to one value


def test_2d_load_gathers_rows_with_x_stride():
    """LOAD row y = x_size entries from entry y*x_stride of the block; rows land packed."""
    cfg = TINY
    rng = np.random.default_rng(21)
    dev = _device(cfg, 1 << 14)
    x = rng.integers(-128, 128, size=(64, cfg.cols))
    _, wcodes = _random_levels(rng, cfg, 16)
    wcodes = wcodes.reshape(16, -1)
    bias, mult, shift = _random_q(rng, cfg)
    q = np.stack([layout.q_values(bias + i, mult, shift) for i in range(6)])
    eb = {e: layout.entry_bytes(cfg, e) for e in Entry}
    dev.write(0x1000, layout.pack(cfg, Entry.X, x))
    dev.write(0x2000, layout.pack(cfg, Entry.W, wcodes))
    dev.write(0x3000, layout.pack(cfg, Entry.Q, q))
    words = [
        _load(cfg, Buf.X, 5, 0x1000 + 2 * eb[Entry.X], 4, y_size=3, x_stride=7),
        _load(cfg, Buf.W, 9, 0x2000 + eb[Entry.W], 3, y_size=4, x_stride=3),  # rows abut
        _load(cfg, Buf.Q, 0, 0x3000, 1, y_size=2, x_stride=5),
    ]
    _start(dev, words)
    _done(dev, 3)
    want_x = np.zeros_like(dev.x)
    want_w = np.zeros_like(dev.w)
    for y in range(3):
        for i in range(4):
            want_x[5 + y * 4 + i] = x[2 + y * 7 + i]
    for y in range(4):
        for i in range(3):
            want_w[9 + y * 3 + i] = wcodes[1 + y * 3 + i].reshape(cfg.rows, cfg.cols)
    assert np.array_equal(dev.x, want_x)
    assert np.array_equal(dev.w, want_w)
    assert dev.q[:, :, 0].tolist() == [(bias + 0).tolist(), (bias + 5).tolist()]
    assert np.array_equal(dev.q[:, :, 1:3], np.stack([np.stack([mult, shift], 1)] * 2))


def test_2d_store_scatters_rows_with_x_stride():
    """STORE OUT entry sram + y*x_size + x to entry y*x_stride + x; the gaps keep their bytes."""
    cfg = TINY
    rng = np.random.default_rng(22)
    dev = _device(cfg, 1 << 14)
    eb = layout.entry_bytes(cfg, Entry.OUT)
    out = rng.integers(-128, 128, size=(cfg.out_depth, cfg.rows))
    dev.out[:] = out  # the OUT buffer as GEMMs would have left it
    sentinel = bytes(range(256)) * 8
    dev.write(0x1000, sentinel)
    y_size, x_size, x_stride, sram = 2, 3, 5, 1
    _start(dev, [_store(cfg, sram, 0x1000 + eb, x_size, y_size=y_size, x_stride=x_stride)])
    _done(dev, 1)
    mem = dev.read(0x1000, len(sentinel))
    got = layout.unpack(cfg, Entry.OUT, mem)
    want = layout.unpack(cfg, Entry.OUT, sentinel)
    for y in range(y_size):
        for i in range(x_size):
            want[1 + y * x_stride + i] = out[sram + y * x_size + i]
    assert np.array_equal(got, want)
    assert mem[:eb] == sentinel[:eb]
    assert mem[(2 + x_stride + x_size) * eb :] == sentinel[(2 + x_stride + x_size) * eb :]


def test_accumulator_wraps_at_acc_bits():
    cfg = AccelConfig("w24", (RowGroup("fixed8", 8),), cols=8, acc_bits=24, requant_lanes=2)
    dev = _device(cfg, 1 << 14)
    k = 100
    codes = np.full((k, cfg.rows * cfg.cols), numerics.weight_format("fixed8").encode(127))
    dev.write(1024, layout.pack(cfg, Entry.W, codes))
    dev.write(8192, layout.pack(cfg, Entry.X, np.full((k, cfg.cols), -128)))
    words = [
        _load(cfg, Buf.W, 0, 1024, k),
        _load(cfg, Buf.X, 0, 8192, k, push_next=1),
        gemm_word(cfg, final=0, c_count=k, pop_prev=1),
    ]
    _start(dev, words)
    _done(dev, 3)
    exact = 127 * -128 * k * cfg.cols
    assert exact < -(1 << 23)
    wrapped = (exact + (1 << 23)) % (1 << 24) - (1 << 23)
    assert dev.acc[0].tolist() == [wrapped] * cfg.rows


def test_row_placement_follows_format_groups():
    """tiny groups: pot4 rows 0-2, sp2-4 3-4, fixed4 5-6, fixed8 7 of each 8-row tile."""
    fmts = ["fixed8", "pot4", "fixed8", "pot4", "pot4", "pot4", "fixed4"]
    w = np.ones((len(fmts), 3), dtype=np.int64)
    ones = np.ones(len(fmts), dtype=np.int64)
    layer = IntLayer("fc", "linear", w, fmts, 0 * ones, ones, 0 * ones, -128, 127, 1.0, 1.0)
    prog = lower(IntGraph([layer], (3,), 1.0), TINY, 1)
    want_slot = [7, 0, 15, 1, 2, 8, 5]
    assert prog.layers[0].out_tiles == 2
    want = [-1] * (2 * TINY.rows)
    for n, s in enumerate(want_slot):
        want[s] = n
    assert prog.output_slots == want
    x = np.array([[1, 2, 3]])
    assert np.array_equal(run(prog, x), layer.evaluate(x))
