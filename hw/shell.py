"""The accelerator's top level: AXI ports, registers, buffers, the units and how a run ends.

Fetch dispatches into three command queues (load, compute, store); four token counters sit
between neighbouring units (``arch.isa``). The shell starts a run, counts cycles, and ends it:

* at start, a WINDOW_BASE not aligned to ``window_align``, WINDOW_LIMIT < WINDOW_BASE or an
  INSN_ADDR that is not a whole number of beats ends the run at once with BAD_WINDOW;
  INSN_COUNT = 0 ends it at once with NONE;
* a fault (an error response to a load or store, a watchdog timeout on either port) ends it at
  once with that error, PC = the instruction and FAULT_UNIT = its unit;
* otherwise it ends when fetch has stopped and no unit can make progress (each is idle with an
  empty queue or waits for tokens), that is, when nothing has moved for ``STUCK_CYCLES`` cycles
  in a row: ERROR is what fetch stopped on, else DEADLOCK if an instruction is left, else NONE;
  PC is the number of instructions dispatched (the index of the one fetch stopped on).

Between runs the units, queues and token counters are held in reset and the AXI ports drain
what is still on the bus (read data is dropped; the W beats of bursts already addressed still go
out). A new run starts once both ports are quiet; if a transfer left over from an earlier run
still makes no progress for ``watchdog_cycles``, the new run ends at once with AXI_TIMEOUT
(FAULT_UNIT and PC name that transfer's instruction): a slave that never answers again needs a
reset, but no run ever waits forever.
"""

from __future__ import annotations

from amaranth import Cat, ClockDomain, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch import AccelConfig
from ..arch.isa import POPS, PUSHES, TOKEN_COUNTERS, Error, Unit
from ..arch.regs import AXIL_ADDR_BITS
from ..arch.timing import STUCK_CYCLES
from .arith import log2_exact
from .axi import AxiLiteSignature, AxiReadSignature, AxiWriteSignature, connect_flat, flat_members
from .buffers import Buffer, memory
from .compute import Compute
from .csr import REG_WIDTH, Csr
from .dma import AxiReadPort, AxiWritePort
from .fetch import QUEUED_UNITS, Fetch
from .load import BUF_OF, Load
from .queues import ERROR_BITS, PC_BITS, UNIT_BITS, CmdQueue, TokenCounter
from .store import Store

READ_CLIENTS = (Unit.FETCH, Unit.LOAD)
"""Clients of the shared read port, highest priority first."""


