"""A simulated PYNQ board: pynq's ``Overlay`` / ``allocate`` / ``MMIO`` over the Verilated model.

The ``pynq-sim`` backend runs the board driver (``host.pynq_driver.PynqDevice``) unchanged
against this. It is a thin adapter with pynq 4.0's signatures, not a ``pynq.Device`` subclass
with the real package in the loop: pynq 4.0.0 pins numpy<2 and this environment (PyTorch, the
compiler) runs numpy 2, so the real package cannot be installed beside it.

It keeps what the board does observable:

* The PL runs only while time passes: ``clock.sleep(s)`` clocks the model ``s`` seconds at the
  config's ``clock_mhz`` (``clock.monotonic()`` is that simulated time), so the driver's poll
  and its timeout run on the accelerator's own time.
* ``allocate`` carves physically contiguous, page-aligned buffers out of the model's DDR. The
  host's array is a separate copy: ``flush()`` writes it to DDR, ``invalidate()`` reads DDR back
  (a non-coherent cache that never writes back by itself), so a missing flush or invalidate
  makes the run wrong and the bit-exact tests fail.
* Every ``MMIO`` access is one AXI4-Lite transaction on the model's GP0-side port, at the
  address the block design assigns (``boards``: ``csr_base``); an error response raises.
* Faults: ``stall_ddr`` (the HP port stops answering), ``inject_error`` (SLVERR on a burst) and
  ``stop_clock`` (the PL clock stops: time passes and nothing happens).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..arch import AccelConfig
from ..boards import board as board_named
from ..host.device import DeviceTimeoutError
from ..host.pynq_driver import IP_NAME, PynqDevice
from .verilator import DEFAULT_LATENCY, OKAY, RESP_NAMES, RtlDevice

PAGE = 4096
"""pynq.allocate's buffers are page-aligned (CMA); so are these."""


class SimBuffer(np.ndarray):
    """What ``pynq.allocate`` returns (``PynqBuffer``): an array with a physical address and
    cache maintenance. A slice is a buffer at its own physical address, as in pynq."""

    device_address: int | None
    board: SimPynq | None

    def __array_finalize__(self, obj: Any) -> None:
        if isinstance(obj, SimBuffer) and obj.device_address is not None:
            delta = self.__array_interface__["data"][0] - obj.__array_interface__["data"][0]
            self.device_address = obj.device_address + delta
            self.board = obj.board
        else:
            self.device_address, self.board = None, None

    @property
    def physical_address(self) -> int:
        """pynq's backwards-compatible name of ``device_address``."""
        return self.device_address

    @property
    def coherent(self) -> bool:
        """Never: the host copy reaches DDR only through ``flush``."""
        return False

    def flush(self) -> None:
        """Write the host copy to DDR (what the accelerator reads)."""
        self.board.ddr_write(self.device_address, self.tobytes())

    def invalidate(self) -> None:
        """Read DDR (what the accelerator wrote) into the host copy."""
        data = self.board.ddr_read(self.device_address, self.nbytes)
        self[...] = np.frombuffer(data, dtype=self.dtype).reshape(self.shape)

    def freebuffer(self) -> None:
        """pynq frees the CMA block; the simulated DDR lives as long as the board."""


class SimOverlay:
    """``pynq.Overlay``: the loaded design, with the accelerator in ``ip_dict`` at the address
    the board's block design gives it."""

    def __init__(self, board: SimPynq, bitfile_name: str, download: bool = True) -> None:
        self.bitfile_name = bitfile_name
        b = board.board
        self.ip_dict = {
            IP_NAME: {"phys_addr": b.csr_base, "addr_range": b.csr_range, "type": "rmsmp_axi"}
        }


class SimMMIO:
    """``pynq.MMIO``: 32-bit register reads and writes inside the accelerator's range."""

    def __init__(self, board: SimPynq, base_addr: int, length: int = 4) -> None:
        b = board.board
        if not b.csr_base <= base_addr <= base_addr + length <= b.csr_base + b.csr_range:
            raise ValueError(
                f"MMIO [{base_addr:#x}, +{length:#x}) is outside the accelerator's registers "
                f"[{b.csr_base:#x}, +{b.csr_range:#x}) on {b.name}"
            )
        self.base_addr, self.length = base_addr, length
        self._board = board

    def _address(self, offset: int) -> int:
        if offset < 0 or offset + 4 > self.length:
            raise ValueError(f"MMIO offset {offset:#x} is outside [0, {self.length:#x})")
        if offset % 4:
            raise MemoryError("Unaligned access: offset must be multiple of 4.")
        return self.base_addr - self._board.board.csr_base + offset

    def read(self, offset: int = 0, length: int = 4) -> int:
        if length != 4:
            raise ValueError("the accelerator's registers are read 4 bytes at a time")
        value, resp = self._board.rtl.axil_read(self._address(offset))
        if resp != OKAY:
            raise RuntimeError(f"GP0 read of {self.base_addr + offset:#x}: {RESP_NAMES[resp]}")
        return value

    def write(self, offset: int, data: int) -> None:
        if type(data) is not int:
            raise ValueError("Data type must be int or bytes.")
        resp = self._board.rtl.axil_write(self._address(offset), data)
        if resp != OKAY:
            raise RuntimeError(f"GP0 write to {self.base_addr + offset:#x}: {RESP_NAMES[resp]}")


