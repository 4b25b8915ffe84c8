"""The boards as data: part, PS7 settings, address map, resources and default accelerator.

A board is the platform around an accelerator: the Zynq part, how its processing system (PS7)
is set up (DDR, the PS reference clock, the fabric clock, the HP0 port the accelerator's AXI
master reaches DDR through and the GP0 port the CPU reaches its registers through), where the
registers sit in the CPU's address map, and what the programmable logic offers. The
accelerator's own parameters stay in ``arch.AccelConfig``; a board names its default preset.
Numbers are the boards' public datasheets and reference manuals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..arch import PRESETS, AccelConfig
from . import resources

HP_DATA_BITS = 64
"""Width of the Zynq-7000 HP ports (AXI3 slaves); ``AccelConfig.axi_data_bits`` must match."""
GP0_BASE, GP0_LIMIT = 0x4000_0000, 0x8000_0000
"""The M_AXI_GP0 window of the Zynq-7000 address map."""
DDR_EFFICIENCY = 0.75
"""Fraction of the PS DDR's peak (bus width x two transfers per clock) that the PL's HP traffic
gets: refresh, bank and read/write turnarounds, the CPU's share. PYNQ-Z1's 2.1 GB/s DDR3-1050
gives about 1.6 GB/s."""


class BoardError(ValueError):
    """An unknown board, or board data that contradicts itself; the message names the fix."""


@dataclass(frozen=True)
class PS7:
    """The processing-system settings the block design sets (Vivado ``processing_system7``).

    ``crystal_mhz`` is the PS_CLK oscillator; ``ddr_*`` describe the PS DDR3 (part as Vivado's
    PCW_UIPARAM_DDR_PARTNO names it, bus width, clock); the fabric clock FCLK0 is the
    accelerator's ``clock_mhz``, set from the AccelConfig the design is built for.
    """

    crystal_mhz: float
    ddr_part: str
    ddr_bus_bits: int
    ddr_mhz: float

    def __post_init__(self) -> None:
        if self.ddr_bus_bits not in (16, 32):
            raise BoardError(f"PS7 DDR bus is 16 or 32 bits on Zynq-7000, got {self.ddr_bus_bits}")
        if not (self.crystal_mhz > 0 and self.ddr_mhz > 0):
            raise BoardError("PS7 crystal_mhz and ddr_mhz must be positive")

    @property
    def ddr_peak_gbps(self) -> float:
        """The PS DDR's peak bandwidth in GB/s: bus bytes x two transfers per DDR clock."""
        return self.ddr_bus_bits // 8 * 2 * self.ddr_mhz / 1e3


