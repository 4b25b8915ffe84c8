"""The device interface the runtime drives: a DMA window and the AXI4-Lite registers.

The same runtime code drives every backend through it: ``GoldenDevice`` (numpy, instruction
level), ``RtlDevice`` (Verilator) and, on a board, the PYNQ device. Offsets are bytes inside the
window; ``window_base`` is its physical address (what WINDOW_BASE is programmed with).
"""

from __future__ import annotations

import abc

from ..arch import AccelConfig


class DeviceTimeoutError(TimeoutError):
    """The accelerator did not finish within the allowed time."""


class Device(abc.ABC):
    """A running accelerator instance with a memory window of ``window_size`` bytes."""

    config: AccelConfig
    window_base: int
    window_size: int
    name: str

    @abc.abstractmethod
    def write(self, offset: int, data: bytes) -> None:
        """Copy bytes into the window."""

    @abc.abstractmethod
    def read(self, offset: int, n: int) -> bytes:
        """Copy ``n`` bytes out of the window."""

    @abc.abstractmethod
    def write_reg(self, name: str, value: int) -> None:
        """Write a 32-bit register (see ``arch.regs``)."""

    @abc.abstractmethod
    def read_reg(self, name: str) -> int:
        """Read a 32-bit register."""

    @abc.abstractmethod
    def wait(self, timeout_cycles: int) -> None:
        """Return once STATUS is no longer busy; raise DeviceTimeoutError past the budget."""

    def close(self) -> None:  # noqa: B027 - optional hook: not every device holds resources
        """Release the device (default: nothing to release)."""