class SimClock:
    """The simulated board's time: the PL's cycles at ``clock_mhz`` plus the idle time slept
    after the accelerator finished (the model is not clocked through idle time)."""

    def __init__(self, board: SimPynq) -> None:
        self._board = board
        self._idle_s = 0.0

    def _hz(self) -> float:
        return self._board.config.clock_mhz * 1e6

    def monotonic(self) -> float:
        return self._board.rtl.sim_cycles / self._hz() + self._idle_s

    def sleep(self, seconds: float) -> None:
        cycles = int(seconds * self._hz())
        ran = 0
        if self._board.clock_running and cycles:
            rtl = self._board.rtl
            before = rtl.sim_cycles
            try:
                rtl.wait(cycles)  # clocks up to ``cycles``, stops once the run has ended
            except DeviceTimeoutError:
                pass  # still busy after the whole sleep: the normal case while polling
            ran = rtl.sim_cycles - before
        self._idle_s += (cycles - ran) / self._hz()


class SimPynq:
    """One simulated board: the Verilated accelerator for ``config`` with ``ddr_bytes`` of DDR,
    behind pynq's API (``Overlay``, ``allocate``, ``MMIO``) and a ``clock``."""

    def __init__(
        self,
        config: AccelConfig,
        ddr_bytes: int,
        board: str = "pynq-z1",
        latency: int = DEFAULT_LATENCY,
    ) -> None:
        self.config = config
        self.board = board_named(board)
        self.board.check(config)
        self.rtl = RtlDevice(config, ddr_bytes, latency=latency)
        self.clock = SimClock(self)
        self.clock_running = True
        self._next = 0

    def Overlay(self, bitfile_name: str, download: bool = True) -> SimOverlay:  # noqa: N802
        """``pynq.Overlay``: the design is the Verilated model, already loaded."""
        return SimOverlay(self, bitfile_name, download)

    def MMIO(self, base_addr: int, length: int = 4) -> SimMMIO:  # noqa: N802
        """``pynq.MMIO``."""
        return SimMMIO(self, base_addr, length)

    def allocate(self, shape: Any, dtype: Any = "u4", cacheable: bool = True) -> SimBuffer:
        """``pynq.allocate``: a physically contiguous, page-aligned buffer in the DDR."""
        buf = np.zeros(shape, dtype=dtype).view(SimBuffer)
        start = self._next
        if start + buf.nbytes > self.rtl.window_size:
            raise MemoryError(
                f"simulated DDR is {self.rtl.window_size} bytes, {start} in use; cannot allocate "
                f"{buf.nbytes} more"
            )
        self._next = start + -(-buf.nbytes // PAGE) * PAGE
        buf.device_address = self.rtl.window_base + start
        buf.board = self
        return buf

    def ddr_write(self, address: int, data: bytes) -> None:
        """Bytes into DDR at a physical address (the cache writing back)."""
        self.rtl.write(address - self.rtl.window_base, data)

    def ddr_read(self, address: int, n: int) -> bytes:
        """Bytes of DDR at a physical address (a cache fill)."""
        return self.rtl.read(address - self.rtl.window_base, n)

    def stall_ddr(self, stall: bool = True) -> None:
        """The HP port stops answering (the accelerator's watchdog then ends the run)."""
        self.rtl.set_stall(stall)

    def inject_error(self, channel: Literal["read", "write"], nth: int = 0) -> None:
        """SLVERR on the ``nth`` next read or write burst (``RtlDevice.inject_error``)."""
        self.rtl.inject_error(channel, nth)

    def stop_clock(self) -> None:
        """The PL clock stops: time passes while the accelerator stands still (register
        accesses still get their answer, as the model is clocked for those)."""
        self.clock_running = False

    def close(self) -> None:
        """Free the Verilated model."""
        self.rtl.close()


def open_sim(
    config: AccelConfig, window_size: int, board: str = "pynq-z1", **options: Any
) -> PynqDevice:
    """The ``pynq-sim`` backend: the board driver on a simulated ``board`` whose DDR holds the
    window (one burst of alignment slack, whole pages). ``options`` go to ``PynqDevice``."""
    ddr = -(-(window_size + config.window_align) // PAGE) * PAGE
    sim = SimPynq(config, ddr, board=board)
    return PynqDevice(
        config, window_size, "rmsmp.bit", api=sim, clock=sim.clock, name="pynq-sim", **options
    )
