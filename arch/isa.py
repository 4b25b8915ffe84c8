"""The instruction set: opcodes, fields (widths computed from the AccelConfig), token semantics
and the one executable operand check.

Every instruction is ``insn_bits`` wide, little-endian in memory, fields packed LSB-first in the
order listed: the opcode, then the four dependency-token flags every instruction carries, then the
opcode's own fields. Opcode 0 is illegal, so zeroed memory stops the accelerator instead of running.

Units and queues (VTA-style decoupled execution). Fetch reads instructions in program order,
checks each with ``check`` and dispatches it to the command queue (``cmd_depth`` entries) of its
unit: LOAD to the load unit, GEMM and SYNC to the compute unit, STORE to the store unit. The units
run concurrently. Between neighbouring units there are four token counters (``token_depth`` tokens
each): load->compute (L2C), compute->load (C2L), compute->store (C2S), store->compute (S2C).
"prev" and "next" name a unit's neighbours in the order load, compute, store. A unit takes the
head of its queue (freeing that queue slot), waits until every counter it pops holds a token and
takes them all at once, executes the instruction, then waits until every counter it pushes has
room and adds to them all at once. The load unit has no prev and the store unit no next; setting
those flags is a BAD_OPERAND.

Semantics of each opcode (the golden model in ``rmsmp.sim.golden`` executes exactly this):

* ``LOAD buf, sram, dram, y_size, x_size, x_stride``: copy a 2-D block of entries from the DMA
  window into buffer ``buf`` (W, X, Q, or R, the residual buffer of ``out_depth`` X entries):
  row y (0 <= y < y_size) is the ``x_size`` entries at entry offset ``y*x_stride`` from beat
  offset ``dram`` (8-byte units relative to WINDOW_BASE); it lands at ``sram + y*x_size`` on
  chip (rows are packed). Each entry occupies
  ``layout.entry_beats`` beats in memory.
* ``STORE sram, dram, y_size, x_size, x_stride``: the inverse, from the output buffer: OUT entry
  ``sram + y*x_size + x`` goes to entry ``y*x_stride + x`` after beat offset ``dram``.
* ``GEMM`` (a convolution window walk; a plain GEMM is the 1x1 case): for every output position
  ``m = oy*ow_count + ox`` (0 <= oy < oh_count, 0 <= ox < ow_count)::

      s[m] = (0 if reset else ACC[acc_base+m])
             + sum over c < c_count, i < kh, j < kw of
               W[w_base + (c*kh + i)*kw + j] (.) Xv(c, oy*stride_y + i - pad_top,
                                                      ox*stride_x + j - pad_left)

  where ``Xv(c, y, x) = X[x_base + c*c_stride + y*tile_w + x]`` if ``0 <= y < tile_h`` and
  ``0 <= x < tile_w``, else the zero vector (padding), and (.) is, for every PE row r, the dot
  product of row r's weight codes (decoded by the row's format) with the ``cols`` activations.
  With ``max`` set the walk takes maxima instead of products (pooling): ``s[m][r]`` is the
  largest ``Xv(c, y, x)[r]`` over the window, where a position outside the tile is
  ``-2^(acc_bits-1)`` and never wins; the weights are not read, and ``reset`` and ``final`` must
  be set.
  If ``final``: ``OUT[o_base+m][r] = requant(s[m][r], Q[q_base][r], lo, hi)``, or with ``res``
  ``requant_residual(s[m][r], Q[q_base][r], R[r_base+m][r], lo, hi)`` (``arch.numerics``: the
  residual enters on its own multiplier, the row's ``res_mult``, before the one rounding);
  otherwise ``ACC[acc_base+m] = s[m]`` (wrapped to acc_bits).
* ``SYNC``: only its tokens (the compute unit passes a store->compute token on to the load unit,
  so a load can wait for a store to reach DDR).

Starting a run: a WINDOW_BASE that is not a multiple of ``window_align``, a WINDOW_LIMIT below
it, or an INSN_ADDR that is not beat-aligned ends the run at once with BAD_WINDOW (PC 0).

Ending a run: it is over when fetch has stopped (it dispatched INSN_COUNT instructions, or the
next one failed ``check``, or its unit's queue is full) and no unit can make progress (each is
idle with an empty queue or waits for tokens that cannot come). Then STATUS is DONE, and ERROR is
the ``check`` failure if fetch stopped on one (PC = its index), else DEADLOCK if any instruction
is left (PC = the number of instructions dispatched), else NONE (PC = INSN_COUNT). Because a unit
never loses an enabled action to another unit, this end state does not depend on timing. An AXI
error response or a stalled handshake (``watchdog_cycles`` without progress) stops the run with
AXI_RESP or AXI_TIMEOUT; PC is then the faulting instruction and FAULT_UNIT its unit. Every
other ending reports FAULT_UNIT = FETCH. ``schedule`` is the executable form of these rules.
"""

