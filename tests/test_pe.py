"""The packed Fixed-4 row pair and the MAC array's PE units (Amaranth simulator).

The packing arithmetic is checked twice: as a numpy model, for every ``k`` a pair of up to 256
columns uses, and as the Amaranth component. Both take every weight pair times every
activation on its own, and the sums at their extremes.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from rmsmp.arch import AccelConfig, layout, numerics
from rmsmp.arch.layout import Entry
from rmsmp.arch.timing import MAC_LATENCY
from rmsmp.hw.mac_array import MacArray
from rmsmp.hw.pe import DSP_A_BITS, FIXED4, DotRow, PairRow, pair_shift

ACT_BITS = 8
X_LO, X_HI = numerics.act_range(ACT_BITS, signed=True)
N_CODES = 1 << FIXED4.bits
MAX_COLS = 256
"""The most columns whose packed weight still fits the DSP48E1's A operand."""


def every_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low code, high code, activation) of all 16 * 16 * 256 cases, flattened."""
    grid = np.meshgrid(
        np.arange(N_CODES), np.arange(N_CODES), np.arange(X_LO, X_HI + 1), indexing="ij"
    )
    return tuple(g.ravel() for g in grid)


def one_per_vector(cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vector i holds case i in column i mod cols, zeros elsewhere: [n, cols] low codes,
    high codes, activations."""
    lo, hi, x = every_case()
    col = np.arange(len(x)) % cols
    out = [np.zeros((len(x), cols), np.int64) for _ in range(3)]
    for arr, v in zip(out, (lo, hi, x), strict=True):
        arr[np.arange(len(x)), col] = v
    return tuple(out)


