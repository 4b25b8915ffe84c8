"""RTL (Verilator) against the golden model on random instruction streams, and its error paths."""

from __future__ import annotations

import numpy as np
import pytest
from graphgen import gemm_word

from rmsmp.arch import AccelConfig, isa, layout, numerics
from rmsmp.arch.isa import Buf, Error, Opcode
from rmsmp.arch.layout import Entry
from rmsmp.arch.regs import Status
from rmsmp.host.device import DeviceTimeoutError
from rmsmp.sim.golden import GoldenDevice
from rmsmp.sim.verilator import RtlDevice

SIZE = 1 << 18
CFG = AccelConfig.for_board("tiny")


@pytest.fixture
def rtl() -> RtlDevice:
    dev = RtlDevice(CFG, SIZE)
    yield dev
    dev.close()


def _random_buffers(rng: np.random.Generator) -> dict[str, tuple[Entry, np.ndarray]]:
    fmts = [numerics.weight_format(f) for f in layout.row_formats(CFG)]
    w = np.zeros((CFG.w_depth, CFG.rows, CFG.cols), np.int64)
    for r, f in enumerate(fmts):
        w[:, r, :] = rng.integers(0, 1 << f.bits, size=(CFG.w_depth, CFG.cols))
    q = np.zeros((CFG.q_depth, CFG.rows, 3), np.int64)
    q[..., 0] = rng.integers(-(2**20), 2**20, q.shape[:2])
    for idx in np.ndindex(q.shape[:2]):
        q[idx][1:] = numerics.requant_multiplier(float(rng.uniform(1e-4, 0.2)))
    x = rng.integers(-128, 128, (CFG.x_depth, CFG.cols))
    return {
        "w": (Entry.W, w.reshape(CFG.w_depth, -1)),
        "x": (Entry.X, x),
        "q": (Entry.Q, q.reshape(CFG.q_depth, -1)),
    }


