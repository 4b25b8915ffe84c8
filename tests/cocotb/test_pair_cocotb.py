"""cocotb testbench of a packed Fixed-4 row pair (``rmsmp.hw.pe.PairRow``) against
``numerics.dot``: every weight pair times every activation, one at a time.

Run from ``tests/test_cocotb.py``, which builds the pair with ``RMSMP_PE_COLS`` columns and
``RMSMP_PE_ACT_BITS``-bit activations and sets those variables.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.handle import HierarchyObject
from cocotb.triggers import Timer

from rmsmp.arch import numerics

FIXED4 = numerics.weight_format("fixed4")
SETTLE_NS = 1


@cocotb.test()
async def test_every_weight_pair_and_activation(dut: HierarchyObject) -> None:
    """Case i (low code, high code, activation) in column i mod cols, the other columns zero:
    each of the 16 * 16 * 2^act_bits products is seen on its own, in every column."""
    cols, act_bits = int(os.environ["RMSMP_PE_COLS"]), int(os.environ["RMSMP_PE_ACT_BITS"])
    lo_x, hi_x = numerics.act_range(act_bits, signed=True)
    n_codes = 1 << FIXED4.bits
    lo, hi, x = (
        a.ravel()
        for a in np.meshgrid(
            np.arange(n_codes), np.arange(n_codes), np.arange(lo_x, hi_x + 1), indexing="ij"
        )
    )
    col = np.arange(len(x)) % cols
    want_lo, want_hi = FIXED4.decode(lo) * x, FIXED4.decode(hi) * x
    bad = []
    for i in range(len(x)):
        shift = int(col[i]) * FIXED4.bits
        dut.w.value = (int(lo[i]) << shift) | (int(hi[i]) << (shift + cols * FIXED4.bits))
        dut.x.value = (int(x[i]) & ((1 << act_bits) - 1)) << (int(col[i]) * act_bits)
        await Timer(SETTLE_NS, unit="ns")
        k = len(dut.dot.value) // 2
        both = dut.dot.value.to_unsigned()
        got = [(both >> (j * k)) & ((1 << k) - 1) for j in (0, 1)]
        got = [g - (1 << k) if g >> (k - 1) else g for g in got]
        if got != [want_lo[i], want_hi[i]]:
            bad.append((int(lo[i]), int(hi[i]), int(x[i]), int(col[i]), got))
    assert len(x) == n_codes * n_codes * (hi_x - lo_x + 1)
    assert not bad, f"{len(bad)} wrong (low code, high code, x, column, [low, high]): {bad[:5]}"
