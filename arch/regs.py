"""The control/status register map (AXI4-Lite, 32-bit registers, byte offsets)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

REG_BYTES = 4
AXIL_ADDR_BITS = 8
MAGIC = 0x524D5350  # "RMSP"


class Access(enum.Enum):
    """Who may write a register."""

    RW = "rw"
    RO = "ro"
    WO = "wo"


@dataclass(frozen=True)
class Reg:
    """One 32-bit register."""

    name: str
    offset: int
    access: Access
    doc: str


REGS: tuple[Reg, ...] = (
    Reg("CTRL", 0x00, Access.WO, "write bit 0 = 1 to start a run (ignored while busy)"),
    Reg("STATUS", 0x04, Access.RO, "bit 0 busy, bit 1 done, bit 2 error"),
    Reg("ERROR", 0x08, Access.RO, "error code of the last run (isa.Error)"),
    Reg("INSN_ADDR", 0x0C, Access.RW, "byte offset of the first instruction inside the window"),
    Reg("INSN_COUNT", 0x10, Access.RW, "number of instructions to run"),
    Reg("WINDOW_BASE", 0x14, Access.RW, "physical byte address where the DMA window starts"),
    Reg("WINDOW_LIMIT", 0x18, Access.RW, "physical byte address one past the window's end"),
    Reg("CYCLES_LO", 0x1C, Access.RO, "cycles of the last run, low word"),
    Reg("CYCLES_HI", 0x20, Access.RO, "cycles of the last run, high word"),
    Reg("CONFIG_HASH_LO", 0x24, Access.RO, "AccelConfig.hash, low word"),
    Reg("CONFIG_HASH_HI", 0x28, Access.RO, "AccelConfig.hash, high word"),
    Reg(
        "PC",
        0x2C,
        Access.RO,
        "instructions dispatched, or the index of the one that ended the run in error",
    ),
    Reg("MAGIC", 0x30, Access.RO, "0x524D5350 ('RMSP'): this is an rmsmp accelerator"),
    Reg("MAC_CYCLES", 0x34, Access.RO, "cycles in the last run in which the MAC array issued"),
    Reg("DMA_BEATS", 0x38, Access.RO, "AXI data beats moved in the last run"),
    Reg("FAULT_UNIT", 0x3C, Access.RO, "unit (isa.Unit) whose instruction ended the run in error"),
    Reg("LOAD_CYCLES", 0x40, Access.RO, "cycles in the last run in which the load unit worked"),
    Reg("STORE_CYCLES", 0x44, Access.RO, "cycles in the last run in which the store unit worked"),
)

REG: dict[str, Reg] = {r.name: r for r in REGS}


class Status(enum.IntFlag):
    """Bits of the STATUS register."""

    BUSY = 1
    DONE = 2
    ERROR = 4


CTRL_START = 1


def offset(name: str) -> int:
    """Byte offset of a register, with a clear error for a wrong name."""
    try:
        return REG[name].offset
    except KeyError:
        raise KeyError(f"no register {name!r}; known: {sorted(REG)}") from None
