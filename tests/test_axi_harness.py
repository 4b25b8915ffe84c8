"""The simulated bus: AXI protocol checker, DDR model modes, AXI4-Lite register block.

The checker and the DDR model are exercised through ``Exerciser``, a stand-in for rmsmp_top with
the same ports: the real ``Csr`` and DMA engines copying beats through a buffer, with a fault
switch that breaks one AXI rule at a time (so the checker is shown to fail). The register tests
run on the exerciser and on the tiny accelerator.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from amaranth import Cat, Module, Mux, Signal, Value, unsigned
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rmsmp.arch import AccelConfig, regs
from rmsmp.arch.regs import AXIL_ADDR_BITS, REG_BYTES, REGS, Access
from rmsmp.host.device import DeviceTimeoutError
from rmsmp.hw.csr import Csr
from rmsmp.sim.verilator import (
    OKAY,
    SLVERR,
    TOP_NAME,
    WINDOW_BASE,
    RtlDevice,
    build,
    build_verilog,
)

TINY = AccelConfig.for_board("tiny")
WINDOW = 1 << 16
BEAT = 8
PAGE = 4096
MAX_BURST = 16
SIZE_8, BURST_INCR = 3, 1
BUF_BEATS = 64
COPY_TIMEOUT = 50_000
FAULT_SHIFT = 16
"""INSN_COUNT bits of the exerciser: beats to copy below, the Fault above."""
WORD_MASK = 0xFFFF_FFFF
CONSTANTS = {
    "CONFIG_HASH_LO": TINY.hash_int & WORD_MASK,
    "CONFIG_HASH_HI": TINY.hash_int >> 32,
    "MAGIC": regs.MAGIC,
}
RW_REGS = [r for r in REGS if r.access is Access.RW]
RO_REGS = [r for r in REGS if r.access is Access.RO]
MAPPED = {r.offset for r in REGS}
UNMAPPED = [a for a in range(0, 1 << AXIL_ADDR_BITS, REG_BYTES) if a not in MAPPED]
ORDERS = ("together", "aw_first", "w_first")
RANDOM = {"random": True, "min_latency": 20, "max_latency": 100, "backpressure": 0.3}


class Fault(enum.IntEnum):
    """One broken AXI rule in the exerciser's master or AXI4-Lite slave outputs."""

    NONE = 0
    ARLEN = 1  # ARLEN + 16 (17..32 beats)
    ARSIZE = 2  # 4-byte beats
    ARBURST = 3  # FIXED
    AR_4K = 4  # ARADDR one beat on, length kept: the last burst before a page end crosses it
    AR_DROP = 5  # ARVALID low every other cycle, READY or not
    AR_UNSTABLE = 6  # ARADDR flips a bit every other cycle
    AW_UNSTABLE = 7
    W_UNSTABLE = 8  # WDATA changes every cycle
    WLAST_NEVER = 9
    WLAST_ALWAYS = 10
    WSTRB_ZERO = 11
    AWLEN = 12  # AWLEN + 16
    LITE_B_DROP = 13  # AXI-Lite BVALID low every other cycle
    LITE_R_UNSTABLE = 14  # AXI-Lite RDATA changes every cycle
    AR_MISALIGNED = 15  # ARADDR half a beat on
    LITE_B_EARLY = 16  # AXI-Lite BVALID always high
    LITE_R_EARLY = 17  # AXI-Lite RVALID always high


MASTER_PORTS = {
    **{f"m_axi_ar{n}": Out(w) for n, w in (("addr", 32), ("len", 8), ("size", 3), ("burst", 2))},
    **{f"m_axi_aw{n}": Out(w) for n, w in (("addr", 32), ("len", 8), ("size", 3), ("burst", 2))},
    **{f"m_axi_{n}valid": Out(1) for n in ("ar", "aw", "w")},
    **{f"m_axi_{n}ready": In(1) for n in ("ar", "aw", "w")},
    **{f"m_axi_{n}valid": In(1) for n in ("r", "b")},
    **{f"m_axi_{n}ready": Out(1) for n in ("r", "b")},
    **{f"m_axi_{n}resp": In(2) for n in ("r", "b")},
    "m_axi_rdata": In(64),
    "m_axi_rlast": In(1),
    "m_axi_wdata": Out(64),
    "m_axi_wstrb": Out(8),
    "m_axi_wlast": Out(1),
}
"""rmsmp_top's AXI4 master port, flat (64-bit data, 32-bit addresses)."""