from __future__ import annotations

import enum
import functools
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError, IsaError
from .layout import BUF_ENTRY, Buf, Entry, entry_bits, entry_bytes

if TYPE_CHECKING:
    from .config import AccelConfig

DRAM_BITS = 32
"""Width of a DMA beat offset field (8-byte units inside the window)."""
STRIDE_BITS = 16
"""Width of a DDR row stride, in entries."""
OPCODE_BITS = 4
KERNEL_BITS = 4
"""Kernel sizes 1..15 (a global pool's kernel is its whole map)."""
CONV_STRIDE_BITS = 2
"""Convolution strides 1..3."""
PAD_BITS = 3
TOKEN_FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")
"""The dependency-token flags, right after the opcode in every instruction."""


class Opcode(enum.IntEnum):
    """Instruction opcodes; 0 is reserved as illegal."""

    LOAD = 1
    STORE = 2
    GEMM = 3
    SYNC = 4


class Unit(enum.IntEnum):
    """The units of the core, as FAULT_UNIT reports them."""

    FETCH = 0
    LOAD = 1
    COMPUTE = 2
    STORE = 3


UNIT_OF: dict[Opcode, Unit] = {
    Opcode.LOAD: Unit.LOAD,
    Opcode.STORE: Unit.STORE,
    Opcode.GEMM: Unit.COMPUTE,
    Opcode.SYNC: Unit.COMPUTE,
}
"""Which unit's command queue each opcode goes to."""


BUF_BITS = 2


class Error(enum.IntEnum):
    """Values of the ERROR register (and of the golden model's error)."""

    NONE = 0
    ILLEGAL_OPCODE = 1
    BAD_OPERAND = 2
    DMA_WINDOW = 3
    AXI_RESP = 4
    DEADLOCK = 5
    AXI_TIMEOUT = 6
    BAD_WINDOW = 7


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
    block = [
        ("y_size", count_bits(abuf), False),
        ("x_size", count_bits(abuf), False),
        ("x_stride", STRIDE_BITS, False),
    ]
    xc = count_bits(cfg.x_depth)
    return {
        Opcode.LOAD: [
            ("buf", BUF_BITS, False),
            ("sram", addr_bits(abuf), False),
            ("dram", DRAM_BITS, False),
            *block,
        ],
        Opcode.STORE: [
            ("sram", addr_bits(cfg.out_depth), False),
            ("dram", DRAM_BITS, False),
            *block,
        ],
        Opcode.GEMM: [
            ("reset", 1, False),
            ("final", 1, False),
            ("w_base", addr_bits(cfg.w_depth), False),
            ("x_base", addr_bits(cfg.x_depth), False),
            ("acc_base", addr_bits(cfg.acc_depth), False),
            ("o_base", addr_bits(cfg.out_depth), False),
            ("q_base", addr_bits(cfg.q_depth), False),
            ("max", 1, False),
            ("res", 1, False),
            ("r_base", addr_bits(cfg.out_depth), False),
            ("oh_count", count_bits(mdepth), False),
            ("ow_count", count_bits(mdepth), False),
            ("c_count", count_bits(cfg.w_depth), False),
            ("kh", KERNEL_BITS, False),
            ("kw", KERNEL_BITS, False),
            ("stride_y", CONV_STRIDE_BITS, False),
            ("stride_x", CONV_STRIDE_BITS, False),
            ("pad_top", PAD_BITS, False),
            ("pad_left", PAD_BITS, False),
            ("tile_h", xc, False),
            ("tile_w", xc, False),
            ("c_stride", xc, False),
            ("lo", cfg.act_bits, True),
            ("hi", cfg.act_bits, True),
        ],
        Opcode.SYNC: [],
    }


