"""The ``pynq`` backend: the accelerator on a Zynq board, driven through PYNQ's own API.

``pynq.Overlay`` loads the bitstream (and reads the .hwh beside it: the address map, and the
fabric clock PYNQ sets); ``pynq.allocate`` gives the physically contiguous DMA window, whose
physical address goes into WINDOW_BASE/WINDOW_LIMIT; ``pynq.MMIO`` reaches the AXI4-Lite
registers over GP0. The window is cacheable, so every host write is flushed before the
accelerator reads it and every host read is invalidated first. A run is polled through STATUS
until it ends or the timeout passes.

The driver takes the pynq API as an object: the ``pynq`` module on a board, and in CI
``rmsmp.sim.pynq_sim.SimPynq``, the same API over the Verilated accelerator. So the code that
runs on the board is the code the tests run. numpy only; ``pynq`` is imported on a board only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..arch import AccelConfig, regs
from .device import Device, DeviceTimeoutError

IP_NAME = "rmsmp_0"
"""The accelerator's cell name in the block design, so its key in ``Overlay.ip_dict``."""
DEFAULT_POLL_S = 1e-4
"""Seconds between two STATUS reads while a run is busy."""


class Clock(Protocol):
    """Where the driver's time comes from: ``time`` on a board, the simulated PL in CI."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class PynqDevice(Device):
    """The accelerator behind a loaded overlay, with a DMA window of ``window_size`` bytes.

    ``api`` provides ``Overlay``, ``allocate`` and ``MMIO`` with pynq's signatures; ``clock``
    times the poll. The window is allocated one burst larger than asked and starts at the first
    burst-aligned physical address in it (WINDOW_BASE must be burst-aligned).
    """

    def __init__(
        self,
        config: AccelConfig,
        window_size: int,
        bitfile: str | Path,
        *,
        api: Any,
        clock: Clock,
        name: str = "pynq",
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size must be a positive int, got {window_size!r}")
        if not poll_s > 0:
            raise ValueError(f"poll_s must be positive, got {poll_s}")
        self.config = config
        self.window_size = window_size
        self.name = name
        self.api = api
        self.bitfile = str(bitfile)
        self._clock = clock
        self._poll_s = poll_s
        self.overlay = api.Overlay(self.bitfile)
        ip = self.overlay.ip_dict.get(IP_NAME)
        if ip is None:
            raise RuntimeError(
                f"overlay {self.bitfile} has no IP {IP_NAME!r} (it has "
                f"{sorted(self.overlay.ip_dict)}); build the overlay with `rmsmp build`"
            )
        self.mmio = api.MMIO(ip["phys_addr"], ip["addr_range"])
        align = config.window_align
        self._buffer = api.allocate(shape=(window_size + align,), dtype=np.uint8, cacheable=True)
        skip = -int(self._buffer.physical_address) % align
        self._window = self._buffer[skip : skip + window_size]
        self.window_base = int(self._window.physical_address)

    def _span(self, offset: int, n: int) -> np.ndarray:
        if offset < 0 or n < 0 or offset + n > self.window_size:
            raise ValueError(
                f"[{offset}, {offset + n}) is outside the {self.window_size}-byte window"
            )
        return self._window[offset : offset + n]

    def write(self, offset: int, data: bytes) -> None:
        """Copy into the window and flush it from the CPU caches to DDR."""
        span = self._span(offset, len(data))
        span[:] = np.frombuffer(bytes(data), dtype=np.uint8)
        span.flush()

    def read(self, offset: int, n: int) -> bytes:
        """Invalidate the CPU caches over the range, then copy it out of the window."""
        span = self._span(offset, n)
        span.invalidate()
        return span.tobytes()

    def write_reg(self, name: str, value: int) -> None:
        self.mmio.write(regs.offset(name), int(value) & 0xFFFF_FFFF)

    def read_reg(self, name: str) -> int:
        return int(self.mmio.read(regs.offset(name)))

    def wait(self, timeout_cycles: int) -> None:
        """Poll STATUS until the run is no longer busy; the budget is ``timeout_cycles`` of the
        accelerator's clock, in seconds."""
        timeout_s = timeout_cycles / (self.config.clock_mhz * 1e6)
        deadline = self._clock.monotonic() + timeout_s
        while self.read_reg("STATUS") & regs.Status.BUSY:
            left = deadline - self._clock.monotonic()
            if left <= 0:
                raise DeviceTimeoutError(
                    f"{self.name}: the accelerator is still busy after {timeout_s:.3g} s "
                    f"({timeout_cycles} cycles at {self.config.clock_mhz:g} MHz)"
                )
            self._clock.sleep(min(self._poll_s, left))

    def close(self) -> None:
        """Free the DMA window (the overlay stays loaded)."""
        self._buffer.freebuffer()


def open_board(
    config: AccelConfig, window_size: int, bitfile: str | Path = "rmsmp.bit", **options: Any
) -> PynqDevice:
    """The ``pynq`` backend: load ``bitfile`` (its .hwh beside it) with the real pynq package,
    on a PYNQ board. ``options`` go to ``PynqDevice`` (e.g. ``poll_s``)."""
    bit = Path(bitfile)
    for p in (bit, bit.with_suffix(".hwh")):
        if not p.is_file():
            raise FileNotFoundError(
                f"overlay file {p} does not exist; copy the overlay package built by "
                "`rmsmp build` (its .bit and .hwh side by side) and pass its .bit"
            )
    try:
        import pynq
    except ImportError:
        raise RuntimeError(
            "the pynq backend runs on a PYNQ board with the pynq package (pip install "
            "'rmsmp[pynq]'; pynq 4.0 needs numpy<2); off the board use the pynq-sim backend"
        ) from None
    try:
        return PynqDevice(config, window_size, bit, api=pynq, clock=time, **options)
    except RuntimeError as e:  # pynq: "No Devices Found" off a board
        raise RuntimeError(f"cannot open the overlay {bit} with pynq: {e}; run on the board") from e