def _burst(m: Module, addr: Signal, left: Signal) -> Signal:
    """Beats of the next burst: min(left, 16, beats to the end of the 4 KB page)."""
    to_page = (PAGE - addr[: PAGE.bit_length() - 1]) // BEAT
    cap = Mux(to_page < MAX_BURST, to_page, MAX_BURST)
    n = Signal(range(MAX_BURST + 1))
    m.d.comb += n.eq(Mux(left < cap, left, cap))
    return n


class Exerciser(wiring.Component):
    """A stand-in for rmsmp_top with its ports: ``Csr`` and a burst copier. CTRL start copies
    INSN_COUNT[15:0] beats (<= 64) from byte address INSN_ADDR to byte address WINDOW_BASE,
    reading all (every AR up front) before writing (every AW up front, each burst's W after its
    AW); INSN_COUNT[31:16] picks a Fault. ``irq`` is high once done; STATUS is (busy, done,
    error), ERROR is (read error, write error), CYCLES_LO a cycle count.
    """

    def __init__(self, cfg: AccelConfig) -> None:
        self.csr = Csr(cfg)
        lite = {n: v for n, v in self.csr.signature.members.items() if n.startswith("s_axil_")}
        super().__init__({**lite, **MASTER_PORTS, "irq": Out(1)})

    def elaborate(self, platform) -> Module:  # noqa: C901 - one copier, kept in one place
        m = Module()
        m.submodules.csr = csr = self.csr
        m.submodules.buf = buf = Memory(shape=unsigned(BEAT * 8), depth=BUF_BEATS, init=[])
        rp, wp = buf.read_port(domain="comb"), buf.write_port()
        count = Signal(32)
        m.d.sync += count.eq(count + 1)
        odd = count[0]
        fault = csr.insn_count[FAULT_SHIFT:]
        beats = csr.insn_count[:FAULT_SHIFT]

        def on(f: Fault) -> Value:
            return fault == f

        # The copier's own master outputs, before any fault.
        ar_addr, aw_addr, w_addr = Signal(32), Signal(32), Signal(32)
        ar_left, aw_left, w_left = Signal(16), Signal(16), Signal(16)
        n_ar, n_aw, n_w = (
            _burst(m, ar_addr, ar_left),
            _burst(m, aw_addr, aw_left),
            _burst(m, w_addr, w_left),
        )
        w_pos = Signal(range(MAX_BURST))
        ahead = Signal(range(BUF_BEATS + 1))  # AWs accepted whose W bursts are not all sent
        b_wait = Signal(range(BUF_BEATS + 1))  # W bursts sent whose B has not come
        ridx, widx = Signal(range(BUF_BEATS + 1)), Signal(range(BUF_BEATS + 1))
        reading, writing, done = Signal(), Signal(), Signal()
        rd_err, wr_err = Signal(), Signal()
        arvalid = reading & (ar_left != 0)
        awvalid = writing & (aw_left != 0)
        wvalid = writing & (ahead != 0)
        wlast = w_pos == n_w - 1

        drop_ar = on(Fault.AR_DROP) & odd
        drop_b = on(Fault.LITE_B_DROP) & odd
        arready = self.m_axi_arready & ~drop_ar
        m.d.comb += [
            self.m_axi_araddr.eq(
                (ar_addr + Mux(on(Fault.AR_4K), BEAT, 0) + Mux(on(Fault.AR_MISALIGNED), 4, 0))
                ^ Mux(on(Fault.AR_UNSTABLE) & odd, BEAT, 0)
            ),
            self.m_axi_arlen.eq((n_ar - 1) | Mux(on(Fault.ARLEN), 16, 0)),
            self.m_axi_arsize.eq(Mux(on(Fault.ARSIZE), 2, SIZE_8)),
            self.m_axi_arburst.eq(Mux(on(Fault.ARBURST), 0, BURST_INCR)),
            self.m_axi_arvalid.eq(arvalid & ~drop_ar),
            self.m_axi_rready.eq(reading),
            self.m_axi_awaddr.eq(aw_addr ^ Mux(on(Fault.AW_UNSTABLE) & odd, BEAT, 0)),
            self.m_axi_awlen.eq((n_aw - 1) | Mux(on(Fault.AWLEN), 16, 0)),
            self.m_axi_awsize.eq(SIZE_8),
            self.m_axi_awburst.eq(BURST_INCR),
            self.m_axi_awvalid.eq(awvalid),
            self.m_axi_wdata.eq(rp.data ^ Mux(on(Fault.W_UNSTABLE), count, 0)),
            self.m_axi_wstrb.eq(Mux(on(Fault.WSTRB_ZERO), 0, 0xFF)),
            self.m_axi_wlast.eq(
                Mux(on(Fault.WLAST_NEVER), 0, Mux(on(Fault.WLAST_ALWAYS), 1, wlast))
            ),
            self.m_axi_wvalid.eq(wvalid),
            self.m_axi_bready.eq(1),
            rp.addr.eq(widx),
            wp.addr.eq(ridx),
            wp.data.eq(self.m_axi_rdata),
        ]
        for name in self.signature.members:
            if name.startswith("s_axil_"):
                port, inner = getattr(self, name), getattr(csr, name)
                if self.signature.members[name].flow == In:
                    m.d.comb += inner.eq(port)
                else:
                    m.d.comb += port.eq(inner)
        m.d.comb += [
            csr.s_axil_bready.eq(self.s_axil_bready & ~drop_b),
            self.s_axil_bvalid.eq(csr.s_axil_bvalid & ~drop_b | on(Fault.LITE_B_EARLY)),
            self.s_axil_rvalid.eq(csr.s_axil_rvalid | on(Fault.LITE_R_EARLY)),
            self.s_axil_rdata.eq(csr.s_axil_rdata ^ Mux(on(Fault.LITE_R_UNSTABLE), count, 0)),
            csr.status.eq(Cat(reading | writing, done, rd_err | wr_err)),
            csr.error.eq(Cat(rd_err, wr_err)),
            csr.cycles_lo.eq(count),
            self.irq.eq(done),
        ]

        with m.If(arvalid & arready):
            m.d.sync += [ar_addr.eq(ar_addr + n_ar * BEAT), ar_left.eq(ar_left - n_ar)]
        with m.If(self.m_axi_rvalid & reading):
            m.d.comb += wp.en.eq(1)
            m.d.sync += ridx.eq(ridx + 1)
            with m.If(self.m_axi_rresp != 0):
                m.d.sync += rd_err.eq(1)
        with m.If(awvalid & self.m_axi_awready):
            m.d.sync += [aw_addr.eq(aw_addr + n_aw * BEAT), aw_left.eq(aw_left - n_aw)]
        w_end = wvalid & self.m_axi_wready & wlast
        with m.If(wvalid & self.m_axi_wready):
            m.d.sync += [widx.eq(widx + 1), w_pos.eq(Mux(wlast, 0, w_pos + 1))]
            with m.If(wlast):
                m.d.sync += [w_addr.eq(w_addr + n_w * BEAT), w_left.eq(w_left - n_w)]
        m.d.sync += [
            ahead.eq(ahead + (awvalid & self.m_axi_awready) - w_end),
            b_wait.eq(b_wait + w_end - self.m_axi_bvalid),
        ]
        with m.If(self.m_axi_bvalid & (self.m_axi_bresp != 0)):
            m.d.sync += wr_err.eq(1)

        with m.If(csr.start & ~reading & ~writing):
            m.d.sync += [
                reading.eq(1),
                done.eq(0),
                rd_err.eq(0),
                wr_err.eq(0),
                ar_addr.eq(csr.insn_addr),
                ar_left.eq(beats),
                ridx.eq(0),
            ]
        with m.If(reading & (ridx == beats)):
            m.d.sync += [
                reading.eq(0),
                writing.eq(1),
                aw_addr.eq(csr.window_base),
                w_addr.eq(csr.window_base),
                aw_left.eq(beats),
                w_left.eq(beats),
                w_pos.eq(0),
                widx.eq(0),
            ]
        with m.If(writing & (aw_left == 0) & (w_left == 0) & (b_wait == 0)):
            m.d.sync += [writing.eq(0), done.eq(1)]
        return m


