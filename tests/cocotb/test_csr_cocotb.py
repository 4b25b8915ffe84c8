"""cocotb testbench of the AXI4-Lite register block (``rmsmp.hw.csr.Csr``), through the bus.

Run from ``tests/test_cocotb.py``, which builds ``Csr`` for the board ``RMSMP_BOARD``.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import HierarchyObject, LogicObject
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from rmsmp.arch import AccelConfig, regs
from rmsmp.arch.regs import REGS, Access

OKAY = 0
"""AXI response code of a successful transfer."""
SLVERR = 2
"""AXI response code of a refused transfer (unmapped address, read-only register)."""
WORD_MASK = 0xFFFF_FFFF
CLOCK_NS = 10
TIMEOUT_CYCLES = 50
SETTLE_CYCLES = 5
CONSTANT_NAMES = ("CONFIG_HASH_LO", "CONFIG_HASH_HI", "MAGIC")
RW_REGS = [r for r in REGS if r.access is Access.RW]
STATUS_REGS = [r for r in REGS if r.access is Access.RO and r.name not in CONSTANT_NAMES]
CTRL = regs.REG["CTRL"]


def _constants() -> dict[str, int]:
    """Expected values of the constant registers for the configuration under test."""
    h = AccelConfig.for_board(os.environ["RMSMP_BOARD"]).hash_int
    return {
        "CONFIG_HASH_LO": h & WORD_MASK,
        "CONFIG_HASH_HI": (h >> 32) & WORD_MASK,
        "MAGIC": regs.MAGIC,
    }


def _words(rng: np.random.Generator, n: int) -> list[int]:
    """``n`` random 32-bit words."""
    return [int(v) for v in rng.integers(0, 1 << 32, n, dtype=np.uint64)]


class AxilMaster:
    """AXI4-Lite master on the DUT's ``s_axil_*`` ports, one transaction at a time.

    Inputs change just after a rising edge; handshakes are decided on the values settled before
    the next one. Response ready is raised after a random delay, to exercise back-pressure.
    """

    def __init__(self, dut: HierarchyObject, rng: np.random.Generator) -> None:
        self._dut = dut
        self._rng = rng

    def _port(self, name: str) -> LogicObject:
        return getattr(self._dut, f"s_axil_{name}")

    async def _send(self, channels: list[str]) -> None:
        """Raise ``valid`` on ``channels`` and drop each after the edge that accepts it."""
        for ch in channels:
            self._port(f"{ch}valid").value = 1
        pending = set(channels)
        for _ in range(TIMEOUT_CYCLES):
            await ReadOnly()
            accepted = {ch for ch in pending if self._port(f"{ch}ready").value == 1}
            await RisingEdge(self._dut.clk)
            for ch in accepted:
                self._port(f"{ch}valid").value = 0
            pending -= accepted
            if not pending:
                return
        raise TimeoutError(f"AXI-Lite channels {sorted(pending)} never accepted")

    async def _receive(self, channel: str, fields: list[str]) -> list[int]:
        """Accept one response on ``channel``; the values of ``fields`` in it."""
        await ClockCycles(self._dut.clk, int(self._rng.integers(0, 3)))
        self._port(f"{channel}ready").value = 1
        for _ in range(TIMEOUT_CYCLES):
            await ReadOnly()
            valid = self._port(f"{channel}valid").value == 1
            values = [self._port(f).value.to_unsigned() for f in fields]
            await RisingEdge(self._dut.clk)
            if valid:
                self._port(f"{channel}ready").value = 0
                return values
        raise TimeoutError(f"no AXI-Lite {channel.upper()} response")

    async def write(self, addr: int, data: int) -> int:
        """Write a whole word; the BRESP."""
        self._port("awaddr").value = addr
        self._port("wdata").value = data
        self._port("wstrb").value = 0xF
        await self._send(["aw", "w"])
        (bresp,) = await self._receive("b", ["bresp"])
        return bresp

    async def read(self, addr: int) -> tuple[int, int]:
        """Read a word; (RDATA, RRESP)."""
        self._port("araddr").value = addr
        await self._send(["ar"])
        rdata, rresp = await self._receive("r", ["rdata", "rresp"])
        return rdata, rresp


class PulseMonitor:
    """Records the sim time of every clock cycle in which ``signal`` is high."""

    def __init__(self, dut: HierarchyObject, signal: LogicObject) -> None:
        self.high_at: list[float] = []
        self._dut, self._signal = dut, signal
        cocotb.start_soon(self._run())

    async def _run(self) -> None:
        while True:
            await RisingEdge(self._dut.clk)
            await ReadOnly()
            if self._signal.value == 1:
                self.high_at.append(get_sim_time("ns"))


async def _setup(dut: HierarchyObject) -> tuple[AxilMaster, np.random.Generator]:
    """Start the clock, idle the bus, reset; a master and a random generator."""
    rng = np.random.default_rng(cocotb.RANDOM_SEED)
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    for name in ("awvalid", "wvalid", "bready", "arvalid", "rready"):
        getattr(dut, f"s_axil_{name}").value = 0
    for reg in STATUS_REGS:
        getattr(dut, reg.name.lower()).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    return AxilMaster(dut, rng), rng


async def _write_ok(bus: AxilMaster, addr: int, data: int) -> None:
    assert await bus.write(addr, data) == OKAY, f"BRESP of a write to {addr:#04x}"


async def _read_ok(bus: AxilMaster, addr: int) -> int:
    data, resp = await bus.read(addr)
    assert resp == OKAY, f"RRESP of a read of {addr:#04x}"
    return data


def _expect_rw_ports(dut: HierarchyObject, written: dict[str, int]) -> None:
    """Every RW register's port drives the value ``written``."""
    for reg in RW_REGS:
        port = getattr(dut, reg.name.lower()).value.to_unsigned()
        assert port == written[reg.name], f"{reg.name} port {port:#x}, wrote {written[reg.name]:#x}"


