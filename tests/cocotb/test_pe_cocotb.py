"""cocotb testbench of one PE row (``rmsmp.hw.pe.DotRow``) against ``numerics.dot``.

Run from ``tests/test_cocotb.py``, which builds the row of format ``RMSMP_PE_FORMAT`` with
``RMSMP_PE_COLS`` columns and ``RMSMP_PE_ACT_BITS``-bit activations and sets those variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.handle import HierarchyObject
from cocotb.triggers import Timer

from rmsmp.arch import WeightFormat, numerics

RANDOM_VECTORS = 300
SETTLE_NS = 1


def _pack(values: np.ndarray, bits: int) -> int:
    """Pack integers LSB-first, ``bits`` each, in two's complement."""
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (i * bits) for i, v in enumerate(values))


def _first_mismatch(got: list[int], want: list[int]) -> str:
    i = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
    return f"vector {i}: dot = {got[i]}, expected {want[i]}"


@dataclass
class Row:
    """The DUT and its parameters."""

    dut: HierarchyObject
    fmt: WeightFormat
    cols: int
    act_bits: int

    @classmethod
    def from_env(cls, dut: HierarchyObject) -> Row:
        return cls(
            dut,
            numerics.weight_format(os.environ["RMSMP_PE_FORMAT"]),
            int(os.environ["RMSMP_PE_COLS"]),
            int(os.environ["RMSMP_PE_ACT_BITS"]),
        )

    @property
    def act_range(self) -> tuple[int, int]:
        return numerics.act_range(self.act_bits, signed=True)

    async def dots(self, codes: np.ndarray, x: np.ndarray) -> list[int]:
        """Apply each (codes, x) row vector in turn; the settled ``dot`` of each."""
        out = []
        for c, v in zip(codes, x, strict=True):
            self.dut.w.value = _pack(c, self.fmt.bits)
            self.dut.x.value = _pack(v, self.act_bits)
            await Timer(SETTLE_NS, unit="ns")
            out.append(self.dut.dot.value.to_signed())
        return out


@cocotb.test()
async def test_single_column_sweep(dut: HierarchyObject) -> None:
    """Every code times every activation in column 0, other columns zero."""
    row = Row.from_env(dut)
    lo, hi = row.act_range
    xs = np.arange(lo, hi + 1, dtype=np.int64)
    x = np.zeros((len(xs), row.cols), np.int64)
    x[:, 0] = xs
    for code in range(1 << row.fmt.bits):
        codes = np.zeros_like(x)
        codes[:, 0] = code
        got = await row.dots(codes, x)
        want = numerics.dot(row.fmt, codes, x).tolist()
        assert got == want, f"{row.fmt.name} code {code:#x}: {_first_mismatch(got, want)}"
        level = int(row.fmt.decode(code))
        scaled = [level * int(v) for v in xs]
        assert got == scaled, (
            f"{row.fmt.name} code {code:#x} (level {level}): {_first_mismatch(got, scaled)}"
        )


@cocotb.test()
async def test_extreme_vectors(dut: HierarchyObject) -> None:
    """Every code in all columns with the most negative and most positive activation."""
    row = Row.from_env(dut)
    n = 1 << row.fmt.bits
    codes = np.repeat(np.arange(n, dtype=np.int64), 2)[:, None].repeat(row.cols, axis=1)
    x = np.tile(np.array(row.act_range, np.int64), n)[:, None].repeat(row.cols, axis=1)
    got = await row.dots(codes, x)
    want = numerics.dot(row.fmt, codes, x).tolist()
    assert got == want, f"{row.fmt.name}: {_first_mismatch(got, want)}"


@cocotb.test()
async def test_random_vectors(dut: HierarchyObject) -> None:
    """Random codes and activations in every column."""
    row = Row.from_env(dut)
    rng = np.random.default_rng(cocotb.RANDOM_SEED)
    lo, hi = row.act_range
    codes = rng.integers(0, 1 << row.fmt.bits, (RANDOM_VECTORS, row.cols))
    x = rng.integers(lo, hi + 1, (RANDOM_VECTORS, row.cols))
    got = await row.dots(codes, x)
    want = numerics.dot(row.fmt, codes, x).tolist()
    assert got == want, f"{row.fmt.name}: {_first_mismatch(got, want)}"
