"""The instruction set: opcodes and fields, with widths computed from the AccelConfig.

Every instruction is ``insn_bits`` (128) wide, little-endian in memory, fields packed LSB-first in
the order listed. Opcode 0 is illegal, so zeroed memory stops the accelerator instead of running.

Semantics (the golden model in ``rmsmp.sim.golden`` executes exactly this):

* ``LOAD buf, sram, dram, count``: copy ``count`` entries from the DMA window at beat offset
  ``dram`` (8-byte units, relative to WINDOW_BASE) into buffer ``buf`` (W, X or Q) entries
  ``sram .. sram+count-1``. Each entry occupies ``layout.entry_beats`` beats in memory.
* ``STORE sram, dram, count``: copy output-buffer entries to the window, same layout rules.
* ``GEMM``: for m in 0..m_count-1:
  ``s = (0 if reset else ACC[acc_base+m]) + sum_k W[w_base+k] (.) X[x_base+m*k_count+k]``
  over k in 0..k_count-1, where (.) is, for every PE row r, the dot product of row r's weight codes
  (decoded by the row's format) with the ``cols`` activations. If ``final``, ``OUT[o_base+m][r] =
  requant(s[r], Q[q_base][r], lo, hi)``; otherwise ``ACC[acc_base+m] = s`` (wrapped to acc_bits).

Operand checks (any failure stops with ERR_BAD_OPERAND before the instruction has any effect):
counts are >= 1 and every touched entry lies inside its buffer; ``lo <= hi``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import AccelConfig

DRAM_BITS = 32
"""Width of a DMA beat offset field (8-byte units inside the window)."""
OPCODE_BITS = 4


class Opcode(enum.IntEnum):
    """Instruction opcodes; 0 is reserved as illegal."""

    LOAD = 1
    STORE = 2
    GEMM = 3


class Buf(enum.IntEnum):
    """Buffers a LOAD can fill."""

    W = 0
    X = 1
    Q = 2


BUF_BITS = 2


class Error(enum.IntEnum):
    """Values of the ERROR register (and of the golden model's error)."""

    NONE = 0
    ILLEGAL_OPCODE = 1
    BAD_OPERAND = 2
    DMA_WINDOW = 3
    AXI_RESP = 4


def addr_bits(depth: int) -> int:
    """Bits to address ``depth`` entries."""
    return max(1, (depth - 1).bit_length())


def count_bits(depth: int) -> int:
    """Bits to hold a count of up to ``depth``."""
    return depth.bit_length()


@dataclass(frozen=True)
class Field:
    """One field of an instruction: name, LSB offset, width."""

    name: str
    offset: int
    width: int
    signed: bool = False


def _fields(cfg: AccelConfig) -> dict[Opcode, list[tuple[str, int, bool]]]:
    mdepth = max(cfg.acc_depth, cfg.out_depth)
    abuf = max(cfg.w_depth, cfg.x_depth, cfg.q_depth)
    return {
        Opcode.LOAD: [
            ("buf", BUF_BITS, False),
            ("sram", addr_bits(abuf), False),
            ("dram", DRAM_BITS, False),
            ("count", count_bits(abuf), False),
        ],
        Opcode.STORE: [
            ("sram", addr_bits(cfg.out_depth), False),
            ("dram", DRAM_BITS, False),
            ("count", count_bits(cfg.out_depth), False),
        ],
        Opcode.GEMM: [
            ("reset", 1, False),
            ("final", 1, False),
            ("w_base", addr_bits(cfg.w_depth), False),
            ("x_base", addr_bits(cfg.x_depth), False),
            ("acc_base", addr_bits(cfg.acc_depth), False),
            ("o_base", addr_bits(cfg.out_depth), False),
            ("q_base", addr_bits(cfg.q_depth), False),
            ("m_count", count_bits(mdepth), False),
            ("k_count", count_bits(cfg.w_depth), False),
            ("lo", cfg.act_bits, True),
            ("hi", cfg.act_bits, True),
        ],
    }


def layout(cfg: AccelConfig) -> dict[Opcode, dict[str, Field]]:
    """Field layout of every opcode; the opcode itself is bits [0, OPCODE_BITS)."""
    out = {}
    for op, fl in _fields(cfg).items():
        off = OPCODE_BITS
        d = {}
        for name, w, s in fl:
            d[name] = Field(name, off, w, s)
            off += w
        out[op] = d
    return out


def check_fits(cfg: AccelConfig) -> None:
    """Raise ConfigError if some instruction does not fit in ``insn_bits``."""
    from .config import ConfigError

    for op, d in layout(cfg).items():
        end = max(f.offset + f.width for f in d.values())
        if end > cfg.insn_bits:
            raise ConfigError(
                f"insn_bits: {op.name} needs {end} bits with these buffer depths but "
                f"instructions are {cfg.insn_bits}; shrink the depths or widen insn_bits"
            )


class IsaError(ValueError):
    """An instruction that cannot be encoded or decoded."""


@dataclass(frozen=True)
class Insn:
    """A decoded instruction: opcode and its field values."""

    op: Opcode
    args: dict[str, int]

    def __getattr__(self, k: str) -> int:
        try:
            return self.__dict__["args"][k]
        except KeyError:
            raise AttributeError(k) from None


def encode(cfg: AccelConfig, op: Opcode, **args: int) -> int:
    """Pack one instruction into an int of ``insn_bits`` bits; every field must be given."""
    lay = layout(cfg)[op]
    if set(args) != set(lay):
        raise IsaError(f"{op.name} takes fields {sorted(lay)}, got {sorted(args)}")
    word = int(op)
    for name, f in lay.items():
        v = int(args[name])
        lo, hi = (
            (-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1)
            if f.signed
            else (0, (1 << f.width) - 1)
        )
        if not lo <= v <= hi:
            raise IsaError(f"{op.name}.{name}={v} does not fit in {f.width} bits for this config")
        word |= (v & ((1 << f.width) - 1)) << f.offset
    return word


def decode(cfg: AccelConfig, word: int) -> Insn | None:
    """Unpack an instruction word; None for an illegal opcode."""
    try:
        op = Opcode(word & ((1 << OPCODE_BITS) - 1))
    except ValueError:
        return None
    args = {}
    for name, f in layout(cfg)[op].items():
        v = (word >> f.offset) & ((1 << f.width) - 1)
        if f.signed and v >> (f.width - 1):
            v -= 1 << f.width
        args[name] = v
    return Insn(op, args)


def to_bytes(cfg: AccelConfig, words: list[int]) -> bytes:
    """Little-endian memory image of a list of instruction words."""
    n = cfg.insn_bits // 8
    return b"".join(w.to_bytes(n, "little") for w in words)


def from_bytes(cfg: AccelConfig, blob: bytes) -> list[int]:
    """Inverse of ``to_bytes``."""
    n = cfg.insn_bits // 8
    if len(blob) % n:
        raise IsaError(f"instruction stream of {len(blob)} bytes is not a multiple of {n}")
    return [int.from_bytes(blob[i : i + n], "little") for i in range(0, len(blob), n)]
