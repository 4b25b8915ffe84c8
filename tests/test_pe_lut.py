"""The Fixed-4 LUT multiplier row (``rmsmp.hw.pe_lut.LutMulRow``), Amaranth simulator.

Every 4-bit code times every activation, in column 0 (its first leaf is exact) and in every
column (the others owe carries), the sums at their extremes and random vectors at several
widths; the combinational row runs the same cases under Icarus (tests/test_cocotb.py). Then the
row groups' ``lut_rows``: the units they make, their checks and hash, and a MAC array with both
Fixed-4 implementations.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from graphgen import random_graph
from test_pe import check_mac_array, row_dots

from rmsmp.arch import AccelConfig, ConfigError, RowGroup, layout, numerics
from rmsmp.arch.timing import MAC_LATENCY
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.hw.pe import FIXED4, DotRow
from rmsmp.hw.pe_lut import LutMulRow

ACT_BITS = 8
X_LO, X_HI = numerics.act_range(ACT_BITS, signed=True)
N_CODES = 1 << FIXED4.bits


def every_case(cols: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, cols] codes and activations: each (code, activation) pair once in column 0 alone
    (the exact leaf), then once in every column at the same time (the others owe carries and
    are the same logic, so equal errors could not cancel)."""
    code, x = (g.ravel() for g in np.meshgrid(np.arange(N_CODES), np.arange(X_LO, X_HI + 1)))
    alone = np.zeros((len(x), cols), np.int64)
    codes, xs = alone.copy(), alone.copy()
    codes[:, 0], xs[:, 0] = code, x
    every = np.repeat(code[:, None], cols, axis=1), np.repeat(x[:, None], cols, axis=1)
    return np.concatenate([codes, every[0]]), np.concatenate([xs, every[1]])


def extremes(cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Every column at the same code (each of the 16) and activation (most negative, most
    positive): the largest and smallest sums."""
    code, x = (g.ravel() for g in np.meshgrid(np.arange(N_CODES), [X_LO, X_HI]))
    return np.repeat(code[:, None], cols, axis=1), np.repeat(x[:, None], cols, axis=1)


def test_same_ports_as_a_fixed4_dot_row() -> None:
    cols = 5
    lut, dsp = LutMulRow(cols, ACT_BITS, pipelined=True), DotRow(FIXED4, cols, ACT_BITS, True)
    assert lut.signature == dsp.signature
    assert 1 + lut.latency == MAC_LATENCY


def test_every_code_and_activation() -> None:
    cols = AccelConfig.for_board("tiny").cols
    codes, x = every_case(cols)
    got = row_dots(LutMulRow(cols, ACT_BITS, pipelined=True), codes, x)[:, 0]
    assert np.array_equal(got, numerics.dot(FIXED4, codes, x))
    product = FIXED4.decode(codes[:, 0]) * x[:, 0]
    assert np.array_equal(got, np.where(x[:, 1] == x[:, 0], cols, 1) * product)


@pytest.mark.parametrize("cols", [1, 2, 3, 20])
def test_extremes_and_random_vectors(cols: int) -> None:
    rng = np.random.default_rng(cols)
    codes, x = extremes(cols)
    codes = np.concatenate([codes, rng.integers(0, N_CODES, (200, cols))])
    x = np.concatenate([x, rng.integers(X_LO, X_HI + 1, (200, cols))])
    got = row_dots(LutMulRow(cols, ACT_BITS, pipelined=True), codes, x)[:, 0]
    assert np.array_equal(got, numerics.dot(FIXED4, codes, x))


TINY_FILL = dataclasses.replace(
    AccelConfig.preset("tiny"), name="tiny-fixed4-fill", groups=(RowGroup("fixed4", 8, 3),)
)
"""A Fixed-4-only tiny array with both implementations: two DSP pairs, one DSP row alone and
three LUT rows."""
RTL_SPECS = [
    dict(kind="conv", n=12, kernel=3, stride=1, padding=1),
    dict(kind="conv", n=10, kernel=3, stride=2, padding=1),
    dict(kind="linear", n=7, flatten=True, lo=-128, hi=127),
]


def test_pe_units_put_a_groups_lut_rows_last() -> None:
    units = layout.pe_units(TINY_FILL)
    pair, single = layout.PeUnit("fixed4", 2), layout.PeUnit("fixed4", 1)
    lut = layout.PeUnit("fixed4", 1, lut_mul=True)
    assert units == [pair, pair, single, lut, lut, lut]
    assert layout.row_formats(TINY_FILL) == ["fixed4"] * 8


def test_lut_rows_are_checked_and_hashed_only_when_set() -> None:
    with pytest.raises(ConfigError, match="lut_rows is for fixed4 rows only"):
        RowGroup("pot4", 4, lut_rows=1)
    with pytest.raises(ConfigError, match=r"lut_rows must be an int in \[0, 4\]"):
        RowGroup("fixed4", 4, lut_rows=5)
    dsp_only = dataclasses.replace(TINY_FILL, groups=(RowGroup("fixed4", 8),))
    assert "lut_rows" not in dsp_only.to_dict()["groups"][0]
    assert AccelConfig.from_json(TINY_FILL.to_json()) == TINY_FILL
    assert TINY_FILL.hash != dsp_only.hash
    assert TINY_FILL.group_offsets() == {"fixed4": (0, 8)}


def test_mac_array_with_lut_rows_is_numerics_dot() -> None:
    check_mac_array(TINY_FILL)


def test_program_on_lut_and_dsp_rows_is_bit_exact_on_rtl() -> None:
    """A conv-conv-linear Program on the Verilated tiny Fixed-4 fill array (DSP pairs, a DSP row
    alone, LUT rows): RTL == golden == the graph's numpy reference."""
    rng = np.random.default_rng(11)
    graph = random_graph(rng, TINY_FILL, (5, 6, 6), RTL_SPECS)
    program = lower(graph, TINY_FILL, batch=2)
    x = rng.integers(graph.input_lo, graph.input_hi + 1, size=(3, 5, 6, 6)).astype(np.int16)
    want = graph.evaluate(x.astype(np.int64))
    gold = run_with_stats(program, x, backend="golden")
    rtl = run_with_stats(program, x, backend="rtl")
    assert np.array_equal(gold.output, want)
    assert np.array_equal(rtl.output, want)
    assert rtl.total_cycles == gold.total_cycles
