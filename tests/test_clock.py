"""Each board preset's clock is backed by benchmarks/timing.py's estimate of its own netlist.

Default tier: the recorded estimates (benchmarks/results/timing_BOARD.json) are of the preset as
it is, back its clock, and the clock reaches issue 17's goal for its part; the burst generator
(the worst path before it was pipelined) meets each preset's clock on the part; the
module-by-module synthesis gives the whole-design netlist, and blackboxed modules joined at
their pins give its worst path. Slow tier: each preset's netlist, timed as timing.py does,
meets its clock.
"""

from __future__ import annotations

import json
from pathlib import Path

import benchpath
import pytest
import timing
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rmsmp.arch import AccelConfig
from rmsmp.boards import board
from rmsmp.hw.dma import BurstGen
from rmsmp.hw.generate import to_verilog

GOALS_MHZ = {"xc7z020": 150.0, "xc7z045": 200.0}
"""Issue 17's clock goals: XC7Z020 -1 at 150 MHz, XC7Z045 -2 at 200 MHz."""


def test_speed_scale_of_the_board_parts() -> None:
    assert timing.speed_scale(board("pynq-z1").part) == 1.0
    assert timing.speed_scale(board("zc706").part) == 0.75
    with pytest.raises(SystemExit, match="xc7z010-3"):
        timing.speed_scale("xc7z010clg400-3")


def _recorded(name: str) -> dict:
    return json.loads((timing.RESULTS / f"timing_{name}.json").read_text())


@pytest.mark.parametrize("name", timing.TABLE_BOARDS)
def test_recorded_estimate_backs_the_preset_clock(name: str) -> None:
    """The estimate on file is of this preset as it is (its config hash), of the whole design
    (every module, the PE units blackboxed at most), and its Fmax on the board's part reaches
    the preset's clock."""
    cfg, rec = AccelConfig.for_board(name), _recorded(name)
    assert rec["config_hash"] == cfg.hash, f"re-run: python benchmarks/timing.py --board {name}"
    assert rec["part"] == timing.part_of(name)
    assert rec["top"] == "rmsmp_top"
    assert all(timing.ARRAY_UNITS.fullmatch(b["module"]) for b in rec["blackboxes"])
    assert rec["untimed_cells"] == {} and rec["combinational_loop_bits"] == 0
    assert rec["part_fmax_mhz"] >= cfg.clock_mhz


@pytest.mark.parametrize("name", timing.TABLE_BOARDS)
def test_preset_clock_reaches_the_goal(name: str) -> None:
    """Issue 17's goals: XC7Z020 -1 at 150 MHz, XC7Z045 -2 at 200 MHz."""
    device = timing.part_of(name)[:7]
    assert AccelConfig.for_board(name).clock_mhz >= GOALS_MHZ[device]


def test_every_board_preset_is_timed() -> None:
    """Each preset sized for a board has a recorded estimate (the two tests above hold it)."""
    assert sorted(timing.TABLE_BOARDS) == sorted(timing.BOARD_PRESETS)


@benchpath.needs_yosys
@pytest.mark.parametrize("name", timing.TABLE_BOARDS)
def test_burst_generator_meets_the_preset_clock(name: str) -> None:
    """The DMA burst generator (7.3 ns on a -1 part before its page cap was registered) meets
    the preset's clock on its part, every path counted."""
    cfg = AccelConfig.for_board(name)
    synth = timing.synthesize(to_verilog(BurstGen(cfg), "gen"), "gen")
    est = timing.estimate(json.loads(synth.flat_json.read_text()))
    worst_ps = est.paths[0].delay_ps * timing.speed_scale(timing.part_of(name))
    assert worst_ps <= 1e6 / cfg.clock_mhz, est.paths[0].summary()


class _Stage(wiring.Component):
    """Two registered inputs, added to the output (registered or not)."""

    def __init__(self, registered: bool) -> None:
        self.registered = registered
        super().__init__({"a": In(16), "b": In(16), "y": Out(17)})

    def elaborate(self, platform) -> Module:
        m = Module()
        ra, rb = Signal(16), Signal(16)
        m.d.sync += [ra.eq(self.a), rb.eq(self.b)]
        m.d["sync" if self.registered else "comb"] += self.y.eq(ra + rb)
        return m


class _Pair(wiring.Component):
    """Two identical stages whose outputs are added once more into a register."""

    def __init__(self, registered: bool) -> None:
        self.registered = registered
        super().__init__({"a": In(16), "b": In(16), "y": Out(18)})

    def elaborate(self, platform) -> Module:
        m = Module()
        s0, s1 = _Stage(self.registered), _Stage(self.registered)
        m.submodules.s0, m.submodules.s1 = s0, s1
        m.d.comb += [s0.a.eq(self.a), s0.b.eq(self.b), s1.a.eq(self.b), s1.b.eq(self.a)]
        m.d.sync += self.y.eq(s0.y + s1.y)
        return m


@benchpath.needs_yosys
@pytest.mark.parametrize("registered", [False, True])
def test_module_by_module_synthesis_is_the_whole_netlist(tmp_path: Path, registered: bool) -> None:
    """The same worst path as one synth_xilinx run; with the stages blackboxed their outputs
    count as registers, and joined at the pins with the stage timed alone the worst path is the
    whole one again where the stages' outputs are registered, and bounds it where they are not
    (two adds, one in each module: the joint takes each side's worst bit)."""
    text = to_verilog(_Pair(registered), "pair")
    whole = timing.synthesize(text, "pair", tmp_path / "whole")
    parts = timing.synthesize_modules(text, "pair", tmp_path / "parts")
    worst = [
        timing.estimate(json.loads(s.flat_json.read_text())).worst("reg->reg").delay_ps
        for s in (whole, parts)
    ]
    assert worst[0] == worst[1]
    stages = tuple(n for n in timing.split_modules(text) if n != "pair")
    boxed = timing.synthesize_modules(text, "pair", tmp_path / "boxed", stages)
    est = timing.estimate(json.loads(boxed.flat_json.read_text()), boxes=stages)
    assert est.worst("box->reg").start.split()[0] in stages
    joined = timing.time_netlist(text, "pair", stages, cache_dir=tmp_path / "boxed")
    assert sum(joined.groups.values()) == 2
    if registered:
        assert joined.paths[0].delay_ps == worst[0]
    else:
        assert est.worst("box->reg").delay_ps < worst[0]
        assert joined.paths[0].delay_ps >= worst[0]
        assert joined.paths[0] in joined.boundary


@pytest.mark.slow
@benchpath.needs_yosys
@pytest.mark.parametrize("name", timing.TABLE_BOARDS)
def test_preset_netlist_meets_its_clock(name: str) -> None:
    """The preset's netlist, synthesized module by module (tens of minutes for zc706 on first
    run; cached by module after) and timed with its PE units joined at their pins, meets the
    preset's clock and the goal on its part."""
    from rmsmp.hw.generate import verilog_text

    row, _ = timing.time_design(name, verilog_text(AccelConfig.for_board(name)))
    assert row["meets_clock"], row["worst"]
    assert row["part_fmax_mhz"] >= GOALS_MHZ[timing.part_of(name)[:7]]
