"""The ISA v2 core, unit by unit (Amaranth simulator) and whole (Verilator, tiny preset).

Units: the requant lane and the pipelined PE rows against ``arch.numerics``, the hardware check
against ``isa.check``, the burst generator against the AXI rules. Whole core: random race-free
token streams (``streamgen``) against the golden model with fixed and random DDR timing, the
performance counters, and every way a run ends (BAD_WINDOW, INSN_COUNT 0, check failures,
DEADLOCK, AXI_RESP per unit, AXI_TIMEOUT and the run after it).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator
from graphgen import GEMM_DEFAULTS
from streamgen import random_stream

from rmsmp.arch import AccelConfig, isa, layout, numerics
from rmsmp.arch.isa import Buf, Error, Opcode, Unit
from rmsmp.arch.layout import Entry
from rmsmp.arch.numerics import BIAS_FRAC_BITS
from rmsmp.arch.regs import Status
from rmsmp.hw.dma import BurstGen
from rmsmp.hw.fetch import Checker
from rmsmp.hw.pe import DotRow
from rmsmp.hw.requant import RequantLane
from rmsmp.sim import cycles
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


def _lane_inputs(rng: np.random.Generator, acc_bits: int, n: int) -> dict[str, np.ndarray]:
    """Random requant-lane inputs, many of them in the ranges layers use, the extremes first."""
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
    res_mult = rng.integers(-(2**31), 2**31, n)
    res_mult[:300] = rng.integers(2**28, 2**31, 300)
    res_mult[12:16] = [-(2**31), 2**31 - 1, -(2**31), 2**31 - 1]
    res = rng.integers(-128, 128, n)
    res[12:16] = [-128, -128, 127, 127]
    # Rows 300..: scaled as layers are (both terms within a few hundred), so most land in range.
    k = slice(300, n)
    shift[k] = rng.integers(44, 49, n - 300)
    mult[k] = rng.integers(2**26, 2**31, n - 300)
    res_mult[k] = rng.integers(2 ** (shift[k] - 18), np.minimum(2 ** (shift[k] - 16), 2**31))
    reach = 200 * 2 ** (shift[k] - BIAS_FRAC_BITS) // mult[k]
    acc[k] = rng.integers(-reach, reach + 1)
    bias[k] = rng.integers(-(2**16), 2**16, n - 300)
    lo = rng.integers(-128, 1, n)
    hi = rng.integers(0, 128, n)
    lo[16], hi[16] = -128, 127
    return dict(
        acc=acc, bias=bias, mult=mult, shift=shift, res=res, res_mult=res_mult, lo=lo, hi=hi
    )


def _lane_outputs(acc_bits: int, inputs: dict[str, np.ndarray]) -> list[int]:
    """RequantLane's output for every row of ``inputs``, one input per cycle."""
    dut = RequantLane(acc_bits, 8)
    n = len(inputs["acc"])
    got = []

    async def bench(ctx):
        for i in range(n + dut.LATENCY):
            if i < n:
                for name, v in inputs.items():
                    ctx.set(getattr(dut, name), int(v[i]))
            await ctx.tick()
            if i >= dut.LATENCY - 1:
                got.append(ctx.get(dut.out))

    _simulate(dut, bench)
    return got[:n]


@pytest.mark.parametrize("acc_bits", [24, 32, 46])
def test_requant_lane_is_numerics_requant(acc_bits: int) -> None:
    """With ``res`` 0 the residual term is exactly 0, whatever ``res_mult`` holds."""
    a = _lane_inputs(np.random.default_rng(acc_bits), acc_bits, 600)
    a["res"][:] = 0
    want = numerics.requant(a["acc"], a["bias"], a["mult"], a["shift"], a["lo"], a["hi"])
    assert _lane_outputs(acc_bits, a) == want.tolist()


@pytest.mark.parametrize("acc_bits", [24, 32, 46])
def test_requant_lane_is_numerics_requant_residual(acc_bits: int) -> None:
    a = _lane_inputs(np.random.default_rng(100 + acc_bits), acc_bits, 600)
    want = numerics.requant_residual(
        a["acc"], a["bias"], a["mult"], a["shift"], a["res"], a["res_mult"], a["lo"], a["hi"]
    )
    assert _lane_outputs(acc_bits, a) == want.tolist()


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


def _field_value(rng: np.random.Generator, f: isa.Field) -> int:
    """A random value of field ``f``, often at or near its limits."""
    top = (1 << f.width) - 1
    if f.name.startswith(("pop", "push")):
        return int(rng.random() < 0.2)
    return int(rng.choice([0, 1, 2, 3, top, top - 1, rng.integers(0, top + 1)])) & top


