"""Build the PE rows and the CSR block to Verilog and run their cocotb testbenches under Icarus."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.lib import wiring
from cocotb_tools.runner import get_results, get_runner

from rmsmp.arch import FORMATS, AccelConfig
from rmsmp.hw.csr import Csr
from rmsmp.hw.pe import DotRow

COCOTB_DIR = Path(__file__).parent / "cocotb"
PE_COLS = 4
PE_ACT_BITS = 8
CSR_BOARD = "tiny"

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")


def _simulate(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dut: wiring.Component,
    toplevel: str,
    test_module: str,
    env: dict[str, str],
) -> None:
    """Convert ``dut`` to Verilog, run ``test_module`` on it, and check every cocotb test passed."""
    source = tmp_path / f"{toplevel}.v"
    source.write_text(verilog.convert(dut, name=toplevel))
    # The runner hands the simulator's Python this process's sys.path as PYTHONPATH.
    monkeypatch.syspath_prepend(str(COCOTB_DIR))
    runner = get_runner("icarus")
    build_dir = tmp_path / "build"
    runner.build(
        sources=[source],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
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


def test_csr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _simulate(
        tmp_path,
        monkeypatch,
        Csr(AccelConfig.for_board(CSR_BOARD)),
        "csr",
        "test_csr_cocotb",
        {"RMSMP_BOARD": CSR_BOARD},
    )
