"""The ISA v2 core, unit by unit (Amaranth simulator) and whole (Verilator, tiny preset).

Units: the requant lane and the pipelined PE rows against ``arch.numerics``, the hardware check
against ``isa.check``, the burst generator against the AXI rules. Whole core: random race-free
token streams (``streamgen``) against the golden model with fixed and random DDR timing, the
performance counters, and every way a run ends (BAD_WINDOW, INSN_COUNT 0, check failures,
DEADLOCK, AXI_RESP per unit, AXI_TIMEOUT and the run after it).
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from streamgen import random_stream

from rmsmp.arch import AccelConfig, isa, layout, numerics
from rmsmp.arch.isa import Buf, Error, Opcode, Unit
from rmsmp.arch.layout import Entry
from rmsmp.arch.regs import Status
from rmsmp.hw.dma import BurstGen
from rmsmp.hw.fetch import Checker
from rmsmp.hw.pe import DotRow
from rmsmp.hw.requant import RequantLane
from rmsmp.sim.golden import GoldenDevice

TINY = AccelConfig.for_board("tiny")
SIZE = 1 << 16
RESULT_REGS = ("STATUS", "ERROR", "PC", "FAULT_UNIT")


def _simulate(dut, bench) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# --- units in the Amaranth simulator -------------------------------------------------------


@pytest.mark.parametrize("acc_bits", [24, 32, 46])
def test_requant_lane_is_numerics_requant(acc_bits: int) -> None:
    rng = np.random.default_rng(acc_bits)
    n = 600
    top = 2 ** (acc_bits - 1)  # configs allow acc_bits <= 46, so acc * 2^16 + bias fits int64
    acc = rng.integers(-top, top, n)
    acc[:200] = rng.integers(-5000, 5000, 200)
    acc[:4] = [-top, top - 1, 0, -1]
    bias = rng.integers(-(2**47), 2**47, n)
    bias[:300] = rng.integers(-(2**20), 2**20, 300)
    bias[4:6] = [-(2**47), 2**47 - 1]
    mult = rng.integers(-(2**31), 2**31, n)
    mult[:300] = rng.integers(2**30, 2**31, 300)
    mult[6:8] = [-(2**31), 2**31 - 1]
    shift = rng.integers(0, 64, n)
    shift[:300] = rng.integers(28, 52, 300)
    shift[8:12] = [0, 1, 62, 63]
    lo = rng.integers(-128, 1, n)
    hi = rng.integers(0, 128, n)
    lo[12], hi[12] = -128, 127
    want = [
        int(numerics.requant(np.array([a]), b, m, s, int(l_), int(h))[0])
        for a, b, m, s, l_, h in zip(acc, bias, mult, shift, lo, hi, strict=True)
    ]
    dut = RequantLane(acc_bits, 8)
    got = []

    async def bench(ctx):
        for i in range(n + dut.LATENCY):
            if i < n:
                for sig, v in (
                    (dut.acc, acc),
                    (dut.bias, bias),
                    (dut.mult, mult),
                    (dut.shift, shift),
                    (dut.lo, lo),
                    (dut.hi, hi),
                ):
                    ctx.set(sig, int(v[i]))
            await ctx.tick()
            if i >= dut.LATENCY - 1:
                got.append(ctx.get(dut.out))

    _simulate(dut, bench)
    assert got[:n] == want


@pytest.mark.parametrize("fmt", sorted(numerics.FORMATS))
def test_pipelined_dot_row_is_numerics_dot(fmt: str) -> None:
    f = numerics.weight_format(fmt)
    cols, n = 20, 200
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 1 << f.bits, (n, cols))
    x = rng.integers(-128, 128, (n, cols))
    x[0], codes[0] = -128, (1 << f.bits) - 1
    dut = DotRow(f, cols, 8, pipelined=True)
    got = []

    def pack(v, bits):
        return sum((int(e) & ((1 << bits) - 1)) << (i * bits) for i, e in enumerate(v))

    async def bench(ctx):
        for i in range(n + dut.latency):
            if i < n:
                ctx.set(dut.w, pack(codes[i], f.bits))
                ctx.set(dut.x, pack(x[i], 8))
            await ctx.tick()
            if i >= dut.latency - 1:
                got.append(ctx.get(dut.dot))

    _simulate(dut, bench)
    assert got[:n] == numerics.dot(f, codes, x).tolist()


def _random_word(rng: np.random.Generator, cfg: AccelConfig) -> int:
    """A word with a random opcode (illegal ones too) and fields near their limits."""
    op = int(rng.integers(0, 16))
    word = op
    if op not in tuple(Opcode):
        return word | int(rng.integers(0, 1 << 60)) << 4
    for f in isa.layout(cfg)[Opcode(op)].values():
        top = (1 << f.width) - 1
        v = int(rng.choice([0, 1, 2, 3, top, top - 1, rng.integers(0, top + 1)]))
        if f.name.startswith(("pop", "push")):
            v = int(rng.random() < 0.2)
        word |= v << f.offset
    return word


@pytest.mark.parametrize("board", ["tiny", "pynq-z1"])
def test_checker_is_isa_check(board: str) -> None:
    cfg = AccelConfig.for_board(board)
    rng = np.random.default_rng(2)
    cases = []
    for _ in range(400):
        word = _random_word(rng, cfg)
        wb = int(rng.choice([0, 24, 1 << 12, 1 << 20, (1 << 32) - 1, rng.integers(0, 1 << 32)]))
        cases.append((word, wb, isa.check(cfg, isa.decode(cfg, word), wb)))
    dut = Checker(cfg)
    got = []

    async def bench(ctx):
        for word, wb, _ in cases:
            ctx.set(dut.insn, word)
            ctx.set(dut.window_bytes, wb)
            await ctx.tick().repeat(Checker.LATENCY)
            got.append(Error(ctx.get(dut.err)))

    _simulate(dut, bench)
    assert got == [c[2] for c in cases]
    assert {Error.NONE, Error.BAD_OPERAND, Error.DMA_WINDOW, Error.ILLEGAL_OPCODE} <= set(got)


def test_burst_gen_rows_back_to_back_within_pages() -> None:
    cfg = TINY
    dut = BurstGen(cfg)
    addr, rows, row_beats, stride = 0x1000_0F80, 3, 37, 4096 + 64
    bursts = []

    async def bench(ctx):
        ctx.set(dut.start, 1)
        ctx.set(dut.addr, addr)
        ctx.set(dut.rows, rows)
        ctx.set(dut.row_beats, row_beats)
        ctx.set(dut.row_stride, stride)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.req.ready, 1)
        while True:
            if not ctx.get(dut.busy):
                break
            assert ctx.get(dut.req.valid), "a request every cycle while busy"
            p = ctx.get(dut.req.payload)
            bursts.append((p.addr, p.beats))
            await ctx.tick()

    _simulate(dut, bench)
    beats = {}
    for a, n in bursts:
        assert 1 <= n <= cfg.max_burst
        assert a % 4096 + n * 8 <= 4096, f"burst at {a:#x} of {n} beats crosses 4 KiB"
        for b in range(n):
            beats[a + 8 * b] = beats.get(a + 8 * b, 0) + 1
    want = {addr + y * stride + 8 * b: 1 for y in range(rows) for b in range(row_beats)}
    assert beats == want


# --- the whole core under Verilator ----------------------------------------------------------


@pytest.fixture
def rtl():
    """A fresh device (on-chip buffers start zeroed, like a fresh golden model's)."""
    from rmsmp.sim.verilator import RtlDevice

    dev = RtlDevice(TINY, SIZE)
    yield dev
    dev.close()


def _start(dev, count: int, *, base=None, limit=None, addr: int = 0) -> None:
    base = dev.window_base if base is None else base
    dev.write_reg("WINDOW_BASE", base)
    dev.write_reg("WINDOW_LIMIT", base + dev.window_size if limit is None else limit)
    dev.write_reg("INSN_ADDR", addr)
    dev.write_reg("INSN_COUNT", count)
    dev.write_reg("CTRL", 1)


def _run(dev, count: int, cycles: int = 200_000, **kw) -> dict[str, int]:
    _start(dev, count, **kw)
    dev.wait(cycles)
    return {r: dev.read_reg(r) for r in RESULT_REGS}


def _expected_counters(cfg: AccelConfig, words: list[int]) -> tuple[int, int]:
    """(MAC_CYCLES, DMA_BEATS) of a run that executes every instruction of ``words``."""
    macs = beats = 0
    for w in words:
        i = isa.decode(cfg, w)
        beats += cfg.insn_bits // cfg.axi_data_bits
        if i.op is Opcode.GEMM:
            macs += i.oh_count * i.ow_count * i.c_count * i.kh * i.kw
        elif i.op is not Opcode.SYNC:
            kind = Entry.OUT if i.op is Opcode.STORE else layout.BUF_ENTRY[Buf(i.buf)]
            beats += i.y_size * i.x_size * layout.entry_beats(cfg, kind)
    return macs, beats


@pytest.mark.parametrize("ddr", ["fixed", "random"])
def test_random_streams_equal_golden(rtl, ddr: str) -> None:
    rng = np.random.default_rng(7 if ddr == "fixed" else 8)
    gold = GoldenDevice(TINY, SIZE, window_base=rtl.window_base)
    for trial in range(60):
        rtl.set_ddr_mode(random=ddr == "random", seed=trial, min_latency=1, max_latency=80)
        fault = str(
            rng.choice(["none", "none", "drop_push", "extra_pop", "illegal", "bad_operand"])
        )
        s = random_stream(rng, TINY, SIZE, 30, fault)
        for dev in (gold, rtl):
            dev.write(0, s.image)
        want = _run(gold, len(s.words))
        got = _run(rtl, len(s.words))
        assert got == want, f"trial {trial} ({s.fault})"
        assert rtl.read(0, SIZE) == gold.read(0, SIZE), f"trial {trial} ({s.fault}): memory"
        if s.fault == "none":
            macs, beats = _expected_counters(TINY, s.words)
            assert rtl.read_reg("MAC_CYCLES") == macs
            assert rtl.read_reg("DMA_BEATS") == beats
            assert rtl.read_reg("CYCLES_LO") >= macs
            assert 0 < rtl.read_reg("LOAD_CYCLES") < rtl.read_reg("CYCLES_LO")
    assert rtl.protocol_violations() == []


def test_run_start_errors(rtl) -> None:
    base = rtl.window_base
    bad = {"STATUS": Status.DONE | Status.ERROR, "ERROR": Error.BAD_WINDOW, "PC": 0}
    for kw in (
        dict(base=base + 8),
        dict(limit=base - 8),
        dict(addr=4),
    ):
        got = _run(rtl, 3, 1000, **kw)
        assert got == {**bad, "FAULT_UNIT": Unit.FETCH}, kw
    assert _run(rtl, 0, 1000) == {"STATUS": Status.DONE, "ERROR": 0, "PC": 0, "FAULT_UNIT": 0}


def _load_program(n_loads: int) -> list[int]:
    """``n_loads`` LOADs of 16 W entries (several bursts each), then a STORE."""
    words = [
        isa.encode(TINY, Opcode.LOAD, buf=Buf.W, sram=0, dram=512, y_size=2, x_size=8, x_stride=9)
        for _ in range(n_loads)
    ]
    words.append(isa.encode(TINY, Opcode.STORE, sram=0, dram=4096, y_size=2, x_size=3, x_stride=4))
    return words


def test_error_responses_stop_at_the_faulting_instruction(rtl) -> None:
    words = _load_program(1)
    rtl.write(0, isa.to_bytes(TINY, words))
    rtl.set_ddr_mode(random=False)
    rtl.inject_error("read", 1)  # read 0 fetches the LOAD, read 1 is its first burst
    got = _run(rtl, 1)
    assert got == {"STATUS": 6, "ERROR": Error.AXI_RESP, "PC": 0, "FAULT_UNIT": Unit.LOAD}
    rtl.inject_error("write", 0)
    got = _run(rtl, 2)
    assert got == {"STATUS": 6, "ERROR": Error.AXI_RESP, "PC": 1, "FAULT_UNIT": Unit.STORE}
    rtl.inject_error("read", 0)
    got = _run(rtl, 2)
    assert got == {"STATUS": 6, "ERROR": Error.AXI_RESP, "PC": 0, "FAULT_UNIT": Unit.FETCH}
    assert _run(rtl, 2) == {"STATUS": Status.DONE, "ERROR": 0, "PC": 2, "FAULT_UNIT": 0}
    assert rtl.protocol_violations() == []


def test_stalled_bus_times_out_and_the_next_run_works(rtl) -> None:
    words = _load_program(4)
    rtl.write(0, isa.to_bytes(TINY, words))
    rtl.set_ddr_mode(random=False)
    _start(rtl, len(words))
    rtl.set_stall(True)
    rtl.wait(TINY.watchdog_cycles + 1000)
    got = {r: rtl.read_reg(r) for r in RESULT_REGS}
    assert got["STATUS"] == Status.DONE | Status.ERROR
    assert got["ERROR"] == Error.AXI_TIMEOUT
    assert got["FAULT_UNIT"] in (Unit.FETCH, Unit.LOAD)
    # A run started while the abandoned transfer still hangs ends too (it never waits forever).
    _start(rtl, len(words))
    rtl.wait(TINY.watchdog_cycles + 1000)
    assert rtl.read_reg("ERROR") == Error.AXI_TIMEOUT
    rtl.set_stall(False)
    done = {"STATUS": Status.DONE, "ERROR": 0, "PC": len(words), "FAULT_UNIT": 0}
    assert _run(rtl, len(words)) == done
    assert rtl.protocol_violations() == []


def test_full_token_counter_blocks_the_producer(rtl) -> None:
    """``token_depth`` + 1 LOADs push to compute, which never pops: the last one waits to push
    forever, so the run ends in DEADLOCK with everything dispatched, as the golden model says."""
    load = dict(buf=Buf.X, sram=0, dram=512, y_size=1, x_size=2, x_stride=2, push_next=1)
    words = [isa.encode(TINY, Opcode.LOAD, **load) for _ in range(TINY.token_depth + 1)]
    gold = GoldenDevice(TINY, SIZE, window_base=rtl.window_base)
    for dev in (gold, rtl):
        dev.write(0, isa.to_bytes(TINY, words))
    want = _run(gold, len(words))
    assert want["ERROR"] == Error.DEADLOCK and want["PC"] == len(words)
    assert _run(rtl, len(words)) == want
    # One GEMM-side SYNC that pops a token lets the same loads finish.
    words.insert(1, isa.encode(TINY, Opcode.SYNC, pop_prev=1))
    for dev in (gold, rtl):
        dev.write(0, isa.to_bytes(TINY, words))
    assert (
        _run(rtl, len(words))
        == _run(gold, len(words))
        == {
            "STATUS": Status.DONE,
            "ERROR": 0,
            "PC": len(words),
            "FAULT_UNIT": 0,
        }
    )