def _random_word(rng: np.random.Generator, cfg: AccelConfig) -> int:
    """A word with a random opcode (illegal ones too) and fields near their limits, or, half the
    time, a legal instruction with one to three fields changed (it probes each condition)."""
    lay = isa.layout(cfg)
    if rng.random() < 0.5:
        op = Opcode(int(rng.choice([Opcode.LOAD, Opcode.STORE, Opcode.GEMM, Opcode.GEMM])))
        args = dict(buf=int(rng.integers(0, 4)), sram=0, dram=0, y_size=1, x_size=1, x_stride=1)
        if op is Opcode.GEMM:
            args = dict(
                GEMM_DEFAULTS,
                reset=int(rng.integers(0, 2)),
                final=int(rng.integers(0, 2)),
                max=int(rng.integers(0, 2)),
                res=int(rng.integers(0, 2)),
                r_base=cfg.out_depth - int(rng.integers(1, 4)),
                ow_count=int(rng.integers(1, 4)),
            )
        word = isa.encode(cfg, op, **{k: v for k, v in args.items() if k in lay[op]})
        for name in rng.choice(sorted(lay[op]), size=int(rng.integers(1, 4))):
            f = lay[op][str(name)]
            word &= ~(((1 << f.width) - 1) << f.offset)
            word |= _field_value(rng, f) << f.offset
        return word
    op = int(rng.integers(0, 16))
    word = op
    if op not in tuple(Opcode):
        return word | int(rng.integers(0, 1 << 60)) << 4
    for f in lay[Opcode(op)].values():
        word |= _field_value(rng, f) << f.offset
    return word


@pytest.mark.parametrize("board", ["tiny", "pynq-z1"])
def test_checker_is_isa_check(board: str) -> None:
    """Every condition of ``isa.check`` is met and failed somewhere, the R buffer and the max
    and res modes included."""
    cfg = AccelConfig.for_board(board)
    rng = np.random.default_rng(2)
    cases = []
    for _ in range(1500):
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
    seen = set()
    for word, _, err in cases:
        insn = isa.decode(cfg, word)
        if insn is not None and insn.op is Opcode.GEMM:
            seen |= {(mode, err) for mode in ("max", "res") if insn.args[mode]}
        elif insn is not None and insn.op is Opcode.LOAD and insn.buf == Buf.R:
            seen.add(("R", err))
    for what in ("max", "res", "R"):
        assert {(what, Error.NONE), (what, Error.BAD_OPERAND)} <= seen, what


@pytest.mark.parametrize("max_burst", [1, 4, 16])
def test_burst_gen_splits_as_the_cycle_model(max_burst: int) -> None:
    """Random 2-D transfers (starts near page ends, rows shorter and longer than a burst), the
    port ready one cycle in three at random: the bursts are ``sim.cycles.bursts``, in order."""
    cfg = replace(TINY, max_burst=max_burst)
    rng = np.random.default_rng(max_burst)
    dut = BurstGen(cfg)
    cases = [(0x1000_0F80, 3, 37, 4096 + 64), (0xFF8, 1, 1, 0), (0x7F0, 2, 2, 8)]
    for _ in range(6):
        addr = int(rng.integers(0, 1 << 20)) * 8
        cases.append(
            (addr, int(rng.integers(1, 4)), int(rng.integers(1, 70)), 8 * int(rng.integers(0, 600)))
        )
    got: list[list[tuple[int, int]]] = []

    async def bench(ctx):
        for addr, rows, row_beats, stride in cases:
            ctx.set(dut.start, 1)
            ctx.set(dut.addr, addr)
            ctx.set(dut.rows, rows)
            ctx.set(dut.row_beats, row_beats)
            ctx.set(dut.row_stride, stride)
            await ctx.tick()
            ctx.set(dut.start, 0)
            bursts = []
            while ctx.get(dut.busy):
                assert ctx.get(dut.req.valid), "a request every cycle while busy"
                ready = int(rng.integers(3) != 0)
                ctx.set(dut.req.ready, ready)
                if ready:
                    p = ctx.get(dut.req.payload)
                    bursts.append((p.addr, p.beats))
                await ctx.tick()
            ctx.set(dut.req.ready, 0)
            got.append(bursts)

    _simulate(dut, bench)
    for (addr, rows, row_beats, stride), bursts in zip(cases, got, strict=True):
        assert [n for _, n in bursts] == cycles.bursts(cfg, addr, rows, row_beats, stride)
        for a, n in bursts:
            assert 1 <= n <= cfg.max_burst
            assert a % 4096 + n * 8 <= 4096, f"burst at {a:#x} of {n} beats crosses 4 KiB"
        beats = [a + 8 * b for a, n in bursts for b in range(n)]
        assert beats == [addr + y * stride + 8 * b for y in range(rows) for b in range(row_beats)]


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