@pytest.fixture(scope="module")
def exerciser_lib() -> Path:
    """The harness built around the exerciser."""
    text = verilog.convert(Exerciser(TINY), name=TOP_NAME, emit_src=False)
    return build_verilog(text, "axi-exerciser")


@pytest.fixture(scope="module", params=["exerciser", "accelerator"])
def target_lib(request: pytest.FixtureRequest) -> Path:
    """The harness around the exerciser, then around the tiny accelerator."""
    if request.param == "exerciser":
        return request.getfixturevalue("exerciser_lib")
    return build(TINY)


def _open(lib: Path) -> Iterator[RtlDevice]:
    dev = RtlDevice(TINY, WINDOW, library=lib)
    try:
        yield dev
    finally:
        dev.close()


@pytest.fixture
def ex(exerciser_lib: Path) -> Iterator[RtlDevice]:
    yield from _open(exerciser_lib)


@pytest.fixture
def dev(target_lib: Path) -> Iterator[RtlDevice]:
    yield from _open(target_lib)


def _copy(dev: RtlDevice, src: int, dst: int, beats: int, fault: Fault = Fault.NONE) -> int:
    """Start an exerciser copy of ``beats`` beats between window offsets; cycles it took from
    the CTRL write's response to ``irq``."""
    dev.write_reg("INSN_ADDR", WINDOW_BASE + src)
    dev.write_reg("WINDOW_BASE", WINDOW_BASE + dst)
    dev.write_reg("INSN_COUNT", beats | fault << FAULT_SHIFT)
    dev.write_reg("CTRL", regs.CTRL_START)
    start = dev.sim_cycles
    dev.wait(COPY_TIMEOUT)
    return dev.sim_cycles - start