def _random_program(rng: np.random.Generator, offs: dict[str, int], out_off: int) -> list[int]:
    c = CFG
    prog = [
        isa.encode(c, Opcode.LOAD, buf=b, sram=0, dram=offs[k] // 8, count=d)
        for b, k, d in ((Buf.W, "w", c.w_depth), (Buf.X, "x", c.x_depth), (Buf.Q, "q", c.q_depth))
    ]
    out_beats = layout.entry_beats(c, Entry.OUT)
    for t in range(8):
        mc = int(rng.integers(1, min(c.acc_depth, c.out_depth) + 1))
        kc = int(rng.integers(1, min(c.w_depth, c.x_depth // mc) + 1))
        parts = int(rng.integers(1, 4))
        acc_base = int(rng.integers(0, c.acc_depth - mc + 1))
        for p in range(parts):
            prog.append(
                isa.encode(
                    c,
                    Opcode.GEMM,
                    reset=int(p == 0),
                    final=int(p == parts - 1),
                    w_base=int(rng.integers(0, c.w_depth - kc + 1)),
                    x_base=int(rng.integers(0, c.x_depth - mc * kc + 1)),
                    acc_base=acc_base,
                    o_base=int(rng.integers(0, c.out_depth - mc + 1)),
                    q_base=int(rng.integers(0, c.q_depth)),
                    m_count=mc,
                    k_count=kc,
                    lo=int(rng.choice([0, -128, -8])),
                    hi=int(rng.choice([15, 127, 7])),
                )
            )
        prog.append(
            isa.encode(
                c,
                Opcode.STORE,
                sram=0,
                dram=out_off // 8 + t * c.out_depth * out_beats,
                count=c.out_depth,
            )
        )
    return prog


def _run(
    dev,
    prog: list[int],
    blobs: dict[str, bytes],
    offs: dict[str, int],
    insn_addr: int = 0,
    limit: int = SIZE,
) -> tuple[int, int, int]:
    dev.write(insn_addr, isa.to_bytes(CFG, prog))
    for k, b in blobs.items():
        dev.write(offs[k], b)
    dev.write_reg("WINDOW_BASE", dev.window_base)
    dev.write_reg("WINDOW_LIMIT", dev.window_base + limit)
    dev.write_reg("INSN_ADDR", insn_addr)
    dev.write_reg("INSN_COUNT", len(prog))
    dev.write_reg("CTRL", 1)
    dev.wait(2_000_000)
    return dev.read_reg("STATUS"), dev.read_reg("ERROR"), dev.read_reg("PC")


@pytest.mark.parametrize("seed", range(12))
def test_random_streams_match_golden(rtl: RtlDevice, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bufs = _random_buffers(rng)
    blobs = {k: layout.pack(CFG, kind, v) for k, (kind, v) in bufs.items()}
    offs, off = {}, 4096
    for k, b in blobs.items():
        offs[k] = off
        off += -(-len(b) // 64) * 64
    prog = _random_program(rng, offs, off)
    gold = GoldenDevice(CFG, SIZE)
    g = _run(gold, prog, blobs, offs)
    r = _run(rtl, prog, blobs, offs)
    assert g == r == (int(Status.DONE), 0, len(prog))
    out_g = np.frombuffer(gold.read(off, SIZE - off), np.uint8)
    out_r = np.frombuffer(rtl.read(off, SIZE - off), np.uint8)
    assert np.count_nonzero(out_g) > 0
    assert np.array_equal(out_g, out_r)
    assert rtl.read_reg("MAC_CYCLES") > 0 and rtl.read_reg("CYCLES_LO") > rtl.read_reg("MAC_CYCLES")


def _gemm(**kw: int) -> int:
    return gemm_word(CFG, **kw)


@pytest.mark.parametrize(
    ("prog", "limit", "error", "pc"),
    [
        ([_gemm(), 0], SIZE, Error.ILLEGAL_OPCODE, 1),
        ([_gemm(k_count=CFG.w_depth, w_base=1)], SIZE, Error.BAD_OPERAND, 0),
        (
            [_gemm(m_count=CFG.out_depth, k_count=CFG.w_depth, reset=0, final=1)],
            SIZE,
            Error.BAD_OPERAND,
            0,
        ),
        ([_gemm(o_base=1, m_count=CFG.out_depth)], SIZE, Error.BAD_OPERAND, 0),
        ([_gemm(lo=5, hi=4)], SIZE, Error.BAD_OPERAND, 0),
        (
            [_gemm(reset=0, final=0, acc_base=CFG.acc_depth - 1, m_count=2)],
            SIZE,
            Error.BAD_OPERAND,
            0,
        ),
        (
            [isa.encode(CFG, Opcode.LOAD, buf=3, sram=0, dram=0, count=1)],
            SIZE,
            Error.BAD_OPERAND,
            0,
        ),
        (
            [isa.encode(CFG, Opcode.LOAD, buf=Buf.X, sram=0, dram=SIZE // 8, count=1)],
            SIZE,
            Error.DMA_WINDOW,
            0,
        ),
        (
            [isa.encode(CFG, Opcode.STORE, sram=0, dram=4096 // 8, count=1)],
            4096,
            Error.DMA_WINDOW,
            0,
        ),
        ([_gemm(), _gemm()], 16, Error.DMA_WINDOW, 1),
    ],
)
def test_errors_match_golden(
    rtl: RtlDevice, prog: list[int], limit: int, error: Error, pc: int
) -> None:
    gold = GoldenDevice(CFG, SIZE)
    g = _run(gold, prog, {}, {}, limit=limit)
    r = _run(rtl, prog, {}, {}, limit=limit)
    assert g == r == (int(Status.DONE | Status.ERROR), int(error), pc)


def test_illegal_first_word_stops(rtl: RtlDevice) -> None:
    r = _run(rtl, [0], {}, {})
    assert r == (int(Status.DONE | Status.ERROR), int(Error.ILLEGAL_OPCODE), 0)


def test_hung_memory_times_out() -> None:
    dev = RtlDevice(CFG, 1 << 16)
    try:
        dev.write(0, isa.to_bytes(CFG, [_gemm()]))
        dev.write_reg("WINDOW_BASE", dev.window_base)
        dev.write_reg("WINDOW_LIMIT", dev.window_base + (1 << 16))
        dev.write_reg("INSN_ADDR", 0)
        dev.write_reg("INSN_COUNT", 1)
        dev.set_stall(True)
        dev.write_reg("CTRL", 1)
        with pytest.raises(DeviceTimeoutError, match="did not finish within 5000 cycles"):
            dev.wait(5000)
        assert dev.read_reg("STATUS") & Status.BUSY
    finally:
        dev.close()


def test_identity_registers(rtl: RtlDevice) -> None:
    from rmsmp.arch.regs import MAGIC

    assert rtl.read_reg("MAGIC") == MAGIC
    assert (rtl.read_reg("CONFIG_HASH_HI") << 32 | rtl.read_reg("CONFIG_HASH_LO")) == CFG.hash_int
