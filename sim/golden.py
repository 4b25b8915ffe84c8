"""GoldenDevice: an instruction-level numpy model of the accelerator, built only from ``arch``.

It executes the ISA exactly as ``arch.isa`` specifies it (``isa.check`` at fetch, one legal
execution order from ``isa.schedule``, DMA window checks, the convolution window walk, wrapping
accumulators, requantisation from ``arch.numerics``) on buffers that persist between runs like
on-chip memory. Time comes from the cycle model beside it (``rmsmp.sim.cycles``): after a run,
CYCLES, MAC_CYCLES, DMA_BEATS, LOAD_CYCLES and STORE_CYCLES read what the RTL's counters would
(exactly, for the Verilator harness's fixed DDR latency; a run that stops on an error gets the
model's counts of the instructions fetch checked).
"""

from __future__ import annotations

import numpy as np

from ..arch import AccelConfig, isa, layout, numerics, regs
from ..arch.isa import Buf, Error, Opcode
from ..arch.layout import Entry
from ..arch.timing import DDR_READ_LATENCY
from ..host.device import Device
from .cycles import Counts, predict

DEFAULT_WINDOW_BASE = 0x1000_0000
_U32 = 0xFFFF_FFFF
_MEMO_BYTES = 64 << 20
"""Cap on the decoded W/Q entries kept for reuse."""
_MEMO_WORDS = 1 << 16
"""Cap on the decoded instruction words (and window walks) kept for reuse."""
_WALK_FIELDS = (
    "oh_count",
    "ow_count",
    "c_count",
    "kh",
    "kw",
    "stride_y",
    "stride_x",
    "pad_top",
    "pad_left",
    "tile_h",
    "tile_w",
    "c_stride",
)
"""The GEMM fields that shape its window walk."""