@functools.cache
def layout(cfg: AccelConfig) -> dict[Opcode, dict[str, Field]]:
    """Field layout of every opcode: bits [0, OPCODE_BITS) are the opcode, then the token flags."""
    out = {}
    for op, fl in _fields(cfg).items():
        off = OPCODE_BITS
        d = {}
        for name, w, s in [*((t, 1, False) for t in TOKEN_FLAGS), *fl]:
            d[name] = Field(name, off, w, s)
            off += w
        out[op] = d
    return out


def check_fits(cfg: AccelConfig) -> None:
    """Raise ConfigError if some instruction does not fit in ``insn_bits``."""
    for op, d in layout(cfg).items():
        end = max(f.offset + f.width for f in d.values())
        if end > cfg.insn_bits:
            raise ConfigError(
                f"insn_bits: {op.name} needs {end} bits with these buffer depths but "
                f"instructions are {cfg.insn_bits}; shrink the depths or widen insn_bits"
            )


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

    @property
    def unit(self) -> Unit:
        """The unit that executes it."""
        return UNIT_OF[self.op]


def encode(cfg: AccelConfig, op: Opcode, **args: int) -> int:
    """Pack one instruction into an int of ``insn_bits`` bits.

    Every field must be given, except the token flags, which default to 0.
    """
    lay = layout(cfg)[op]
    args = {**{t: 0 for t in TOKEN_FLAGS}, **args}
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


def buf_depth(cfg: AccelConfig, buf: Buf) -> int:
    """Entries of a LOAD target buffer (R, the residual buffer, is as deep as OUT)."""
    return {Buf.W: cfg.w_depth, Buf.X: cfg.x_depth, Buf.Q: cfg.q_depth, Buf.R: cfg.out_depth}[buf]


BUFFERS = ("w", "x", "q", "r", "acc", "out")
"""The on-chip buffers (``hw.buffers.Buffer``'s values): the LOAD targets, ACC and OUT."""


def buffer_shapes(cfg: AccelConfig) -> dict[str, tuple[int, int]]:
    """(entry bits, depth) of every on-chip buffer, by ``BUFFERS`` name: what the shell
    instantiates (``hw.buffers``) and what the resource model maps to block RAM."""
    out = {b.name.lower(): (entry_bits(cfg, BUF_ENTRY[b]), buf_depth(cfg, b)) for b in Buf}
    out["acc"] = (cfg.rows * cfg.acc_bits, cfg.acc_depth)
    out["out"] = (entry_bits(cfg, Entry.OUT), cfg.out_depth)
    return {b: out[b] for b in BUFFERS}


def block_entries(y_size: int, x_size: int, x_stride: int) -> int:
    """Entries from the first to one past the last entry a LOAD/STORE block touches in DDR."""
    return (y_size - 1) * x_stride + x_size


def check(cfg: AccelConfig, insn: Insn | None, window_bytes: int) -> Error:
    """The operand check fetch applies before dispatch: the one definition (RTL mirrors it).

    ``window_bytes`` is WINDOW_LIMIT - WINDOW_BASE. Returns Error.NONE for a legal instruction.
    """
    if insn is None:
        return Error.ILLEGAL_OPCODE
    a = insn.args
    unit = UNIT_OF[insn.op]
    if unit is Unit.LOAD and (a["pop_prev"] or a["push_prev"]):
        return Error.BAD_OPERAND
    if unit is Unit.STORE and (a["pop_next"] or a["push_next"]):
        return Error.BAD_OPERAND
    if insn.op in (Opcode.LOAD, Opcode.STORE):
        if insn.op is Opcode.LOAD:
            if a["buf"] not in tuple(Buf):
                return Error.BAD_OPERAND
            buf = Buf(a["buf"])
            depth = buf_depth(cfg, buf)
            kind = BUF_ENTRY[buf]
        else:
            depth, kind = cfg.out_depth, Entry.OUT
        ys, xs, st = a["y_size"], a["x_size"], a["x_stride"]
        if ys < 1 or xs < 1 or (ys > 1 and st < xs) or a["sram"] + ys * xs > depth:
            return Error.BAD_OPERAND
        end = a["dram"] * (cfg.axi_data_bits // 8) + block_entries(ys, xs, st) * entry_bytes(
            cfg, kind
        )
        return Error.NONE if end <= window_bytes else Error.DMA_WINDOW
    if insn.op is Opcode.SYNC:
        return Error.NONE
    m = a["oh_count"] * a["ow_count"]
    k = a["c_count"] * a["kh"] * a["kw"]
    ok = (
        m >= 1
        and k >= 1
        and a["stride_y"] >= 1
        and a["stride_x"] >= 1
        and a["tile_h"] >= 1
        and a["tile_w"] >= 1
        and a["w_base"] + k <= cfg.w_depth
        and a["x_base"] + (a["c_count"] - 1) * a["c_stride"] + a["tile_h"] * a["tile_w"]
        <= cfg.x_depth
        and a["q_base"] < cfg.q_depth
        and a["lo"] <= a["hi"]
        and (a["reset"] and a["final"] or a["acc_base"] + m <= cfg.acc_depth)
        and (not a["final"] or a["o_base"] + m <= cfg.out_depth)
        and (not a["max"] or a["reset"] and a["final"])
        and (not a["res"] or a["final"] and a["r_base"] + m <= cfg.out_depth)
    )
    return Error.NONE if ok else Error.BAD_OPERAND


