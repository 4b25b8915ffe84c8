"""Program save/load, summary, dequantize, and the host tensor helpers."""

from __future__ import annotations

import numpy as np
from graphgen import random_graph

from rmsmp.arch import AccelConfig
from rmsmp.compiler.lower import lower
from rmsmp.host.program import ALIGN, Program
from rmsmp.host.runtime import run
from rmsmp.host.tensors import im2col, out_from_entries, x_entries

TINY = AccelConfig.for_board("tiny")


def _program(rng, batch=2):
    specs = [
        dict(kind="conv", n=11, kernel=3, stride=1, padding=1),
        dict(kind="linear", n=6, flatten=True, lo=-128, hi=127),
    ]
    graph = random_graph(rng, TINY, (5, 4, 4), specs)
    return graph, lower(graph, TINY, batch)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    graph, prog = _program(rng)
    path = tmp_path / "net.rmsmp"
    prog.save(path)
    back = Program.load(path)
    assert back.config == prog.config and back.config_hash == prog.config_hash
    assert back.layers == prog.layers
    assert back.segments == prog.segments
    for name in ("batch", "window_size", "input_shape", "input_scale", "input_lo", "input_hi"):
        assert getattr(back, name) == getattr(prog, name)
    assert back.output_shape == prog.output_shape and back.output_slots == prog.output_slots
    x = rng.integers(-128, 128, size=(3, 5, 4, 4))
    assert np.array_equal(run(back, x), graph.evaluate(x))
    assert back.summary() == prog.summary()


def test_window_regions_aligned_and_disjoint():
    _, prog = _program(np.random.default_rng(1))
    spans = [(s.offset, s.offset + len(s.data)) for s in prog.segments.values()]
    for r in prog.layers:
        spans += [(r.in_offset, r.in_offset + r.in_size), (r.out_offset, r.out_offset + r.out_size)]
        assert r.insn_offset % ALIGN == 0 and r.w_offset % ALIGN == 0 and r.q_offset % ALIGN == 0
    spans.sort()
    for (a0, a1), (b0, _) in zip(spans, spans[1:], strict=False):
        assert a0 % ALIGN == 0 and a1 <= b0
    assert spans[-1][1] <= prog.window_size


def test_summary_and_dequantize():
    _, prog = _program(np.random.default_rng(2))
    text = prog.summary()
    assert prog.config_hash in text and all(r.name in text for r in prog.layers)
    y = np.array([[-3, 0, 7]])
    deq = prog.dequantize(y)
    assert deq.dtype == np.float32
    assert np.allclose(deq, y * prog.output_scale)


def test_im2col_matches_direct_loop():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(2, 3, 5, 6))
    kh, kw, stride, pad = 3, 2, (2, 1), (1, 0)
    cols = im2col(x, kh, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    oh, ow = (5 + 2 - 3) // 2 + 1, (6 - 2) // 1 + 1
    assert cols.shape == (2 * oh * ow, 3 * kh * kw)
    for b in range(2):
        for i in range(oh):
            for j in range(ow):
                patch = xp[b, :, i * 2 : i * 2 + kh, j : j + kw]
                assert np.array_equal(cols[b * oh * ow + i * ow + j], patch.reshape(-1))


def test_x_entries_order_and_out_from_entries():
    rng = np.random.default_rng(4)
    m, k, cols, kt = 3, 21, 4, 2
    a = rng.integers(-9, 9, size=(m, k))
    e = x_entries(a, cols, kt)
    kc = 6
    padded = np.pad(a, ((0, 0), (0, kc * cols - k))).reshape(m, kc, cols)
    i = 0
    for k0 in range(0, kc, kt):
        for row in range(m):
            for c in range(k0, min(k0 + kt, kc)):
                assert np.array_equal(e[i], padded[row, c])
                i += 1
    assert i == len(e)
    out = rng.integers(-128, 128, size=(2 * m, 5))
    g = out_from_entries(out, 2, m)
    assert np.array_equal(g[:, :5], out[:m]) and np.array_equal(g[:, 5:], out[m:])
