"""RTL (Verilator) against the golden model: random ISA v2 streams with tokens, under fixed and
random DDR timing with the AXI protocol checker on, and the error paths."""

from __future__ import annotations

import numpy as np
import pytest
from graphgen import gemm_word
from streamgen import random_stream

from rmsmp.arch import AccelConfig, isa
from rmsmp.arch.isa import Error, Opcode, Unit
from rmsmp.arch.regs import MAGIC, Status
from rmsmp.sim.golden import GoldenDevice
from rmsmp.sim.verilator import RtlDevice

SIZE = 1 << 16
CFG = AccelConfig.for_board("tiny")
FAULTS = ("none", "none", "none", "drop_push", "extra_pop", "illegal", "bad_operand")
STREAMS = 1000


@pytest.fixture(scope="module")
def rtl() -> RtlDevice:
    dev = RtlDevice(CFG, SIZE)
    yield dev
    dev.close()


def _run(
    dev, image: bytes, n: int, limit: int = SIZE, base: int | None = None, insn_addr: int = 0
) -> tuple:
    dev.write(0, image)
    dev.write_reg("WINDOW_BASE", dev.window_base if base is None else base)
    dev.write_reg("WINDOW_LIMIT", dev.window_base + limit)
    dev.write_reg("INSN_ADDR", insn_addr)
    dev.write_reg("INSN_COUNT", n)
    dev.write_reg("CTRL", 1)
    dev.wait(2_000_000)
    return tuple(dev.read_reg(r) for r in ("STATUS", "ERROR", "PC", "FAULT_UNIT"))


def test_random_streams_match_golden(rtl: RtlDevice) -> None:
    """1,000 random token streams: 0 hangs, 0 protocol violations, RTL == golden everywhere.

    Every third stream runs with random DDR latency (20-100 cycles) and back-pressure. The
    window is the whole simulated memory, so an access outside it would be a DMA_WINDOW error
    that golden reports too.
    """
    gold = GoldenDevice(CFG, SIZE)
    seen: dict[tuple[str, int], int] = {}
    for seed in range(STREAMS):
        rng = np.random.default_rng(seed)
        s = random_stream(rng, CFG, SIZE, int(rng.integers(4, 40)), FAULTS[seed % len(FAULTS)])
        rtl.set_ddr_mode(random=seed % 3 == 0, seed=seed, backpressure=0.3)
        r = _run(rtl, s.image, len(s.words))
        g = _run(gold, s.image, len(s.words))
        assert r == g, f"stream {seed} ({s.fault}): RTL {r} != golden {g}"
        assert rtl.read(0, SIZE) == gold.read(0, SIZE), f"stream {seed}: memory differs"
        assert rtl.protocol_violations() == [], f"stream {seed}"
        key = (s.fault, g[1])
        seen[key] = seen.get(key, 0) + 1
    assert seen[("none", int(Error.NONE))] > 300
    assert seen[("drop_push", int(Error.DEADLOCK))] > 50
    assert seen[("illegal", int(Error.ILLEGAL_OPCODE))] > 50
    assert seen[("bad_operand", int(Error.BAD_OPERAND))] > 50


def _gemm(**kw: int) -> int:
    return gemm_word(CFG, **kw)


def _load(**kw: int) -> int:
    a = dict(buf=0, sram=0, dram=0, y_size=1, x_size=1, x_stride=1)
    return isa.encode(CFG, Opcode.LOAD, **{**a, **kw})