TOKEN_COUNTERS = ("l2c", "c2l", "c2s", "s2c")
"""The four dependency-token counters: load->compute, compute->load, compute->store,
store->compute."""
POPS: dict[Unit, dict[str, str]] = {
    Unit.LOAD: {"pop_next": "c2l"},
    Unit.COMPUTE: {"pop_prev": "l2c", "pop_next": "s2c"},
    Unit.STORE: {"pop_prev": "c2s"},
}
"""Per unit, the token flags it may pop and the counter each one pops (the load unit has no
prev, the store unit no next)."""
PUSHES: dict[Unit, dict[str, str]] = {
    Unit.LOAD: {"push_next": "l2c"},
    Unit.COMPUTE: {"push_prev": "c2l", "push_next": "c2s"},
    Unit.STORE: {"push_prev": "s2c"},
}
"""Per unit, the token flags it may push and the counter each one adds to."""


@dataclass(frozen=True)
class Schedule:
    """One legal execution order of a run and how it ended.

    ``order`` lists the indices of the instructions executed, in an order the units may take;
    ``dispatched`` counts the instructions fetch dispatched; ``deadlock`` says some dispatched or
    pending instruction could never run.
    """

    order: list[int]
    dispatched: int
    deadlock: bool


def schedule(cfg: AccelConfig, insns: list[Insn]) -> Schedule:
    """Run the fetch/queue/token rules of the module docstring on checked instructions.

    ``insns`` are the instructions fetch may dispatch, in program order (everything before the
    first ``check`` failure). The end state does not depend on the order units are visited in.
    """
    queues: dict[Unit, deque[int]] = {u: deque() for u in POPS}
    cur: dict[Unit, tuple[int, bool] | None] = dict.fromkeys(POPS)
    tokens = dict.fromkeys(TOKEN_COUNTERS, 0)
    order: list[int] = []
    fetched = 0
    progress = True
    while progress:
        progress = False
        while fetched < len(insns):
            q = queues[insns[fetched].unit]
            if len(q) >= cfg.cmd_depth:
                break
            q.append(fetched)
            fetched += 1
            progress = True
        for u, q in queues.items():
            if cur[u] is None and q:
                cur[u] = (q.popleft(), False)
                progress = True
            if cur[u] is None:
                continue
            i, executed = cur[u]
            a = insns[i].args
            if not executed:
                pops = [t for f, t in POPS[u].items() if a[f]]
                if any(tokens[t] < 1 for t in pops):
                    continue
                for t in pops:
                    tokens[t] -= 1
                order.append(i)
                cur[u] = (i, True)
                progress = True
            pushes = [t for f, t in PUSHES[u].items() if a[f]]
            if any(tokens[t] >= cfg.token_depth for t in pushes):
                continue
            for t in pushes:
                tokens[t] += 1
            cur[u] = None
            progress = True
    idle = all(c is None for c in cur.values()) and not any(queues.values())
    return Schedule(order, fetched, not (idle and fetched == len(insns)))


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
