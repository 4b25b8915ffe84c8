"""The host side (arch, host, golden model, CLI entry) must not need Amaranth or PyTorch."""

from __future__ import annotations

import subprocess
import sys


def _loaded(imports: str, which: str) -> str:
    """The modules ``which`` (a condition on ``m``) that ``import {imports}`` loads in a fresh
    interpreter, sorted and comma-separated."""
    code = f"import sys, {imports}\nprint(','.join(sorted(m for m in sys.modules if {which})))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


HEAVY = "m in ('torch', 'amaranth', 'scipy')"


def test_host_side_imports_without_torch_or_amaranth() -> None:
    imports = (
        "rmsmp, rmsmp.arch, rmsmp.host.runtime, rmsmp.host.program, rmsmp.sim.golden, rmsmp.cli"
    )
    assert _loaded(imports, HEAVY) == ""


def test_arch_imports_nothing_else_of_ours() -> None:
    ours = "m.startswith('rmsmp.') and not m.startswith('rmsmp.arch')"
    assert _loaded("rmsmp.arch", ours) == ""


def test_lowering_needs_numpy_and_of_sim_only_the_cycle_model() -> None:
    """The lowering chooses tilings with the cycle model's closed forms (``sim.cycles``, which
    needs only ``arch``), and nothing else of the simulators, Amaranth or PyTorch."""
    rest = f"{HEAVY} or m.startswith(('rmsmp.sim.', 'rmsmp.hw'))"
    assert _loaded("rmsmp.compiler.lower", rest) == "rmsmp.sim.cycles"
