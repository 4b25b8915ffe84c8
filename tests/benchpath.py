"""benchmarks/ on sys.path (its scripts are tested as modules) and the Yosys skip marker, shared
by the tests of the synthesis and timing scripts."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

needs_yosys = pytest.mark.skipif(
    shutil.which("yosys") is None,
    reason="needs Debian's yosys with synth_xilinx (apt-get install yosys)",
)