def _fill(dev: RtlDevice, seed: int) -> bytes:
    """Random bytes over the whole window; returns them."""
    data = np.random.default_rng(seed).integers(0, 256, WINDOW, dtype=np.uint8).tobytes()
    dev.write(0, data)
    return data


def _lanes(strb: int) -> int:
    return sum(0xFF << 8 * i for i in range(REG_BYTES) if strb >> i & 1)


# --- DDR model and checker, through the exerciser ------------------------------------------


@pytest.mark.parametrize("seed", [None, 1, 2, 3, 4])
def test_copy_is_clean_in_fixed_and_random_modes(ex: RtlDevice, seed: int | None) -> None:
    """64 beats across a 4 KB boundary (bursts split there) copy intact, with no violation."""
    if seed is not None:
        ex.set_ddr_mode(seed=seed, **RANDOM)
    data = _fill(ex, 10)
    src, dst = 0x0F40, 0x2FC8
    _copy(ex, src, dst, BUF_BEATS)
    assert ex.read(dst, BUF_BEATS * BEAT) == data[src : src + BUF_BEATS * BEAT]
    assert ex.read_reg("STATUS") == regs.Status.DONE
    assert ex.protocol_violations() == []
    assert ex.protocol_violation_count == 0


def test_random_mode_timing(ex: RtlDevice) -> None:
    """Latency is what the mode says: a fixed range moves a 1-beat copy by exactly the added
    read and write-response latency; back-pressure slows it; the same seed repeats it."""
    fixed = _copy(ex, 0, 0x100, 1)
    ex.set_ddr_mode(seed=1, random=True, min_latency=120, max_latency=120, backpressure=0)
    slow = _copy(ex, 0, 0x100, 1)
    assert slow - fixed == (120 - 20) + (120 - 20 // 2)
    runs = []
    for _ in range(2):
        ex.set_ddr_mode(seed=5, **RANDOM)
        runs.append(_copy(ex, 0, 0x100, BUF_BEATS))
    ex.set_ddr_mode(seed=6, **RANDOM)
    other = _copy(ex, 0, 0x100, BUF_BEATS)
    ex.set_ddr_mode()
    base = _copy(ex, 0, 0x100, BUF_BEATS)
    assert runs[0] == runs[1]
    assert other != runs[0]
    assert min(runs[0], other) > base
    assert ex.protocol_violations() == []


@pytest.mark.parametrize("channel", ["read", "write"])
def test_injected_error_response(ex: RtlDevice, channel: str) -> None:
    """An injected SLVERR on the second burst reaches the master's error flag; a failed write
    burst stores nothing, the others land."""
    data = _fill(ex, 11)
    ex.inject_error(channel, 1)
    _copy(ex, 0, 0x8000, 48)
    assert ex.read_reg("ERROR") == (1 if channel == "read" else 2)
    got = ex.read(0x8000, 48 * BEAT)
    bad = slice(16 * BEAT, 32 * BEAT)
    if channel == "write":
        assert got[bad] == data[0x8000:][bad]
        assert got[: bad.start] == data[: bad.start]
    else:
        assert got[bad] == bytes(bad.stop - bad.start)
    assert got[bad.stop :] == data[bad.stop : 48 * BEAT]
    _copy(ex, 0, 0x8000, 48)
    assert ex.read_reg("ERROR") == 0
    assert ex.protocol_violations() == []


def test_slverr_outside_memory(ex: RtlDevice) -> None:
    """Reads past the end of the DDR model answer SLVERR."""
    ex.write_reg("INSN_ADDR", WINDOW_BASE + WINDOW - 8 * BEAT)
    ex.write_reg("WINDOW_BASE", WINDOW_BASE)
    ex.write_reg("INSN_COUNT", 16)
    ex.write_reg("CTRL", regs.CTRL_START)
    ex.wait(COPY_TIMEOUT)
    assert ex.read_reg("ERROR") == 1


def test_stall_hangs_without_violation(ex: RtlDevice) -> None:
    """A stalled DDR model stops the copy (the wait times out) and breaks no rule itself."""
    ex.set_ddr_mode(seed=2, **RANDOM)
    ex.set_stall(True)
    with pytest.raises(DeviceTimeoutError):
        _copy(ex, 0, 0x100, BUF_BEATS)
    assert ex.read_reg("STATUS") & regs.Status.BUSY
    ex.set_stall(False)
    ex.wait(COPY_TIMEOUT)
    assert ex.read_reg("STATUS") == regs.Status.DONE
    assert ex.protocol_violations() == []


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.ARLEN, "AR AxLEN 31 (32 beats) > 15"),
        (Fault.ARSIZE, "AR AxSIZE 2, not 3"),
        (Fault.ARBURST, "AR AxBURST 0, not INCR"),
        (Fault.AR_4K, "AR burst of 16 beats at 0x10000f88 crosses a 4 KB boundary"),
        (Fault.AR_DROP, "AR VALID dropped before READY"),
        (Fault.AR_UNSTABLE, "AR payload changed while VALID waited for READY"),
        (Fault.AW_UNSTABLE, "AW payload changed while VALID waited for READY"),
        (Fault.W_UNSTABLE, "W payload changed while VALID waited for READY"),
        (Fault.WLAST_NEVER, "no WLAST on the last beat of a 16-beat burst"),
        (Fault.WLAST_ALWAYS, "WLAST on beat 1 of a 16-beat burst"),
        (Fault.WSTRB_ZERO, "W beat with WSTRB 0"),
        (Fault.AWLEN, "AW AxLEN 31 (32 beats) > 15"),
        (Fault.AR_MISALIGNED, "AR address 0x10000f84 not 8-byte aligned"),
    ],
)
def test_checker_catches_master_fault(ex: RtlDevice, fault: Fault, expected: str) -> None:
    """Each broken rule on the AXI4 master port is counted and described (heavy back-pressure,
    so that the VALID-stability faults meet a READY low)."""
    ex.set_ddr_mode(seed=3, **{**RANDOM, "backpressure": 0.7})
    with contextlib.suppress(DeviceTimeoutError):
        _copy(ex, 0x0F80, 0x1F80, BUF_BEATS, fault)
    found = ex.protocol_violations()
    assert any(expected in v for v in found), found
    assert ex.protocol_violation_count >= 1


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.LITE_B_DROP, "AXI-Lite B VALID dropped before READY"),
        (Fault.LITE_R_UNSTABLE, "AXI-Lite R payload changed while VALID waited for READY"),
        (Fault.LITE_B_EARLY, "AXI-Lite BVALID before both AW and W were accepted"),
        (Fault.LITE_R_EARLY, "AXI-Lite RVALID with no read outstanding"),
    ],
)
def test_checker_catches_axil_fault(ex: RtlDevice, fault: Fault, expected: str) -> None:
    """Each broken rule on the AXI4-Lite slave's responses is counted and described."""
    ex.set_ddr_mode(seed=4, **RANDOM)
    ex.write_reg("INSN_COUNT", fault << FAULT_SHIFT)
    for i in range(20):
        ex.axil_write(regs.offset("INSN_ADDR"), i)
        ex.axil_read(regs.offset("MAGIC"))
    found = ex.protocol_violations()
    assert any(expected in v for v in found), found