@dataclass(frozen=True)
class Board:
    """A Zynq-7000 board: part, PS7, address map, PL resources and its default accelerator.

    ``board_part`` is Vivado's board-file name (its preset sets the PS7's MIO and DDR timing
    when the board files are installed). ``csr_base``/``csr_range`` place the accelerator's
    AXI4-Lite registers on GP0; the HP0 port reaches ``ddr_bytes`` of DDR from address 0.
    ``ddr_gbps`` is the DDR bandwidth the PL gets; ``preset`` names the default AccelConfig.
    """

    name: str
    part: str
    board_part: str
    ps7: PS7
    ddr_bytes: int
    luts: int
    ffs: int
    dsps: int
    bram36: int
    preset: str
    csr_base: int = 0x43C0_0000
    csr_range: int = 0x1_0000

    def __post_init__(self) -> None:
        family, _, grade = self.part.rpartition("-")
        if not (family.startswith("xc7z") and grade.isdigit()):
            raise BoardError(f"board {self.name}: part {self.part!r} is not a Zynq-7000 part-grade")
        if not GP0_BASE <= self.csr_base < self.csr_base + self.csr_range <= GP0_LIMIT:
            raise BoardError(
                f"board {self.name}: registers at {self.csr_base:#x}+{self.csr_range:#x} must lie "
                f"in the GP0 window [{GP0_BASE:#x}, {GP0_LIMIT:#x})"
            )
        if self.csr_range & (self.csr_range - 1) or self.csr_base % self.csr_range:
            raise BoardError(
                f"board {self.name}: csr_range must be a power of two and csr_base aligned to it"
            )
        AccelConfig.preset(self.preset)  # fails fast on an unknown preset name

    @property
    def ddr_gbps(self) -> float:
        """DDR bandwidth the PL's HP ports get, reads and writes together, in GB/s."""
        return self.ps7.ddr_peak_gbps * DDR_EFFICIENCY

    def ddr_beats_per_cycle(self, cfg: AccelConfig) -> float:
        """``ddr_gbps`` in HP-port beats per cycle of ``cfg``'s clock: below 1 the DDR, not the
        port, bounds even one direction; below 2 it bounds a port reading and writing at once."""
        return self.ddr_gbps * 1e3 / cfg.clock_mhz / (HP_DATA_BITS // 8)

    @property
    def speed_grade(self) -> int:
        """The part's speed grade (the number after the last dash)."""
        return int(self.part.rpartition("-")[2])

    @property
    def config(self) -> AccelConfig:
        """The default AccelConfig, named after the board (the name is not in the hash, so
        boards with one preset share one config hash, and one Program runs on all of them)."""
        return dataclasses.replace(AccelConfig.preset(self.preset), name=self.name)

    def check(self, cfg: AccelConfig) -> None:
        """Raise BoardError unless ``cfg``'s ports fit this board's PS7 ports and its estimated
        resources (``boards.resources``) fit the part's LUT, FF, DSP48E1 and BRAM36."""
        if cfg.axi_data_bits != HP_DATA_BITS:
            raise BoardError(
                f"config {cfg.name}: axi_data_bits {cfg.axi_data_bits}, but {self.name}'s HP0 "
                f"port is {HP_DATA_BITS} bits; set axi_data_bits {HP_DATA_BITS}"
            )
        capacity = dict(lut=self.luts, ff=self.ffs, dsp=self.dsps, bram36=self.bram36)
        if why := resources.overshoot(cfg, self.part, capacity):
            raise BoardError(why)


_Z7020 = dict(luts=53_200, ffs=106_400, dsps=220, bram36=140)
_PYNQ_PS7 = PS7(crystal_mhz=50.0, ddr_part="MT41K256M16 RE-125", ddr_bus_bits=16, ddr_mhz=525.0)

BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board(
            "pynq-z1",
            "xc7z020clg400-1",
            "www.digilentinc.com:pynq-z1:part0:1.0",
            _PYNQ_PS7,
            ddr_bytes=512 << 20,
            preset="pynq-z1",
            **_Z7020,
        ),
        Board(
            "pynq-z2",
            "xc7z020clg400-1",
            "tul.com.tw:pynq-z2:part0:1.0",
            _PYNQ_PS7,
            ddr_bytes=512 << 20,
            preset="pynq-z1",
            **_Z7020,
        ),
        Board(
            "zc706",
            "xc7z045ffg900-2",
            "xilinx.com:zc706:part0:1.4",
            PS7(
                crystal_mhz=33.333333,
                ddr_part="MT41J256M8 HX-15E",
                ddr_bus_bits=32,
                ddr_mhz=533.333333,
            ),
            ddr_bytes=1 << 30,
            preset="zc706",
            luts=218_600,
            ffs=437_200,
            dsps=900,
            bram36=545,
        ),
    )
}


def board(name: str) -> Board:
    """Look up a board by name, with a clear error."""
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; known: {', '.join(sorted(BOARDS))}") from None


TARGETS: tuple[str, ...] = tuple(sorted(set(PRESETS) | set(BOARDS)))
"""The names ``target_config`` takes: every board and every AccelConfig preset."""


def target_config(name: str) -> AccelConfig:
    """The AccelConfig of a board name (pynq-z1, pynq-z2, zc706: its default config) or of a
    preset (e.g. tiny): the one place a name becomes a config, for the library and the CLI."""
    if name in BOARDS:
        return BOARDS[name].config
    if name in PRESETS:
        return PRESETS[name]
    raise BoardError(f"unknown board or preset {name!r}; known: {', '.join(TARGETS)}")
