"""A board-sized preset (pynq-z1) in the default tier: compiled conv chains on its Verilated RTL."""

from __future__ import annotations

import numpy as np
import pytest
from graphgen import random_graph

from rmsmp.arch import AccelConfig
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.sim.verilator import RtlDevice

pytestmark = pytest.mark.rtl  # a Verilator build of a board-sized preset

PYNQ = AccelConfig.for_board("pynq-z1")


def test_pynq_z1_conv_chain_is_bit_exact_under_random_ddr_timing() -> None:
    """A ResNet-like chain (3x3 convs, a stride-2 conv, a Linear head) with random weights:
    RTL == golden == IntGraph.evaluate, under random DDR latency and back-pressure, with the
    AXI protocol checker clean and the array doing real work."""
    rng = np.random.default_rng(20)
    specs = [
        dict(kind="conv", n=16, kernel=3, stride=1, padding=1),
        dict(kind="conv", n=32, kernel=3, stride=2, padding=1),
        dict(kind="conv", n=24, kernel=1, stride=1, padding=0),
        dict(kind="linear", n=10, flatten=True, lo=-128, hi=127),
    ]
    graph = random_graph(rng, PYNQ, (3, 12, 12), specs)
    program = lower(graph, PYNQ, batch=2)
    x = rng.integers(graph.input_lo, graph.input_hi + 1, size=(3, 3, 12, 12)).astype(np.int16)
    dev = RtlDevice(PYNQ, program.window_size)
    try:
        dev.set_ddr_mode(random=True, seed=5, backpressure=0.3)
        hw = run_with_stats(program, x, device=dev)
        violations = dev.protocol_violations()
    finally:
        dev.close()
    gold = run_with_stats(program, x, backend="golden")
    assert np.array_equal(hw.output, gold.output)
    assert np.array_equal(hw.output, graph.evaluate(x.astype(np.int64)))
    assert violations == []
    assert 0 < hw.mac_cycles < hw.total_cycles
    assert hw.load_cycles > 0 and hw.store_cycles > 0
