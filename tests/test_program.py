"""Program save/load, summary, dequantize, and the host tensor helpers."""

from __future__ import annotations

import numpy as np
from graphgen import random_graph

from rmsmp.arch import AccelConfig, layout
from rmsmp.arch.layout import Entry
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
    assert back.insn_count == prog.insn_count > 0
    x = rng.integers(-128, 128, size=(3, 5, 4, 4))
    assert np.array_equal(run(back, x), graph.evaluate(x))
    assert back.summary() == prog.summary()


def test_window_regions_aligned_and_disjoint():
    _, prog = _program(np.random.default_rng(1))
    ib = TINY.insn_bits // 8
    assert prog.segments["insn"].offset == 0
    assert len(prog.segments["insn"].data) == prog.insn_count * ib
    # every instruction belongs to one pass (hoisted loads interleave the passes)
    owner = [prog.pass_at(pc).name for pc in range(prog.insn_count)]
    assert sum(prog.insn_owner[1::2]) == prog.insn_count
    for r in prog.layers:
        assert owner.count(r.name) == r.insn_count > 0
        assert owner.index(r.name) * ib == r.insn_offset
    # one layer's output map is the next one's input map
    for a, b in zip(prog.layers, prog.layers[1:], strict=False):
        assert (a.out_offset, a.out_size) == (b.in_offset, b.in_size)
    seg = {k: (s.offset, s.offset + len(s.data)) for k, s in prog.segments.items()}
    blobs = {"w": [], "q": []}
    for r in prog.layers:
        blobs["w"].append((r.w_offset, r.w_offset + r.w_size))
        blobs["q"].append((r.q_offset, r.q_offset + r.q_size))
    for k, spans in blobs.items():  # each layer's W and Q blob lies in the segment
        assert all(seg[k][0] <= a0 and a1 <= seg[k][1] for a0, a1 in spans)
        _assert_disjoint_aligned(spans)
    maps = [(r.in_offset, r.in_offset + r.in_size) for r in prog.layers]
    last = prog.layers[-1]
    maps.append((last.out_offset, last.out_offset + last.out_size))
    eb = layout.entry_bytes(TINY, Entry.X)
    for r in prog.layers:
        assert r.out_size == prog.batch * r.out_tiles * r.out_hw[0] * r.out_hw[1] * eb
    regions = [*seg.values(), *maps]
    _assert_disjoint_aligned(regions)
    assert max(a1 for _, a1 in regions) <= prog.window_size


def _assert_disjoint_aligned(spans):
    spans = sorted(spans)
    for (a0, a1), (b0, _) in zip(spans, spans[1:], strict=False):
        assert a0 % ALIGN == 0 and a1 <= b0
    assert spans[-1][0] % ALIGN == 0


def test_summary_and_dequantize():
    _, prog = _program(np.random.default_rng(2))
    text = prog.summary()
    assert prog.config_hash in text and all(r.name in text for r in prog.layers)
    assert f"{prog.insn_count} instructions" in text
    rows = text.splitlines()[-len(prog.layers) :]
    for r, row in zip(prog.layers, rows, strict=True):
        assert row.split()[:3] == [r.name, r.kind, f"{r.kernel[0]}x{r.kernel[1]}/{r.stride[0]}"]
        assert r.order in row
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