# --- AXI4-Lite register block, on the exerciser and the accelerator -------------------------


def test_unmapped_and_read_only_answer_slverr(dev: RtlDevice) -> None:
    """Unmapped reads and writes, and writes to RO registers, answer SLVERR and change nothing;
    every mapped register reads OKAY, CTRL as 0."""
    for i, reg in enumerate(RW_REGS):
        dev.write_reg(reg.name, 0x1111_1111 * (i + 1))
    for addr in UNMAPPED:
        assert dev.axil_read(addr) == (0, SLVERR)
        assert dev.axil_write(addr, WORD_MASK) == SLVERR
    for reg in RO_REGS:
        assert dev.axil_write(reg.offset, WORD_MASK) == SLVERR
    for name, value in CONSTANTS.items():
        assert dev.axil_read(regs.offset(name)) == (value, OKAY)
    for i, reg in enumerate(RW_REGS):
        assert dev.axil_read(reg.offset) == (0x1111_1111 * (i + 1), OKAY)
    assert dev.axil_read(regs.offset("CTRL")) == (0, OKAY)
    assert dev.read_reg("STATUS") == 0
    assert dev.protocol_violations() == []


@pytest.mark.parametrize("order", ORDERS)
def test_write_orders_and_byte_lanes(dev: RtlDevice, order: str) -> None:
    """AW before W, W before AW and both together all write; WSTRB picks the bytes written,
    at any byte address within the word; SLVERR does not depend on the order."""
    reg = regs.offset("WINDOW_LIMIT")
    expected = 0
    for strb in range(16):
        value = 0x0101_0101 * (strb + 0x20)
        assert dev.axil_write(reg + strb % REG_BYTES, value, strb, order) == OKAY
        expected = expected & ~_lanes(strb) | value & _lanes(strb)
        assert dev.axil_read(reg) == (expected, OKAY)
    assert dev.axil_write(UNMAPPED[0], 1, 0xF, order) == SLVERR
    assert dev.axil_write(regs.offset("MAGIC"), 1, 0xF, order) == SLVERR
    assert dev.protocol_violations() == []


