"""cocotb testbench of the whole accelerator (``rmsmp_top``): the host runtime runs a Program on it.

Run from ``tests/test_cocotb.py``, which compiles the Program and generates the Verilog. The
runtime (``host.runtime``) is the same code every backend runs; here its ``Device`` is the
simulated top, its register accesses AXI4-Lite transactions on ``s_axil_*`` and its memory a
byte array served on ``m_axi_*``. The output goes to ``RMSMP_OUTPUT`` for the caller to compare
with the golden model.
"""

from __future__ import annotations

import os
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import HierarchyObject
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from test_csr_cocotb import CLOCK_NS, OKAY, SLVERR, AxilMaster

from rmsmp.arch import regs
from rmsmp.host.device import Device, DeviceTimeoutError
from rmsmp.host.program import Program
from rmsmp.host.runtime import run_with_stats
from rmsmp.sim.verilator import WINDOW_BASE

RESET_CYCLES = 2


class AxiMemory:
    """AXI4 slave on the DUT's ``m_axi_*`` ports: ``size`` bytes at physical address ``base``.

    Always ready; INCR bursts in order, one R beat a cycle from the cycle after the address
    handshake; W beats are paired with AW bursts in order (W may come first, as AXI allows).
    A burst that leaves the memory is answered SLVERR. A WLAST that does not mark a burst's last
    beat fails the test.
    """

    def __init__(self, dut: HierarchyObject, base: int, size: int, beat_bytes: int) -> None:
        self.data = bytearray(size)
        self._dut, self._base, self._beat = dut, base, beat_bytes
        for name in ("arready", "awready", "wready"):
            getattr(dut, f"m_axi_{name}").value = 1
        for name in ("rvalid", "rdata", "rresp", "rlast", "bvalid", "bresp"):
            getattr(dut, f"m_axi_{name}").value = 0
        cocotb.start_soon(self._run())

    def _offset(self, addr: int, beats: int) -> int | None:
        """Offset of a burst's first byte in ``data``; None if the burst leaves the memory."""
        off = addr - self._base
        return off if 0 <= off and off + beats * self._beat <= len(self.data) else None

    async def _run(self) -> None:
        d, beat = self._dut, self._beat
        reads: deque[list[int | None]] = deque()  # [offset, beats left]
        bursts: deque[list[int | None]] = deque()  # [offset, beats left, any beat refused]
        wbeats: deque[tuple[int, int, int]] = deque()  # (data, strobes, last)
        bresps: deque[int] = deque()
        r_shown = b_shown = False
        while True:
            await ReadOnly()
            if d.m_axi_arvalid.value == 1:
                n = d.m_axi_arlen.value.to_unsigned() + 1
                reads.append([self._offset(d.m_axi_araddr.value.to_unsigned(), n), n])
            if d.m_axi_awvalid.value == 1:
                n = d.m_axi_awlen.value.to_unsigned() + 1
                bursts.append([self._offset(d.m_axi_awaddr.value.to_unsigned(), n), n])
            if d.m_axi_wvalid.value == 1:
                wbeats.append(
                    (
                        d.m_axi_wdata.value.to_unsigned(),
                        d.m_axi_wstrb.value.to_unsigned(),
                        int(d.m_axi_wlast.value),
                    )
                )
            r_taken = r_shown and d.m_axi_rready.value == 1
            b_taken = b_shown and d.m_axi_bready.value == 1
            await RisingEdge(d.clk)
            while bursts and wbeats:
                off, left = bursts[0]
                data, strb, last = wbeats.popleft()
                assert last == (left == 1), f"WLAST {last} with {left} beats left in the burst"
                if off is not None:
                    raw = data.to_bytes(beat, "little")
                    for i in range(beat):
                        if strb >> i & 1:
                            self.data[off + i] = raw[i]
                    bursts[0][0] = off + beat
                bursts[0][1] = left - 1
                if left == 1:
                    bursts.popleft()
                    bresps.append(OKAY if off is not None else SLVERR)
            if r_taken:
                r_shown = False
            if not r_shown and reads:
                off, left = reads[0]
                word = 0 if off is None else int.from_bytes(self.data[off : off + beat], "little")
                d.m_axi_rdata.value = word
                d.m_axi_rresp.value = OKAY if off is not None else SLVERR
                d.m_axi_rlast.value = int(left == 1)
                reads[0] = [None if off is None else off + beat, left - 1]
                if left == 1:
                    reads.popleft()
                r_shown = True
            d.m_axi_rvalid.value = int(r_shown)
            if b_taken:
                b_shown = False
            if not b_shown and bresps:
                d.m_axi_bresp.value = bresps.popleft()
                b_shown = True
            d.m_axi_bvalid.value = int(b_shown)


class SimTopDevice(Device):
    """The simulated ``rmsmp_top`` behind the runtime's ``Device`` interface.

    Its methods block, so the runtime runs in a ``bridge`` thread; register accesses and waits
    are coroutines on the simulator, entered through ``resume``.
    """

    name = "icarus"

    def __init__(self, dut: HierarchyObject, program: Program, bus: AxilMaster) -> None:
        cfg = program.config
        self.config = cfg
        self.window_base = WINDOW_BASE
        self.window_size = program.window_size
        self._dut, self._bus = dut, bus
        self._mem = AxiMemory(dut, WINDOW_BASE, program.window_size, cfg.axi_data_bits // 8)

    def write(self, offset: int, data: bytes) -> None:
        self._mem.data[offset : offset + len(data)] = data

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self._mem.data[offset : offset + n])

    async def _write_reg(self, name: str, value: int) -> None:
        resp = await self._bus.write(regs.offset(name), value)
        assert resp == OKAY, f"BRESP {resp} of a write to {name}"

    async def _read_reg(self, name: str) -> int:
        value, resp = await self._bus.read(regs.offset(name))
        assert resp == OKAY, f"RRESP {resp} of a read of {name}"
        return value

    async def _wait(self, timeout_cycles: int) -> None:
        if self._dut.irq.value == 1:
            return
        try:
            await with_timeout(RisingEdge(self._dut.irq), timeout_cycles * CLOCK_NS, "ns")
        except SimTimeoutError as e:
            raise DeviceTimeoutError(f"no irq within {timeout_cycles} cycles") from e

    def write_reg(self, name: str, value: int) -> None:
        resume(self._write_reg)(name, value)

    def read_reg(self, name: str) -> int:
        return resume(self._read_reg)(name)

    def wait(self, timeout_cycles: int) -> None:
        resume(self._wait)(timeout_cycles)


@cocotb.test()
async def test_program_runs(dut: HierarchyObject) -> None:
    """Reset, then run the Program ``RMSMP_PROGRAM`` on the input ``RMSMP_INPUT`` through the
    host runtime; save the output to ``RMSMP_OUTPUT``."""
    program = Program.load(os.environ["RMSMP_PROGRAM"])
    x = np.load(os.environ["RMSMP_INPUT"])
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    for name in ("awvalid", "wvalid", "bready", "arvalid", "rready"):
        getattr(dut, f"s_axil_{name}").value = 0
    bus = AxilMaster(dut, np.random.default_rng(cocotb.RANDOM_SEED))
    device = SimTopDevice(dut, program, bus)
    dut.rst.value = 1
    await ClockCycles(dut.clk, RESET_CYCLES)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    result = await bridge(run_with_stats)(program, x, device=device)
    np.save(os.environ["RMSMP_OUTPUT"], result.output)