async def _expect_rw(dut: HierarchyObject, bus: AxilMaster, written: dict[str, int]) -> None:
    """Every RW register reads back, and drives its port with, the value ``written``."""
    for reg in RW_REGS:
        got = await _read_ok(bus, reg.offset)
        assert got == written[reg.name], f"{reg.name} read {got:#x}, wrote {written[reg.name]:#x}"
    _expect_rw_ports(dut, written)


async def _write_rw(bus: AxilMaster, rng: np.random.Generator) -> dict[str, int]:
    """Write a random word to every RW register; the values written."""
    written = dict(zip((r.name for r in RW_REGS), _words(rng, len(RW_REGS)), strict=True))
    for reg in RW_REGS:
        await _write_ok(bus, reg.offset, written[reg.name])
    return written


@cocotb.test()
async def test_rw_registers_read_back(dut: HierarchyObject) -> None:
    """Each write to an RW register changes that register only, and reads back."""
    bus, rng = await _setup(dut)
    written = await _write_rw(bus, rng)
    for _ in range(3):
        for i in rng.permutation(len(RW_REGS)):
            reg = RW_REGS[i]
            (written[reg.name],) = _words(rng, 1)
            await _write_ok(bus, reg.offset, written[reg.name])
            _expect_rw_ports(dut, written)
        await _expect_rw(dut, bus, written)


@cocotb.test()
async def test_status_inputs_read_back(dut: HierarchyObject) -> None:
    """Each RO status register reads the value on its input port."""
    bus, rng = await _setup(dut)
    for _ in range(3):
        driven = dict(
            zip((r.name for r in STATUS_REGS), _words(rng, len(STATUS_REGS)), strict=True)
        )
        for reg in STATUS_REGS:
            getattr(dut, reg.name.lower()).value = driven[reg.name]
        for reg in STATUS_REGS:
            got = await _read_ok(bus, reg.offset)
            assert got == driven[reg.name], f"{reg.name} read {got:#x}, drove {driven[reg.name]:#x}"


@cocotb.test()
async def test_constant_registers(dut: HierarchyObject) -> None:
    """CONFIG_HASH_LO/HI hold the configuration's hash, MAGIC the rmsmp magic."""
    bus, _ = await _setup(dut)
    for name, want in _constants().items():
        got = await _read_ok(bus, regs.offset(name))
        assert got == want, f"{name} read {got:#x}, expected {want:#x}"


@cocotb.test()
async def test_read_only_registers_ignore_writes(dut: HierarchyObject) -> None:
    """Writes to RO registers answer SLVERR and change neither them nor any RW register."""
    bus, rng = await _setup(dut)
    written = await _write_rw(bus, rng)
    driven = dict(zip((r.name for r in STATUS_REGS), _words(rng, len(STATUS_REGS)), strict=True))
    for reg in STATUS_REGS:
        getattr(dut, reg.name.lower()).value = driven[reg.name]
    expected = driven | _constants()
    ro_regs = [r for r in REGS if r.access is Access.RO]
    for reg, junk in zip(ro_regs, _words(rng, len(ro_regs)), strict=True):
        assert await bus.write(reg.offset, junk) == SLVERR, f"write to {reg.name} not refused"
    for reg in ro_regs:
        got = await _read_ok(bus, reg.offset)
        assert got == expected[reg.name], f"{reg.name} read {got:#x} after a write"
    await _expect_rw(dut, bus, written)


@cocotb.test()
async def test_ctrl_start_pulse(dut: HierarchyObject) -> None:
    """A CTRL write with bit 0 set gives exactly one one-cycle ``start``; nothing else does."""
    bus, rng = await _setup(dut)
    start = PulseMonitor(dut, dut.start)
    for reg, value in zip(RW_REGS, _words(rng, len(RW_REGS)), strict=True):
        await _write_ok(bus, reg.offset, value | 1)
    await ClockCycles(dut.clk, SETTLE_CYCLES)
    assert start.high_at == [], f"start pulsed at {start.high_at} ns after RW writes"
    for value, pulses in (
        (0, 0),
        (regs.CTRL_START, 1),
        (WORD_MASK ^ regs.CTRL_START, 0),
        (WORD_MASK, 1),
    ):
        before = len(start.high_at)
        await _write_ok(bus, CTRL.offset, value)
        await ClockCycles(dut.clk, SETTLE_CYCLES)
        got = len(start.high_at) - before
        assert got == pulses, f"CTRL = {value:#x}: start high for {got} cycles, expected {pulses}"


@cocotb.test()
async def test_unmapped_addresses(dut: HierarchyObject) -> None:
    """Unmapped word addresses answer SLVERR (reads give 0); writes there change nothing."""
    bus, rng = await _setup(dut)
    mapped = {r.offset for r in REGS}
    unmapped = [a for a in range(0, 1 << regs.AXIL_ADDR_BITS, regs.REG_BYTES) if a not in mapped]
    assert unmapped, "the register map fills the whole address space"
    written = await _write_rw(bus, rng)
    start = PulseMonitor(dut, dut.start)
    for reg in STATUS_REGS:
        getattr(dut, reg.name.lower()).value = WORD_MASK
    for addr in unmapped:
        assert await bus.read(addr) == (0, SLVERR), f"unmapped read at {addr:#04x} not refused"
    for addr in unmapped:
        assert await bus.write(addr, WORD_MASK) == SLVERR, f"unmapped write at {addr:#04x}"
    await _expect_rw(dut, bus, written)
    assert start.high_at == [], f"start pulsed at {start.high_at} ns after unmapped writes"