POOL_CASES = [
    # kh, kw, stride, pad, oh, ow, tile_h, tile_w, res, lo, hi
    (3, 3, 2, 1, 2, 3, 5, 6, 0, -128, 127),  # 3x3 pool with padding, over both channel chunks
    (1, 1, 1, 0, 1, 3, 1, 2, 1, -100, 100),  # the third window lies wholly outside: MIN -> lo
    (2, 2, 2, 0, 2, 3, 5, 6, 1, -128, 127),  # max pool, then the residual added
    (7, 9, 3, 6, 1, 2, 5, 6, 1, -90, 90),  # a kernel over 7 (KERNEL_BITS 4), mostly padding
]


def _window_max(x: np.ndarray, case: tuple, floor: int) -> np.ndarray:
    """[m, cols] lane maxima of the window walk over ``x`` ([chunk, y, x, cols]), written out
    position by position (``floor`` where a window has no position inside the tile)."""
    kh, kw, stride, pad, oh, ow, th, tw = case[:8]
    s = np.full((oh * ow, x.shape[-1]), floor, dtype=np.int64)
    for oy in range(oh):
        for ox in range(ow):
            for c in range(x.shape[0]):
                for i in range(kh):
                    for j in range(kw):
                        y, xx = oy * stride + i - pad, ox * stride + j - pad
                        if 0 <= y < th and 0 <= xx < tw:
                            s[oy * ow + ox] = np.maximum(s[oy * ow + ox], x[c, y, xx])
    return s


def test_max_mode_and_residual_against_numerics(rtl) -> None:
    """GEMMs with ``max`` (and ``res``) on the RTL against window maxima written out in numpy,
    through ``numerics.requant`` / ``requant_residual`` with the identity requant; extremes
    (-128 in every lane, res_mult at both ends, windows wholly in padding) included."""
    cfg, rng = TINY, np.random.default_rng(11)
    chunks, th, tw = 2, 5, 6
    x = rng.integers(-128, 128, (chunks, th, tw, cfg.cols))
    x[:, :2, :2] = -128  # the first 3x3 window's maximum is -128 (padding never wins)
    x[1, 4, 5] = 127
    bias, mult, shift = numerics.IDENTITY_REQUANT
    res_mult = rng.integers(-(2**31), 2**31, cfg.rows)
    res_mult[:2] = [-(2**31), 2**31 - 1]
    r = rng.integers(-128, 128, (cfg.out_depth, cfg.cols))
    r[1, :2] = [-128, 127]
    at_x, at_q, at_r, at_out = 1024, 8192, 9216, 12288
    rtl.write(at_x, layout.pack(cfg, Entry.X, x.reshape(-1, cfg.cols)))
    rtl.write(at_q, layout.pack(cfg, Entry.Q, layout.q_values(bias, mult, shift, res_mult)[None]))
    rtl.write(at_r, layout.pack(cfg, Entry.X, r))
    n_x = chunks * th * tw
    loads = [
        isa.encode(cfg, Opcode.LOAD, buf=b, sram=0, dram=at // 8, y_size=1, x_size=n, x_stride=n)
        for b, at, n in ((Buf.X, at_x, n_x), (Buf.Q, at_q, 1), (Buf.R, at_r, cfg.out_depth))
    ]
    rtl.write(0, isa.to_bytes(cfg, loads))
    assert _run(rtl, len(loads))["ERROR"] == Error.NONE
    floor = -(1 << (cfg.acc_bits - 1))
    out_bytes = layout.entry_bytes(cfg, Entry.OUT)
    for case in POOL_CASES:
        kh, kw, stride, pad, oh, ow, th_, tw_, res, lo, hi = case
        m, r_base = oh * ow, 1
        gemm = GEMM_DEFAULTS | dict(
            max=1, res=res, r_base=r_base, oh_count=oh, ow_count=ow, c_count=chunks, kh=kh,
            kw=kw, stride_y=stride, stride_x=stride, pad_top=pad, pad_left=pad, tile_h=th_,
            tile_w=tw_, c_stride=th * tw, lo=lo, hi=hi, push_next=1,
        )  # fmt: skip
        store = dict(sram=0, dram=at_out // 8, y_size=1, x_size=m, x_stride=m, pop_prev=1)
        words = [isa.encode(cfg, Opcode.GEMM, **gemm), isa.encode(cfg, Opcode.STORE, **store)]
        rtl.write(0, isa.to_bytes(cfg, words))
        assert _run(rtl, len(words))["ERROR"] == Error.NONE, case
        got = layout.unpack(cfg, Entry.OUT, rtl.read(at_out, m * out_bytes))
        s = _window_max(x[:, :th_, :tw_], case, floor)
        if res:
            rr = r[r_base : r_base + m]
            want = numerics.requant_residual(s, bias, mult, shift, rr, res_mult, lo, hi)
        else:
            want = numerics.requant(s, bias, mult, shift, lo, hi)
        assert got.tolist() == want.tolist(), case


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
