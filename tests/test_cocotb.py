"""Build the PE rows, the CSR block and the whole accelerator to Verilog and run their cocotb
testbenches under Icarus."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from amaranth.lib import wiring
from cocotb_tools.runner import get_results, get_runner
from graphgen import random_graph

from rmsmp.arch import FORMATS, AccelConfig
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.hw.csr import Csr
from rmsmp.hw.generate import TOP_NAME, generate, to_verilog
from rmsmp.hw.pe import FIXED4, DotRow, PairRow
from rmsmp.hw.pe_lut import LutMulRow

COCOTB_DIR = Path(__file__).parent / "cocotb"
PE_COLS = 4
PE_ACT_BITS = 8
CSR_BOARD = "tiny"
TOP_CFG = AccelConfig.for_board("tiny")
TOP_SEED = 17
TOP_INPUT_SHAPE = (3, 4, 4)
TOP_SPECS = [
    dict(kind="conv", n=6, kernel=3, stride=1, padding=1),
    dict(kind="linear", n=5, flatten=True, lo=-128, hi=127),
]
TOP_BATCH = 2
ICARUS_GENERATIONS = {"2012": (), "2005": ("-g2005",)}
"""Icarus build flags per Verilog generation: cocotb's runner builds with -g2012 by default, so
that case adds nothing, as a user's testbench would not."""

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")


def _run_icarus(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: Path,
    toplevel: str,
    test_module: str,
    env: dict[str, str],
    build_args: tuple[str, ...] = (),
) -> None:
    """Build ``source`` with Icarus (cocotb's default flags, then ``build_args``), run
    ``test_module`` on it, and check every cocotb test passed."""
    # The runner hands the simulator's Python this process's sys.path as PYTHONPATH.
    monkeypatch.syspath_prepend(str(COCOTB_DIR))
    runner = get_runner("icarus")
    build_dir = tmp_path / "build"
    runner.build(
        sources=[source],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        build_args=list(build_args),
        timescale=("1ns", "1ps"),
    )
    results = runner.test(
        test_module=test_module,
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        test_dir=tmp_path / "run",
        extra_env=env,
    )
    num_tests, num_failed = get_results(results)
    assert num_tests > 0
    assert num_failed == 0


def _simulate(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dut: wiring.Component,
    toplevel: str,
    test_module: str,
    env: dict[str, str],
) -> None:
    """Convert ``dut`` to Verilog and run ``test_module`` on it (``_run_icarus``)."""
    source = tmp_path / f"{toplevel}.v"
    source.write_text(to_verilog(dut, toplevel))
    _run_icarus(tmp_path, monkeypatch, source, toplevel, test_module, env)


@pytest.mark.parametrize("fmt_name", sorted(FORMATS))
def test_pe_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt_name: str) -> None:
    fmt = FORMATS[fmt_name]
    _simulate(
        tmp_path,
        monkeypatch,
        DotRow(fmt, PE_COLS, PE_ACT_BITS),
        f"dot_row_{fmt_name.replace('-', '_')}",
        "test_pe_cocotb",
        {
            "RMSMP_PE_FORMAT": fmt_name,
            "RMSMP_PE_COLS": str(PE_COLS),
            "RMSMP_PE_ACT_BITS": str(PE_ACT_BITS),
        },
    )


def test_pe_lut_mul_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Fixed-4 row multiplied in LUTs, on the PE row testbench: every code times every
    activation, extremes, random vectors."""
    _simulate(
        tmp_path,
        monkeypatch,
        LutMulRow(PE_COLS, PE_ACT_BITS),
        "lut_mul_row",
        "test_pe_cocotb",
        {
            "RMSMP_PE_FORMAT": FIXED4.name,
            "RMSMP_PE_COLS": str(PE_COLS),
            "RMSMP_PE_ACT_BITS": str(PE_ACT_BITS),
        },
    )


def test_pe_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _simulate(
        tmp_path,
        monkeypatch,
        PairRow(PE_COLS, PE_ACT_BITS),
        "pair_row",
        "test_pair_cocotb",
        {"RMSMP_PE_COLS": str(PE_COLS), "RMSMP_PE_ACT_BITS": str(PE_ACT_BITS)},
    )


def test_csr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _simulate(
        tmp_path,
        monkeypatch,
        Csr(AccelConfig.for_board(CSR_BOARD)),
        "csr",
        "test_csr_cocotb",
        {"RMSMP_BOARD": CSR_BOARD},
    )


@pytest.mark.parametrize("generation", sorted(ICARUS_GENERATIONS))
def test_top_runs_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, generation: str) -> None:
    """``rmsmp generate``'s Verilog of the whole accelerator, under Icarus in both language
    generations, runs a conv-linear Program through the host runtime bit-exact with golden
    (the output and the graph's reference)."""
    rng = np.random.default_rng(TOP_SEED)
    graph = random_graph(rng, TOP_CFG, TOP_INPUT_SHAPE, TOP_SPECS)
    program = lower(graph, TOP_CFG, batch=TOP_BATCH)
    x = rng.integers(graph.input_lo, graph.input_hi + 1, size=(TOP_BATCH, *TOP_INPUT_SHAPE))
    paths = {name: tmp_path / f"{name}.npy" for name in ("input", "output")}
    program.save(tmp_path / "program.rmsmp")
    np.save(paths["input"], x.astype(np.int16))
    source = generate(TOP_CFG, tmp_path / "hw")["verilog"]
    _run_icarus(
        tmp_path,
        monkeypatch,
        source,
        TOP_NAME,
        "test_top_cocotb",
        {
            "RMSMP_PROGRAM": str(tmp_path / "program.rmsmp"),
            "RMSMP_INPUT": str(paths["input"]),
            "RMSMP_OUTPUT": str(paths["output"]),
        },
        ICARUS_GENERATIONS[generation],
    )
    out = np.load(paths["output"])
    gold = run_with_stats(program, x, backend="golden").output
    assert np.array_equal(out, gold)
    assert np.array_equal(out, graph.evaluate(x.astype(np.int64)))
