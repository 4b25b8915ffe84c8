"""Lowering + runtime + GoldenDevice reproduce IntGraph.evaluate bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from graphgen import gemm_word, random_graph, random_specs

from rmsmp.arch import AccelConfig, RowGroup, isa, layout, numerics
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
    """One chain that needs k-tiling, non-resident W and Q, and several m-tiles."""
    rng = np.random.default_rng(7)
    specs = [
        dict(kind="conv", n=20, kernel=3, stride=1, padding=1),
        dict(kind="conv", n=9, kernel=3, stride=2, padding=0),
        dict(kind="linear", n=30, flatten=True),
        dict(kind="linear", n=5, lo=-128, hi=127),
    ]
    graph = random_graph(rng, TINY, (17, 6, 6), specs)
    prog = _check(graph, TINY, 2, 5, rng)
    recs = prog.layers
    assert recs[0].nk > 1 and recs[0].m > TINY.out_depth
    assert any(r.n_tiles > TINY.q_depth and not r.q_resident for r in recs)
    assert any(not r.w_resident for r in recs)
    assert all(r.mt <= TINY.out_depth for r in recs)


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
    assert ("quantize input", "host") in res.placement
    assert len(res.layer_cycles) == 3 and res.total_cycles == 0


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


def test_gemm_semantics_against_numerics():
    """Hand-assembled LOADs + two accumulating GEMMs + STORE, checked with numerics.dot."""
    cfg = TINY
    rng = np.random.default_rng(5)
    dev = _device(cfg, 8192)
    fmts = [numerics.weight_format(f) for f in layout.row_formats(cfg)]
    k, m = 3, 2
    levels = np.stack([rng.choice(f.levels(), size=(k, cfg.cols)) for f in fmts], axis=1)
    codes = np.stack([f.encode(levels[:, r]) for r, f in enumerate(fmts)], axis=1)
    x = rng.integers(-128, 128, size=(m * k * 2, cfg.cols))
    bias = rng.integers(-5000, 5000, cfg.rows)
    mult, shift = np.array([numerics.requant_multiplier(rng.uniform(1e-4, 1e-2)) for _ in fmts]).T
    q = np.stack([bias, mult, shift], axis=1).reshape(1, -1)
    eb = {e: layout.entry_bytes(cfg, e) for e in Entry}
    dev.write(1024, layout.pack(cfg, Entry.W, codes.reshape(k, -1)))
    dev.write(2048, layout.pack(cfg, Entry.X, x))
    dev.write(3072, layout.pack(cfg, Entry.Q, q))

    def load(buf, sram, at, count):
        return isa.encode(cfg, Opcode.LOAD, buf=buf, sram=sram, dram=at // 8, count=count)

    def gemm(reset, final, x_base):
        return isa.encode(
            cfg,
            Opcode.GEMM,
            reset=reset,
            final=final,
            w_base=1,
            x_base=x_base,
            acc_base=3,
            o_base=2,
            q_base=1,
            m_count=m,
            k_count=k,
            lo=-20,
            hi=90,
        )

    words = [
        load(Buf.W, 1, 1024, k),
        load(Buf.X, 0, 2048, 2 * m * k),
        load(Buf.Q, 1, 3072, 1),
        gemm(1, 0, 0),
        gemm(0, 1, m * k),
        isa.encode(cfg, Opcode.STORE, sram=2, dram=4096 // 8, count=m),
    ]
    _start(dev, words)
    assert dev.read_reg("ERROR") == Error.NONE and dev.read_reg("PC") == len(words)
    got = layout.unpack(cfg, Entry.OUT, dev.read(4096, m * eb[Entry.OUT]))
    xs = x.reshape(2, m, k, cfg.cols)
    s = np.zeros((m, cfg.rows), dtype=np.int64)
    for r, f in enumerate(fmts):
        for half in range(2):
            s[:, r] += numerics.dot(f, codes[None, :, r, :], xs[half]).sum(axis=1)
    want = numerics.requant(s, bias, mult, shift, -20, 90)
    assert np.array_equal(got, want)


def test_accumulator_wraps_at_acc_bits():
    cfg = AccelConfig("w24", (RowGroup("fixed8", 2),), cols=8, acc_bits=24, requant_lanes=2)
    dev = _device(cfg, 8192)
    k = 100
    codes = np.full((k, 2 * cfg.cols), numerics.weight_format("fixed8").encode(127))
    dev.write(1024, layout.pack(cfg, Entry.W, codes))
    dev.write(4096, layout.pack(cfg, Entry.X, np.full((k, cfg.cols), -128)))
    dev.write(6144, layout.pack(cfg, Entry.Q, np.array([[0, 1, 0, 0, 1, 0]])))
    words = [
        isa.encode(cfg, Opcode.LOAD, buf=Buf.W, sram=0, dram=128, count=k),
        isa.encode(cfg, Opcode.LOAD, buf=Buf.X, sram=0, dram=512, count=k),
        isa.encode(cfg, Opcode.LOAD, buf=Buf.Q, sram=0, dram=768, count=1),
        gemm_word(cfg, final=0, k_count=k),
    ]
    _start(dev, words)
    exact = 127 * -128 * k * cfg.cols
    assert exact < -(1 << 23)
    assert dev.acc[0].tolist() == [int(numerics.wrap(exact, 24))] * 2


def test_row_placement_follows_format_groups():
    """tiny groups: pot4 rows 0-2, sp2-4 3-4, fixed4 5-6, fixed8 7 of each 8-row tile."""
    fmts = ["fixed8", "pot4", "fixed8", "pot4", "pot4", "pot4", "fixed4"]
    w = np.ones((len(fmts), 3), dtype=np.int64)
    ones = np.ones(len(fmts), dtype=np.int64)
    layer = IntLayer("fc", "linear", w, fmts, 0 * ones, ones, 0 * ones, -128, 127, 1.0, 1.0)
    prog = lower(IntGraph([layer], (3,), 1.0), TINY, 1)
    want_slot = [7, 0, 15, 1, 2, 8, 5]
    assert prog.layers[0].n_tiles == 2
    assert prog.layers[0].keep == tuple(sorted(want_slot))
    assert prog.output_slots == [want_slot.index(s) for s in sorted(want_slot)]
    x = np.array([[1, 2, 3]])
    assert np.array_equal(run(prog, x), layer.evaluate(x))
