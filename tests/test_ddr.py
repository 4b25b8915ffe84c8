"""The board's DDR against the DMA: bandwidth as board data, the cycle model's DDR cap and its
two-port projection (``sim.cycles``: ``ddr_capped``, ``read_ports``; benchmarks/ddr.py)."""

from __future__ import annotations

import benchpath  # noqa: F401 - benchmarks/ on sys.path
import numpy as np
import pytest
from ddr import KINDS, project
from streamgen import random_stream

from rmsmp.arch import AccelConfig, isa
from rmsmp.boards import board
from rmsmp.boards.devices import DDR_EFFICIENCY
from rmsmp.sim.cycles import CycleModel, ddr_capped, predict, store_schedule

CFG = AccelConfig.for_board("tiny")


def test_ddr_bandwidth_from_the_ps7_data() -> None:
    """PYNQ-Z1: 16-bit DDR3 at 525 MHz, 2.1 GB/s peak; ZC706: 32-bit at 533 MHz, 4.27 GB/s.
    At 150 MHz one 64-bit HP port moves 1.2 GB/s each way, so PYNQ-Z1's DDR can keep up with
    one direction but not with reads and writes at once."""
    z1, zc = board("pynq-z1"), board("zc706")
    assert z1.ps7.ddr_peak_gbps == pytest.approx(2.1)
    assert zc.ps7.ddr_peak_gbps == pytest.approx(4.2667, rel=1e-4)
    assert z1.ddr_gbps == pytest.approx(2.1 * DDR_EFFICIENCY)
    cfg = AccelConfig.preset("pynq-z1")
    assert cfg.clock_mhz == 150
    assert 1 < z1.ddr_beats_per_cycle(cfg) < 2


def test_ddr_cap_hand_counts() -> None:
    """Ten beats over ten cycles at half a beat per cycle need twenty; a window the DDR keeps
    up with is not stretched; two windows stretch only the one over its share."""
    assert ddr_capped([(0, 10, 10)], 10, 0.5, window=10) == 20
    assert ddr_capped([(0, 10, 10)], 10, 1.0, window=10) == 10
    assert ddr_capped([(0, 5, 15), (10, 10, 5)], 20, 1.0, window=10) == 25
    with pytest.raises(ValueError, match="beats_per_cycle must be positive"):
        ddr_capped([], 1, 0.0)


def test_store_schedule_first_beats() -> None:
    """Two bursts of 3 and 2 beats: beats from the third cycle on, back to back."""
    done, firsts = store_schedule(CFG, [3, 2], 20)
    assert firsts == [3, 6]
    assert done == 3 + 3 + 2 - 1 + 1 + 10 + 1


def _streams(n: int) -> list[list[isa.Insn]]:
    out = []
    for seed in range(n):
        rng = np.random.default_rng(2000 + seed)
        s = random_stream(rng, CFG, 1 << 16, int(rng.integers(20, 60)))
        out.append([isa.decode(CFG, w) for w in s.words])
    return out


def test_two_read_ports_projection() -> None:
    """On random streams a second read port never slows a run, keeps the work (MACs, beats)
    and, on streams whose loads are the bulk, saves cycles; the recorded transfers account for
    every DMA beat either way."""
    saved = 0
    for insns in _streams(12):
        one, two = CycleModel(CFG, insns), CycleModel(CFG, insns, read_ports=2)
        a, b = one.run(), two.run()
        assert a == predict(CFG, insns)
        assert b.cycles <= a.cycles
        assert (b.mac_cycles, b.dma_beats) == (a.mac_cycles, a.dma_beats)
        for m, c in ((one, a), (two, b)):
            assert sum(n for _, _, n in m.transfers) == c.dma_beats
        saved += a.cycles - b.cycles
    assert saved > 0
    with pytest.raises(ValueError, match="read_ports must be 1 or 2"):
        CycleModel(CFG, [], read_ports=3)


def test_traffic_split_accounts_for_every_beat() -> None:
    """benchmarks/ddr.py: the beats by kind add up to the model's DMA_BEATS, the one-port run
    is the model's, and the DDR cap never shortens a run."""
    b = board("pynq-z1")
    for insns in _streams(4):
        row = project(CFG, insns, b)
        counts = predict(CFG, insns)
        assert sum(row["beats"][k] for k in KINDS) == counts.dma_beats
        assert row["cycles_1port"] == counts.cycles
        for n in (1, 2):
            assert row[f"ddr_cycles_{n}port"] >= row[f"cycles_{n}port"]