def extremes(cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every column at the same extreme (low code, high code, activation): the largest and
    smallest sums of both rows."""
    codes = np.array([N_CODES // 2, N_CODES // 2 - 1])  # levels -8 and 7
    lo, hi, x = (a.ravel() for a in np.meshgrid(codes, codes, [X_LO, X_HI], indexing="ij"))
    return tuple(np.repeat(v[:, None], cols, axis=1) for v in (lo, hi, x))


def packed_pair_model(
    lo: np.ndarray, hi: np.ndarray, x: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """What PairRow computes, in Python integers: the packed products summed with the offset,
    wrapped to 2k bits, then split."""
    a = FIXED4.decode(hi).astype(object) * (1 << k) + FIXED4.decode(lo).astype(object)
    s = (a * x.astype(object)).sum(axis=-1) + (1 << (k - 1))
    s = np.array([int(v) % (1 << (2 * k)) for v in s], dtype=object)
    low = np.array([(int(v) & ((1 << k) - 1)) - (1 << (k - 1)) for v in s], dtype=np.int64)
    high = np.array([int(v) >> k for v in s], dtype=np.int64)
    high = np.where(high >= 1 << (k - 1), high - (1 << k), high)
    return low, high


def _pair_ks() -> dict[int, int]:
    """The largest column count of each ``k`` up to MAX_COLS columns."""
    return {pair_shift(ACT_BITS, c): c for c in range(1, MAX_COLS + 1)}


@pytest.mark.parametrize("k", sorted(_pair_ks()))
def test_packing_model_is_two_dots(k: int) -> None:
    cols = _pair_ks()[k]
    assert (7 << k) + 7 < 1 << (DSP_A_BITS - 1) and (-8 << k) - 8 >= -(1 << (DSP_A_BITS - 1))
    lo, hi, x = every_case()
    got = packed_pair_model(lo[:, None], hi[:, None], x[:, None], k)
    assert np.array_equal(got[0], FIXED4.decode(lo) * x)
    assert np.array_equal(got[1], FIXED4.decode(hi) * x)
    rng = np.random.default_rng(k)
    cases = [extremes(cols)]
    cases.append(tuple(rng.integers(0, N_CODES, (200, cols)) for _ in range(2)))
    cases[-1] += (rng.integers(X_LO, X_HI + 1, (200, cols)),)
    for lo, hi, x in cases:
        got = packed_pair_model(lo, hi, x, k)
        assert np.array_equal(got[0], numerics.dot(FIXED4, lo, x))
        assert np.array_equal(got[1], numerics.dot(FIXED4, hi, x))


def test_one_bit_less_lets_the_low_sum_reach_the_high_row() -> None:
    """``pair_shift`` is the least k: with k - 1, an extreme low sum corrupts both rows."""
    cols = MAX_COLS
    lo, hi, x = extremes(cols)
    got = packed_pair_model(lo, hi, x, pair_shift(ACT_BITS, cols) - 1)
    assert not np.array_equal(got[0], numerics.dot(FIXED4, lo, x))


def test_pair_refuses_more_columns_than_the_dsp_takes() -> None:
    PairRow(MAX_COLS, ACT_BITS)
    with pytest.raises(ValueError, match="DSP48E1 takes 25 x 18"):
        PairRow(MAX_COLS + 1, ACT_BITS)


def _pair_dots(dut: PairRow, lo: np.ndarray, hi: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[n, 2] dot products of the pair for n input vectors, one vector per cycle."""
    assert dut.cols == lo.shape[1]
    return row_dots(dut, np.concatenate([lo, hi], axis=1), x)


def row_dots(dut: DotRow | PairRow, codes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[n, rows] dot products of a Fixed-4 PE unit for n input vectors, one vector per cycle:
    ``codes`` [n, rows * cols] (its rows' codes one after the other, as in ``w``), ``x``
    [n, cols]."""
    bits = FIXED4.bits
    mask = (1 << bits) - 1
    ws = [sum(int(c) << (j * bits) for j, c in enumerate(r & mask)) for r in codes]
    xs = [sum((int(v) & 0xFF) << (j * ACT_BITS) for j, v in enumerate(r)) for r in x]
    got: list[list[int]] = []

    async def bench(ctx):
        for i in range(len(ws) + dut.latency):
            if i < len(ws):
                ctx.set(dut.w, ws[i])
                ctx.set(dut.x, xs[i])
            if dut.latency:
                await ctx.tick()
            if i >= max(dut.latency - 1, 0):
                got.append([ctx.get(d) for d in dut.dots])

    sim = Simulator(dut)
    if dut.latency:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(got[: len(ws)], dtype=np.int64)


def test_pair_every_weight_pair_and_activation() -> None:
    """The component at the pynq-z1 array width, each case on its own in every column."""
    cols = AccelConfig.for_board("pynq-z1").cols
    lo, hi, x = one_per_vector(cols)
    got = _pair_dots(PairRow(cols, ACT_BITS), lo, hi, x)
    assert np.array_equal(got[:, 0], numerics.dot(FIXED4, lo, x))
    assert np.array_equal(got[:, 1], numerics.dot(FIXED4, hi, x))


def test_pipelined_pair_sums_extremes_and_random_vectors() -> None:
    cols = AccelConfig.for_board("pynq-z1").cols
    rng = np.random.default_rng(3)
    lo, hi, x = extremes(cols)
    n = 300
    lo = np.concatenate([lo, rng.integers(0, N_CODES, (n, cols))])
    hi = np.concatenate([hi, rng.integers(0, N_CODES, (n, cols))])
    x = np.concatenate([x, rng.integers(X_LO, X_HI + 1, (n, cols))])
    dut = PairRow(cols, ACT_BITS, pipelined=True)
    assert 1 + dut.latency == MAC_LATENCY
    got = _pair_dots(dut, lo, hi, x)
    assert np.array_equal(got[:, 0], numerics.dot(FIXED4, lo, x))
    assert np.array_equal(got[:, 1], numerics.dot(FIXED4, hi, x))


@pytest.mark.parametrize("board", ["tiny", "pynq-z1", "zc706"])
def test_fixed4_rows_go_in_pairs(board: str) -> None:
    cfg = AccelConfig.for_board(board)
    units = layout.pe_units(cfg)
    assert [u.fmt for u in units for _ in range(u.rows)] == layout.row_formats(cfg)
    fixed4_rows = sum(g.rows for g in cfg.groups if g.fmt == FIXED4.name)
    assert units.count(layout.PeUnit(FIXED4.name, 2)) == fixed4_rows // 2
    assert units.count(layout.PeUnit(FIXED4.name, 1)) == fixed4_rows % 2
    assert all(u.rows == 1 and not u.lut_mul for u in units if u.fmt != FIXED4.name)


def test_mac_array_rows_are_numerics_dot() -> None:
    """Every row of the tiny array (a Fixed-4 pair among them) against its format's dot."""
    check_mac_array(AccelConfig.for_board("tiny"))


def check_mac_array(cfg: AccelConfig) -> None:
    """Every row of ``cfg``'s array against its format's dot, on random vectors and the
    extreme codes and activation."""
    fmts = [numerics.weight_format(f) for f in layout.row_formats(cfg)]
    rng = np.random.default_rng(5)
    n = 50
    codes = np.stack([rng.integers(0, 1 << f.bits, (n, cfg.cols)) for f in fmts], axis=1)
    for r, f in enumerate(fmts):
        codes[0, r] = (1 << f.bits) - 1
    x = rng.integers(X_LO, X_HI + 1, (n, cfg.cols))
    x[0] = X_LO
    w_words = layout.pack(cfg, Entry.W, codes.reshape(n, -1))
    x_words = layout.pack(cfg, Entry.X, x)
    nw, nx = layout.entry_bytes(cfg, Entry.W), layout.entry_bytes(cfg, Entry.X)
    dut = MacArray(cfg)
    got = []

    async def bench(ctx):
        for i in range(n + dut.latency):
            if i < n:
                ctx.set(dut.w, int.from_bytes(w_words[i * nw : (i + 1) * nw], "little"))
                ctx.set(dut.x, int.from_bytes(x_words[i * nx : (i + 1) * nx], "little"))
                ctx.set(dut.x_valid, 1)
            await ctx.tick()
            if i >= dut.latency - 1:
                got.append([ctx.get(d) for d in dut.dots])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = np.stack([numerics.dot(f, codes[:, r], x) for r, f in enumerate(fmts)], axis=1)
    assert np.array_equal(np.array(got[:n]), want)