@pytest.mark.parametrize(
    ("prog", "limit", "error", "pc"),
    [
        ([_gemm(), 0], SIZE, Error.ILLEGAL_OPCODE, 1),
        ([_gemm(c_count=CFG.w_depth, w_base=1)], SIZE, Error.BAD_OPERAND, 0),
        ([_gemm(o_base=1, ow_count=CFG.out_depth)], SIZE, Error.BAD_OPERAND, 0),
        ([_gemm(lo=5, hi=4)], SIZE, Error.BAD_OPERAND, 0),
        ([_gemm(tile_h=CFG.x_depth, tile_w=2)], SIZE, Error.BAD_OPERAND, 0),
        ([_load(buf=3, sram=CFG.out_depth - 1, x_size=2)], SIZE, Error.BAD_OPERAND, 0),
        ([_gemm(max=1, final=0)], SIZE, Error.BAD_OPERAND, 0),
        ([_gemm(res=1, r_base=CFG.out_depth - 1, ow_count=2)], SIZE, Error.BAD_OPERAND, 0),
        ([_load(pop_prev=1)], SIZE, Error.BAD_OPERAND, 0),
        ([_load(buf=1, dram=SIZE // 8)], SIZE, Error.DMA_WINDOW, 0),
        ([_load(buf=1, y_size=2, x_size=1, x_stride=SIZE // 8)], SIZE, Error.DMA_WINDOW, 0),
        ([_gemm(), _gemm()], 32, Error.DMA_WINDOW, 1),
        ([_gemm(pop_prev=1)], SIZE, Error.DEADLOCK, 1),
    ],
)
def test_errors_match_golden(
    rtl: RtlDevice, prog: list[int], limit: int, error: Error, pc: int
) -> None:
    rtl.set_ddr_mode(random=False)
    image = isa.to_bytes(CFG, prog)
    g = _run(GoldenDevice(CFG, SIZE), image, len(prog), limit)
    r = _run(rtl, image, len(prog), limit)
    assert g == r == (int(Status.DONE | Status.ERROR), int(error), pc, int(Unit.FETCH))


def test_unaligned_window_is_refused(rtl: RtlDevice) -> None:
    image = isa.to_bytes(CFG, [_gemm()])
    base = rtl.window_base + 8
    g = GoldenDevice(CFG, SIZE)
    want = (int(Status.DONE | Status.ERROR), int(Error.BAD_WINDOW), 0, int(Unit.FETCH))
    assert _run(g, image, 1, base=g.window_base + 8) == want
    assert _run(rtl, image, 1, base=base) == want
    assert _run(g, image, 1, insn_addr=4) == want  # instructions must be beat-aligned
    assert _run(rtl, image, 1, insn_addr=4) == want


def test_axi_error_responses(rtl: RtlDevice) -> None:
    """An SLVERR on a LOAD's read or a STORE's write stops the run with AXI_RESP in that unit."""
    rtl.set_ddr_mode(random=False)
    store = isa.encode(CFG, Opcode.STORE, sram=0, dram=4096, y_size=1, x_size=1, x_stride=1)
    for kind, word, unit in (
        ("read", _load(buf=1, dram=4096), Unit.LOAD),
        ("write", store, Unit.STORE),
    ):
        rtl.inject_error(kind, nth=1 if kind == "read" else 0)  # burst 0 of a read is the fetch
        status, err, pc, fault = _run(rtl, isa.to_bytes(CFG, [word]), 1)
        assert (status, err, pc, fault) == (
            int(Status.DONE | Status.ERROR),
            int(Error.AXI_RESP),
            0,
            int(unit),
        )


def test_stalled_memory_trips_the_watchdog() -> None:
    """A slave that never answers ends the run with AXI_TIMEOUT within the watchdog, no hang."""
    dev = RtlDevice(CFG, SIZE)
    try:
        dev.write(0, isa.to_bytes(CFG, [_gemm()]))
        dev.write_reg("WINDOW_BASE", dev.window_base)
        dev.write_reg("WINDOW_LIMIT", dev.window_base + SIZE)
        dev.write_reg("INSN_ADDR", 0)
        dev.write_reg("INSN_COUNT", 1)
        dev.set_stall(True)
        dev.write_reg("CTRL", 1)
        dev.wait(CFG.watchdog_cycles + 1000)
        got = tuple(dev.read_reg(r) for r in ("STATUS", "ERROR", "PC", "FAULT_UNIT"))
        assert got == (int(Status.DONE | Status.ERROR), int(Error.AXI_TIMEOUT), 0, int(Unit.FETCH))
    finally:
        dev.close()


def test_identity_registers(rtl: RtlDevice) -> None:
    assert rtl.read_reg("MAGIC") == MAGIC
    assert (rtl.read_reg("CONFIG_HASH_HI") << 32 | rtl.read_reg("CONFIG_HASH_LO")) == CFG.hash_int
