"""The host side (arch, host, golden model, CLI entry) must not need Amaranth or PyTorch."""

from __future__ import annotations

import subprocess
import sys


def test_host_side_imports_without_torch_or_amaranth() -> None:
    code = (
        "import sys, rmsmp, rmsmp.arch, rmsmp.host.runtime, rmsmp.host.program, "
        "rmsmp.sim.golden, rmsmp.cli\n"
        "heavy = sorted(m for m in ('torch', 'amaranth', 'scipy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_arch_imports_nothing_else_of_ours() -> None:
    code = (
        "import sys, rmsmp.arch\n"
        "ours = sorted(m for m in sys.modules if m.startswith('rmsmp.') and "
        "not m.startswith('rmsmp.arch'))\n"
        "print(','.join(ours))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
