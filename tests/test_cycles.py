"""The cycle model (``rmsmp.sim.cycles``) against the RTL's counters and against hand counts.

With the Verilator harness's fixed DDR latency the model is cycle-exact, so these compare with
``==``: random token streams (every opcode, tokens, 2-D blocks across 4 KiB pages), two DDR
latencies, and whole networks (tests/test_whole_network.py holds ResNet-20 on pynq-z1).
"""

from __future__ import annotations

import numpy as np
import pytest
from graphgen import gemm_word
from streamgen import random_stream

from rmsmp.arch import AccelConfig, isa
from rmsmp.arch.timing import DDR_READ_LATENCY, REQUANT_LATENCY
from rmsmp.sim.cycles import bursts, gemm_cycles, issue_cycles, predict, store_cycles
from rmsmp.sim.golden import GoldenDevice

CFG = AccelConfig.for_board("tiny")
SIZE = 1 << 16
COUNTERS = ("CYCLES_LO", "MAC_CYCLES", "DMA_BEATS", "LOAD_CYCLES", "STORE_CYCLES")


def _run(dev, image: bytes, n: int) -> list[int]:
    dev.write(0, image)
    dev.write_reg("WINDOW_BASE", dev.window_base)
    dev.write_reg("WINDOW_LIMIT", dev.window_base + SIZE)
    dev.write_reg("INSN_ADDR", 0)
    dev.write_reg("INSN_COUNT", n)
    dev.write_reg("CTRL", 1)
    dev.wait(2_000_000)
    assert dev.read_reg("CYCLES_HI") == 0
    return [dev.read_reg(r) for r in COUNTERS]


@pytest.mark.parametrize("latency", [DDR_READ_LATENCY, 57])
def test_model_equals_rtl_counters_on_random_streams(latency: int) -> None:
    """40 random token streams per DDR latency: every counter equal, cycle for cycle."""
    from rmsmp.sim.verilator import RtlDevice

    rtl = RtlDevice(CFG, SIZE, latency=latency)
    gold = GoldenDevice(CFG, SIZE, window_base=rtl.window_base, ddr_latency=latency)
    try:
        total = 0
        for seed in range(40):
            rng = np.random.default_rng(1000 + seed)
            s = random_stream(rng, CFG, SIZE, int(rng.integers(4, 60)))
            hw = _run(rtl, s.image, len(s.words))
            assert _run(gold, s.image, len(s.words)) == hw, f"stream {seed}"
            total += hw[0]
        assert total > 20_000  # the streams did real work
    finally:
        rtl.close()


def _gemm(**kw: int) -> isa.Insn:
    return isa.decode(CFG, gemm_word(CFG, **kw))


def test_issue_cycles_space_final_outputs_for_the_requant_lanes() -> None:
    """Hand counts: a final 1x1 GEMM of 4 outputs with k = 1 waits rows/lanes = 4 cycles per
    output after the first; with k = 6 pairs per output the lanes keep up."""
    groups = CFG.rows // CFG.requant_lanes
    assert groups == 4
    short = _gemm(ow_count=4, c_count=1, kh=1, kw=1, reset=1, final=1)
    assert issue_cycles(CFG, short) == 1 + 3 * 4
    long = _gemm(ow_count=4, c_count=2, kh=1, kw=3, tile_w=6, reset=1, final=1)
    assert issue_cycles(CFG, long) == 4 * 6
    partial = _gemm(ow_count=4, c_count=1, kh=1, kw=1, reset=1, final=0)
    assert issue_cycles(CFG, partial) == 4
    drain = groups + REQUANT_LATENCY
    assert gemm_cycles(CFG, short) - gemm_cycles(CFG, partial) == (13 - 4) + drain


def test_bursts_split_at_max_burst_and_4k_pages() -> None:
    """A 40-beat row from 8 bytes below a page boundary: 1 beat, then 16, 16, 7."""
    assert bursts(CFG, 4096 - 8, 1, 40, 0) == [1, 16, 16, 7]
    assert bursts(CFG, 0, 3, 5, 4096) == [5, 5, 5]


def test_store_cycles_hand_count() -> None:
    """One 3-beat burst: address at +1, beats at +3..+5, response 10 cycles after the last
    beat's cycle plus one, done a cycle later."""
    assert store_cycles(CFG, [3], 20) == 5 + 1 + 10 + 1


def test_golden_reports_predicted_cycles() -> None:
    """The golden backend's counter registers are the model's; a GEMM's cycles grow with it."""
    small = predict(CFG, [_gemm(ow_count=2, tile_w=2)])
    big = predict(CFG, [_gemm(ow_count=8, tile_w=8)])
    assert big.cycles > small.cycles > 0
    assert (small.mac_cycles, big.mac_cycles) == (2, 8)
    assert small.dma_beats == CFG.insn_bits // CFG.axi_data_bits
    gold = GoldenDevice(CFG, SIZE)
    words = [gemm_word(CFG, ow_count=8, tile_w=8)]
    got = _run(gold, isa.to_bytes(CFG, words), 1)
    assert got == [big.cycles, big.mac_cycles, big.dma_beats, 0, 0]