class GoldenDevice(Device):
    """Numpy model of one accelerator with a DMA window of ``window_size`` bytes."""

    def __init__(
        self,
        config: AccelConfig,
        window_size: int,
        window_base: int = DEFAULT_WINDOW_BASE,
        name: str = "golden",
        ddr_latency: int = DDR_READ_LATENCY,
    ) -> None:
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size must be a positive int, got {window_size!r}")
        if window_base < 0 or window_base % 8 or window_base + window_size > 1 << 32:
            raise ValueError(
                f"window [{window_base:#x}, +{window_size:#x}) must be 8-byte aligned and lie "
                "in the 32-bit physical address space; pick a lower base or a smaller window"
            )
        if not isinstance(ddr_latency, int) or ddr_latency < 0:
            raise ValueError(f"ddr_latency must be a non-negative int, got {ddr_latency!r}")
        self.config = config
        self.ddr_latency = ddr_latency
        self._timed: dict[tuple, Counts] = {}
        self.window_base = window_base
        self.window_size = window_size
        self.name = name
        self.mem = bytearray(window_size)
        self._regs = {r.name: 0 for r in regs.REGS}
        self._regs["CONFIG_HASH_LO"] = config.hash_int & _U32
        self._regs["CONFIG_HASH_HI"] = config.hash_int >> 32
        self._regs["MAGIC"] = regs.MAGIC
        c = config
        self.w = np.zeros((c.w_depth, c.rows, c.cols), dtype=np.int64)
        self.levels = np.zeros((c.w_depth, c.cols, c.rows))
        """W decoded at load time: the weight level of every (entry, column, row), as float64
        (exact: every sum a GEMM forms stays far below 2^53), so a GEMM is one BLAS matmul."""
        self.x = np.zeros((c.x_depth, c.cols), dtype=np.int64)
        self.q = np.zeros((c.q_depth, c.rows, len(layout.Q_FIELDS)), dtype=np.int64)
        self.r = np.zeros((c.out_depth, c.cols), dtype=np.int64)
        self.acc = np.zeros((c.acc_depth, c.rows), dtype=np.int64)
        self.out = np.zeros((c.out_depth, c.rows), dtype=np.int64)
        offs = c.group_offsets()
        self._groups = [(numerics.weight_format(g.fmt), *offs[g.fmt]) for g in c.groups]
        self._decoded: dict[int, isa.Insn | None] = {}
        self._walks: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._unpacked: dict[tuple[Entry, bytes], np.ndarray] = {}
        self._unpacked_bytes = 0

    def _decode(self, word: int) -> isa.Insn | None:
        """``isa.decode``, memoised (programs rerun the same words)."""
        if word not in self._decoded:
            if len(self._decoded) >= _MEMO_WORDS:
                self._decoded.clear()
            self._decoded[word] = isa.decode(self.config, word)
        return self._decoded[word]

    def _unpack(self, kind: Entry, blob: bytes) -> np.ndarray:
        """``layout.unpack`` with unsigned fields; W and Q entries (often reloaded) are memoised."""
        if kind is Entry.X:
            return layout.unpack(self.config, kind, blob, signed=False)
        key = (kind, blob)
        if key not in self._unpacked:
            raw = layout.unpack(self.config, kind, blob, signed=False)
            if self._unpacked_bytes + raw.nbytes > _MEMO_BYTES:
                self._unpacked.clear()
                self._unpacked_bytes = 0
            self._unpacked[key] = raw
            self._unpacked_bytes += raw.nbytes
        return self._unpacked[key]

    def _check_window(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.window_size:
            raise ValueError(
                f"window access [{offset}, {offset + n}) lies outside the {self.window_size}-byte "
                "window; open the device with a larger window"
            )

    def write(self, offset: int, data: bytes) -> None:
        """Copy bytes into the window."""
        self._check_window(offset, len(data))
        self.mem[offset : offset + len(data)] = data

    def read(self, offset: int, n: int) -> bytes:
        """Copy ``n`` bytes out of the window."""
        self._check_window(offset, n)
        return bytes(self.mem[offset : offset + n])

    def write_reg(self, name: str, value: int) -> None:
        """Write a register; writing CTRL bit 0 runs the instruction list to completion."""
        reg = regs.REG.get(name)
        if reg is None:
            raise KeyError(f"no register {name!r}; known: {sorted(regs.REG)}")
        if reg.access is regs.Access.RO:
            raise ValueError(f"register {name} is read-only")
        if not 0 <= value <= _U32:
            raise ValueError(f"register {name}: {value} does not fit in 32 bits")
        if name == "CTRL":
            if value & regs.CTRL_START:
                self._run()
            return
        self._regs[name] = value

    def read_reg(self, name: str) -> int:
        """Read a register (CTRL, write-only, reads 0)."""
        reg = regs.REG.get(name)
        if reg is None:
            raise KeyError(f"no register {name!r}; known: {sorted(regs.REG)}")
        return 0 if reg.access is regs.Access.WO else self._regs[name]

    def wait(self, timeout_cycles: int) -> None:
        """Runs are synchronous, so there is nothing to wait for."""

    def _mem_span(self, offset: int, n: int) -> int | Error:
        """Window byte ``offset`` (from WINDOW_BASE) as an index into ``mem``, or the error."""
        base, limit = self._regs["WINDOW_BASE"], self._regs["WINDOW_LIMIT"]
        phys = base + offset
        if not (base <= phys and phys + n <= limit):
            return Error.DMA_WINDOW
        i = phys - self.window_base
        if i < 0 or i + n > self.window_size:
            return Error.AXI_RESP
        return i

    def _end(self, err: Error, pc: int, unit: isa.Unit = isa.Unit.FETCH) -> None:
        status = regs.Status.DONE | (regs.Status.ERROR if err is not Error.NONE else 0)
        self._regs.update(STATUS=int(status), ERROR=int(err), PC=pc, FAULT_UNIT=int(unit))

    def _run(self) -> None:
        """Fetch and check in program order, then execute in an order ``isa.schedule`` allows."""
        cfg = self.config
        base, limit = self._regs["WINDOW_BASE"], self._regs["WINDOW_LIMIT"]
        start, count = self._regs["INSN_ADDR"], self._regs["INSN_COUNT"]
        if base % cfg.window_align or limit < base or start % (cfg.axi_data_bits // 8):
            return self._end(Error.BAD_WINDOW, 0)
        nbytes = cfg.insn_bits // 8
        insns: list[isa.Insn] = []
        words: list[int] = []
        fetch_err = Error.NONE
        for i in range(count):
            at = self._mem_span(start + i * nbytes, nbytes)
            if isinstance(at, Error):
                fetch_err = at
                break
            words.append(int.from_bytes(self.mem[at : at + nbytes], "little"))
            insn = self._decode(words[-1])
            fetch_err = isa.check(cfg, insn, limit - base)
            if fetch_err is not Error.NONE:
                break
            insns.append(insn)
        self._time(insns, words[: len(insns)])
        sched = isa.schedule(cfg, insns)
        for i in sched.order:
            err = self._execute(insns[i])
            if err is not Error.NONE:
                return self._end(err, i, insns[i].unit)
        if fetch_err is not Error.NONE and sched.dispatched == len(insns):
            self._end(fetch_err, len(insns))  # fetch got as far as the failing instruction
        elif sched.deadlock:
            self._end(Error.DEADLOCK, sched.dispatched)
        else:
            self._end(Error.NONE, count)

    def _time(self, insns: list[isa.Insn], words: list[int]) -> None:
        """Set the counter registers from the cycle model (memoised: batches rerun a Program)."""
        key = (self._regs["WINDOW_BASE"], *words)
        if key not in self._timed:
            if len(self._timed) >= _MEMO_WORDS:
                self._timed.clear()
            self._timed[key] = predict(
                self.config, insns, self._regs["WINDOW_BASE"], self.ddr_latency
            )
        c = self._timed[key]
        self._regs.update(
            CYCLES_LO=c.cycles & _U32,
            CYCLES_HI=c.cycles >> 32,
            MAC_CYCLES=c.mac_cycles & _U32,
            DMA_BEATS=c.dma_beats & _U32,
            LOAD_CYCLES=c.load_cycles & _U32,
            STORE_CYCLES=c.store_cycles & _U32,
        )

    def _execute(self, insn: isa.Insn) -> Error:
        if insn.op is Opcode.LOAD:
            return self._load(insn)
        if insn.op is Opcode.STORE:
            return self._store(insn)
        if insn.op is Opcode.GEMM:
            self._gemm(insn)
        return Error.NONE

    def _rows(self, i: isa.Insn, kind: Entry) -> list[int | Error]:
        """Window indices of the ``y_size`` rows of a LOAD/STORE block (or the error)."""
        eb = layout.entry_bytes(self.config, kind)
        first = i.dram * (self.config.axi_data_bits // 8)
        return [self._mem_span(first + y * i.x_stride * eb, i.x_size * eb) for y in range(i.y_size)]

    def _load(self, i: isa.Insn) -> Error:
        cfg = self.config
        buf = Buf(i.buf)
        kind = layout.BUF_ENTRY[buf]
        n = i.x_size * layout.entry_bytes(cfg, kind)
        for y, at in enumerate(self._rows(i, kind)):
            if isinstance(at, Error):
                return at
            raw = self._unpack(kind, bytes(self.mem[at : at + n]))
            dst = slice(i.sram + y * i.x_size, i.sram + (y + 1) * i.x_size)
            if buf is Buf.W:
                codes = raw.reshape(i.x_size, cfg.rows, cfg.cols)
                self.w[dst] = codes
                for fmt, r0, rows in self._groups:
                    lv = fmt.decode(codes[:, r0 : r0 + rows, :]).transpose(0, 2, 1)
                    self.levels[dst, :, r0 : r0 + rows] = lv
            elif buf is Buf.X:
                self.x[dst] = numerics.wrap(raw, cfg.act_bits)
            elif buf is Buf.R:
                self.r[dst] = numerics.wrap(raw, cfg.act_bits)
            else:
                q = raw.reshape(i.x_size, cfg.rows, len(layout.Q_FIELDS)).copy()
                q[..., 0] = numerics.wrap(q[..., 0], numerics.BIAS_BITS)
                q[..., 1] = numerics.wrap(q[..., 1], numerics.MULT_BITS)
                q[..., 2] &= (1 << numerics.SHIFT_BITS) - 1
                q[..., 3] = numerics.wrap(q[..., 3], numerics.MULT_BITS)
                self.q[dst] = q
        return Error.NONE

    def _store(self, i: isa.Insn) -> Error:
        cfg = self.config
        n = i.x_size * layout.entry_bytes(cfg, Entry.OUT)
        for y, at in enumerate(self._rows(i, Entry.OUT)):
            if isinstance(at, Error):
                return at
            src = self.out[i.sram + y * i.x_size : i.sram + (y + 1) * i.x_size]
            self.mem[at : at + n] = layout.pack(cfg, Entry.OUT, src)
        return Error.NONE

    def _walk(self, i: isa.Insn) -> tuple[np.ndarray, np.ndarray]:
        """The [m, k] X addresses of a GEMM's window walk relative to ``x_base``, and which of
        them lie inside the tile; memoised by the walk's shape (programs repeat a few)."""
        key = tuple(i.args[f] for f in _WALK_FIELDS)
        if key not in self._walks:
            if len(self._walks) >= _MEMO_WORDS:
                self._walks.clear()
            oy = np.arange(i.oh_count)[:, None, None, None, None]
            ox = np.arange(i.ow_count)[None, :, None, None, None]
            c = np.arange(i.c_count)[None, None, :, None, None]
            ki = np.arange(i.kh)[None, None, None, :, None]
            kj = np.arange(i.kw)[None, None, None, None, :]
            y = oy * i.stride_y + ki - i.pad_top
            x = ox * i.stride_x + kj - i.pad_left
            rel = c * i.c_stride + y * i.tile_w + x
            inside = (y >= 0) & (y < i.tile_h) & (x >= 0) & (x < i.tile_w)
            m, k = i.oh_count * i.ow_count, i.c_count * i.kh * i.kw
            valid = np.broadcast_to(inside, rel.shape).reshape(m, k)
            self._walks[key] = (rel.reshape(m, k), valid)
        return self._walks[key]

    def _window(self, i: isa.Insn, fill: int = 0) -> np.ndarray:
        """The [m, k, cols] inputs of a GEMM's window walk, ``fill`` outside the tile."""
        rel, valid = self._walk(i)
        xs = self.x[np.where(valid, rel + i.x_base, 0)]
        return np.where(valid[..., None], xs, fill)

    def _gemm(self, i: isa.Insn) -> None:
        """``numerics.dot`` of every row's decoded levels with X, as one exact matmul."""
        cfg = self.config
        m, k = i.oh_count * i.ow_count, i.c_count * i.kh * i.kw
        if i.max:
            s = self._window(i, -(1 << (cfg.acc_bits - 1))).max(axis=1)
        else:
            xs = self._window(i).reshape(m, k * cfg.cols).astype(np.float64)
            lv = self.levels[i.w_base : i.w_base + k].reshape(k * cfg.cols, cfg.rows)
            s = np.rint(xs @ lv).astype(np.int64)
        if not i.reset:
            s += self.acc[i.acc_base : i.acc_base + m]
        s = numerics.wrap(s, cfg.acc_bits)
        if i.final:
            q = self.q[i.q_base]
            if i.res:
                r = self.r[i.r_base : i.r_base + m]
                out = numerics.requant_residual(
                    s, q[:, 0], q[:, 1], q[:, 2], r, q[:, 3], i.lo, i.hi
                )
            else:
                out = numerics.requant(s, q[:, 0], q[:, 1], q[:, 2], i.lo, i.hi)
            self.out[i.o_base : i.o_base + m] = out
        else:
            self.acc[i.acc_base : i.acc_base + m] = s