@pytest.mark.parametrize("seed", [1, 2])
def test_registers_under_random_backpressure(dev: RtlDevice, seed: int) -> None:
    """300 random register accesses (any order, strobes, mapped or not) with a jittered
    AXI4-Lite driver match a model of the register file, with no protocol violation."""
    dev.set_ddr_mode(seed=seed, **RANDOM)
    rng = np.random.default_rng(seed)
    model = {r.offset: 0 for r in RW_REGS}
    constants = {regs.offset(n): v for n, v in CONSTANTS.items()}
    ctrl = regs.offset("CTRL")
    for _ in range(300):
        addr = int(rng.integers(0, (1 << AXIL_ADDR_BITS) // REG_BYTES)) * REG_BYTES
        if rng.random() < 0.5:
            value, strb = int(rng.integers(0, 1 << 32)), int(rng.integers(0, 16))
            if addr == ctrl:
                strb &= ~1  # no run: the accelerator would start one
            resp = dev.axil_write(addr, value, strb, ORDERS[int(rng.integers(len(ORDERS)))])
            assert resp == (OKAY if addr in model or addr == ctrl else SLVERR), hex(addr)
            if addr in model:
                model[addr] = model[addr] & ~_lanes(strb) | value & _lanes(strb)
        else:
            value, resp = dev.axil_read(addr)
            assert resp == (OKAY if addr in MAPPED else SLVERR), hex(addr)
            known = {**model, **constants, ctrl: 0}
            if addr in known or addr not in MAPPED:
                assert value == known.get(addr, 0), hex(addr)
    assert dev.protocol_violations() == []


def test_ctrl_start_needs_lane_zero(ex: RtlDevice) -> None:
    """CTRL starts a run only when byte lane 0 carries bit 0."""
    ex.write_reg("INSN_ADDR", WINDOW_BASE)
    ex.write_reg("WINDOW_BASE", WINDOW_BASE + 0x100)
    ex.write_reg("INSN_COUNT", 1)
    assert ex.axil_write(regs.offset("CTRL"), WORD_MASK, 0b1110) == OKAY
    with pytest.raises(DeviceTimeoutError):
        ex.wait(200)
    assert ex.read_reg("STATUS") == 0
    assert ex.axil_write(regs.offset("CTRL"), regs.CTRL_START, 0b0001, "w_first") == OKAY
    ex.wait(COPY_TIMEOUT)
    assert ex.read_reg("STATUS") == regs.Status.DONE