class Accelerator(wiring.Component):
    """Top level: ``clk``, ``rst`` (synchronous, active high), ``s_axil_*`` control slave,
    ``m_axi_*`` memory master, ``irq`` (run done).

    ``rst`` is registered once before it resets the design, so no logic is combinational from it:
    its fan-out starts at a flop (timing), and a Verilator model does not re-evaluate every
    register's next state whenever its inputs change (simulation speed).
    """

    def __init__(self, cfg: AccelConfig) -> None:
        if cfg.window_align & (cfg.window_align - 1):
            raise ValueError(
                f"{cfg.name}: window_align {cfg.window_align} (max_burst {cfg.max_burst} beats) "
                "must be a power of two for this hardware; pick max_burst 1, 2, 4, 8 or 16"
            )
        self.cfg = cfg
        super().__init__(
            {
                **flat_members("s_axil", AxiLiteSignature(AXIL_ADDR_BITS).flip()),
                **flat_members("m_axi", AxiReadSignature(cfg.axi_addr_bits, cfg.axi_data_bits)),
                **flat_members("m_axi", AxiWriteSignature(cfg.axi_addr_bits, cfg.axi_data_bits)),
                "irq": Out(1),
                "clk": In(1),
                "rst": In(1),
            }
        )

    def elaborate(self, platform) -> Module:  # noqa: C901 - the wiring of every unit
        m = Module()
        cfg = self.cfg
        m.domains.sync = sync = ClockDomain()
        rst = Signal(init=1, reset_less=True)
        m.d.sync += rst.eq(self.rst)
        m.d.comb += [sync.clk.eq(self.clk), sync.rst.eq(rst)]
        m.submodules.csr = csr = Csr(cfg)
        for name in self.signature.members:
            if name.startswith("s_axil_"):
                if self.signature.members[name].flow == In:
                    m.d.comb += getattr(csr, name).eq(getattr(self, name))
                else:
                    m.d.comb += getattr(self, name).eq(getattr(csr, name))

        running = Signal()
        m.submodules.rport = rport = AxiReadPort(cfg, READ_CLIENTS)
        m.submodules.wport = wport = AxiWritePort(cfg)
        connect_flat(m, self, "m_axi", rport.axi)
        connect_flat(m, self, "m_axi", wport.axi)
        m.d.comb += [rport.drain.eq(~running), wport.drain.eq(~running)]

        # Units, queues and token counters: reset between runs (the store unit once the write
        # port is quiet, as it streams the W beats of bursts already addressed).
        clear = ~running
        fetch, load, compute, store = Fetch(cfg), Load(cfg), Compute(cfg), Store(cfg)
        m.submodules.fetch = ResetInserter(clear)(fetch)
        m.submodules.load = ResetInserter(clear)(load)
        m.submodules.compute = ResetInserter(clear)(compute)
        m.submodules.store = ResetInserter(clear & wport.quiet)(store)
        units = {Unit.LOAD: load, Unit.COMPUTE: compute, Unit.STORE: store}
        for u in QUEUED_UNITS:
            q = CmdQueue(cfg, u)
            m.submodules[f"{u.name.lower()}_q"] = ResetInserter(clear)(q)
            wiring.connect(m, fetch.queue(u), q.w)
            wiring.connect(m, q.r, units[u].cmd)
        for name in TOKEN_COUNTERS:
            t = TokenCounter(cfg)
            m.submodules[name] = ResetInserter(clear)(t)
            for table, side in ((PUSHES, t.push), (POPS, t.pop)):
                ends = [(u, f) for u, fl in table.items() for f, c in fl.items() if c == name]
                ((u, flag),) = ends
                wiring.connect(m, getattr(units[u], flag), side)
        wiring.connect(m, fetch.rd, rport.client(Unit.FETCH))
        wiring.connect(m, load.rd, rport.client(Unit.LOAD))
        wiring.connect(m, store.wr, wport.client)

        # Buffers.
        mems = {b: memory(cfg, b) for b in Buffer}
        for b, mem in mems.items():
            m.submodules[f"{b.value}buf"] = mem
        for b, buf in BUF_OF.items():
            wiring.connect(m, mems[buf].write_port(), load.port(b))
        wiring.connect(m, mems[Buffer.W].read_port(), compute.w_rd)
        wiring.connect(m, mems[Buffer.X].read_port(), compute.x_rd)
        wiring.connect(m, mems[Buffer.Q].read_port(), compute.q_rd)
        wiring.connect(m, mems[Buffer.R].read_port(), compute.r_rd)
        wiring.connect(m, mems[Buffer.ACC].read_port(), compute.acc_rd)
        wiring.connect(m, mems[Buffer.ACC].write_port(), compute.acc_wr)
        wiring.connect(m, mems[Buffer.OUT].write_port(), compute.out_wr)
        wiring.connect(m, mems[Buffer.OUT].read_port(), store.out_rd)

        # The run's registers, latched at start.
        window_base = Signal(cfg.axi_addr_bits)
        window_bytes = Signal(PC_BITS)
        insn_addr = Signal(PC_BITS)
        insn_count = Signal(PC_BITS)
        for u in (fetch, load, store):
            m.d.comb += u.window_base.eq(window_base)
        m.d.comb += [
            fetch.window_bytes.eq(window_bytes),
            fetch.insn_addr.eq(insn_addr),
            fetch.insn_count.eq(insn_count),
        ]

        # Status and counters.
        busy, done = Signal(), Signal()
        error = Signal(ERROR_BITS)
        pc = Signal(PC_BITS)
        fault_unit = Signal(UNIT_BITS)
        cycles = Signal(2 * REG_WIDTH)
        mac_cycles, dma_beats = Signal(REG_WIDTH), Signal(REG_WIDTH)
        load_cycles, store_cycles = Signal(REG_WIDTH), Signal(REG_WIDTH)
        m.d.comb += [
            csr.status.eq(Cat(busy, done, error != Error.NONE)),
            csr.error.eq(error),
            csr.pc.eq(pc),
            csr.fault_unit.eq(fault_unit),
            csr.cycles_lo.eq(cycles[:REG_WIDTH]),
            csr.cycles_hi.eq(cycles[REG_WIDTH:]),
            csr.mac_cycles.eq(mac_cycles),
            csr.dma_beats.eq(dma_beats),
            csr.load_cycles.eq(load_cycles),
            csr.store_cycles.eq(store_cycles),
            self.irq.eq(done),
        ]
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)
        mac = Signal()
        m.d.sync += mac.eq(compute.mac)  # registered: the counter's add is a cycle of its own
        with m.If(running):
            m.d.sync += [
                mac_cycles.eq(mac_cycles + mac),
                dma_beats.eq(dma_beats + rport.beat + wport.beat),
                load_cycles.eq(load_cycles + load.working),
                store_cycles.eq(store_cycles + store.working),
                pc.eq(fetch.dispatched),
            ]

        # Ending a run.
        faults = [load.fault, store.fault, rport.timeout, wport.timeout]
        stuck = fetch.stuck & Cat(u.idle | u.blocked for u in units.values()).all()
        left = (fetch.dispatched != insn_count) | Cat(u.blocked for u in units.values()).any()
        quiet_for = Signal(range(STUCK_CYCLES + 1))
        m.d.sync += quiet_for.eq(0)
        with m.If(running & stuck & (quiet_for != STUCK_CYCLES)):
            m.d.sync += quiet_for.eq(quiet_for + 1)

        def finish(code, at, unit=Unit.FETCH) -> None:
            m.d.sync += [
                running.eq(0),
                busy.eq(0),
                done.eq(1),
                error.eq(code),
                pc.eq(at),
                fault_unit.eq(unit),
            ]
            m.next = "IDLE"

        bad_window = Signal()
        beat_shift = log2_exact(cfg.axi_data_bits // 8)
        align_shift = log2_exact(cfg.window_align)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(csr.start):
                    m.d.sync += [
                        busy.eq(1),
                        done.eq(0),
                        error.eq(Error.NONE),
                        pc.eq(0),
                        fault_unit.eq(Unit.FETCH),
                        cycles.eq(0),
                        mac_cycles.eq(0),
                        dma_beats.eq(0),
                        load_cycles.eq(0),
                        store_cycles.eq(0),
                        window_base.eq(csr.window_base),
                        window_bytes.eq(csr.window_limit - csr.window_base),
                        insn_addr.eq(csr.insn_addr),
                        insn_count.eq(csr.insn_count),
                        bad_window.eq(
                            (csr.window_base[:align_shift] != 0)
                            | (csr.window_limit < csr.window_base)
                            | (csr.insn_addr[:beat_shift] != 0)
                        ),
                    ]
                    m.next = "QUIET"
            with m.State("QUIET"):
                for t in (wport.timeout, rport.timeout):
                    with m.If(t.valid):
                        finish(t.code, t.pc, t.unit)
                with m.If(rport.quiet & wport.quiet):
                    with m.If(bad_window):
                        finish(Error.BAD_WINDOW, 0)
                    with m.Elif(insn_count == 0):
                        finish(Error.NONE, 0)
                    with m.Else():
                        m.d.sync += running.eq(1)
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(Cat(f.valid for f in faults).any()):
                    for f in reversed(faults):
                        with m.If(f.valid):
                            finish(f.code, f.pc, f.unit)
                with m.Elif(quiet_for == STUCK_CYCLES):
                    stopped_on = fetch.error != Error.NONE
                    code = Mux(stopped_on, fetch.error, Mux(left, Error.DEADLOCK, Error.NONE))
                    finish(code, fetch.dispatched)
        return m
