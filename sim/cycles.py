"""The cycle model: predicted CYCLES, MAC_CYCLES, DMA_BEATS, LOAD_CYCLES and STORE_CYCLES of a run.

It follows the core cycle by cycle at the level of its state machines, not its datapath: fetch
(one read of ``insn_bits`` per instruction, up to ``max_outstanding`` ahead; take, check for
``CHECK_LATENCY + 1`` cycles, dispatch), the three command queues, the four token counters, the
units' sequencers (take, pop, execute, push), the shared AXI read port (fetch before load, at
most ``max_outstanding`` bursts in flight, data in order one beat per cycle, the first beat
``ddr_latency`` cycles after the address) and the store unit's write port (the response half that
long after the last beat). What an instruction costs once it starts is a closed form of its
fields (``gemm_cycles``, ``store_cycles``); only loads and instruction reads share a resource, so
the simulation steps cycle by cycle only where something changes and jumps over the rest.

Like FINN's ``get_exp_cycles`` beside ``execute_node``, it sits beside the golden model's
reference semantics and is checked against the RTL's counters (tests/test_cycles.py). It assumes
the fixed-latency DDR of the Verilator harness; a board's DDR is slower and jittery.

Two knobs reach past the RTL, for projections only (benchmarks/ddr.py): ``read_ports`` lets a
load's data arrive that many beats per cycle (what a second HP port beside the first would give
a load path as wide: not built, the RTL has one port), and ``ddr_capped`` stretches a run where
the beats it moves, reads and writes together, exceed a board's DDR bandwidth.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..arch import AccelConfig, isa, layout
from ..arch.isa import Buf, Opcode, Unit
from ..arch.layout import Entry
from ..arch.timing import (
    CHECK_LATENCY,
    DDR_READ_LATENCY,
    MAC_LATENCY,
    REQUANT_LATENCY,
    STUCK_CYCLES,
)

PAGE_BYTES = 4096
"""An AXI burst never crosses a 4 KiB boundary."""
ACC_STAGE = 1 + MAC_LATENCY
"""Cycles from a pair's issue to its accumulate (the buffer read, then the MAC array)."""
FETCH_DELAY = 2
"""Cycles from the units leaving reset to fetch's first instruction read."""
RUN_OVERHEAD = 2 + STUCK_CYCLES
"""CYCLES beyond the core's last move: the shell's start (one cycle before the units leave
reset, one more before fetch asks) and the quiet cycles that end the run."""


@dataclass(frozen=True)
class Counts:
    """What a run's counter registers read: CYCLES, MAC_CYCLES, DMA_BEATS, LOAD/STORE_CYCLES."""

    cycles: int
    mac_cycles: int
    dma_beats: int
    load_cycles: int
    store_cycles: int


def bursts(cfg: AccelConfig, addr: int, rows: int, row_beats: int, stride: int) -> list[int]:
    """Beats of every burst of a 2-D transfer, as ``BurstGen`` splits it (rows back to back,
    each cut at ``max_burst`` beats and at 4 KiB boundaries)."""
    beat = cfg.axi_data_bits // 8
    out = []
    for y in range(rows):
        a, left = addr + y * stride, row_beats
        while left:
            n = min(left, cfg.max_burst, (PAGE_BYTES - a % PAGE_BYTES) // beat)
            out.append(n)
            a, left = a + n * beat, left - n
    return out


def _block(cfg: AccelConfig, i: isa.Insn, base: int) -> list[int]:
    """The bursts of a LOAD or STORE at window base ``base``."""
    kind = layout.BUF_ENTRY[Buf(i.buf)] if i.op is Opcode.LOAD else Entry.OUT
    beats, nbytes = layout.entry_beats(cfg, kind), layout.entry_bytes(cfg, kind)
    addr = base + i.dram * (cfg.axi_data_bits // 8)
    return bursts(cfg, addr, i.y_size, i.x_size * beats, i.x_stride * nbytes)


def issue_cycles(cfg: AccelConfig, i: isa.Insn) -> int:
    """Cycles a GEMM spends issuing: one pair per cycle, but with ``final`` an output's last pair
    waits until the requant lanes have taken the previous output (``rows / requant_lanes``
    cycles each)."""
    m, k = i.oh_count * i.ow_count, i.c_count * i.kh * i.kw
    if not i.final:
        return m * k
    return k + (m - 1) * max(k, cfg.rows // cfg.requant_lanes)


def gemm_cycles(cfg: AccelConfig, i: isa.Insn) -> int:
    """Cycles from a GEMM's start to its ``done``: issue, drain the array, then the requant
    lanes (``rows / requant_lanes`` cycles and ``REQUANT_LATENCY``) for a final one."""
    drain = ACC_STAGE + 2
    if i.final:
        drain += cfg.rows // cfg.requant_lanes + REQUANT_LATENCY
    return issue_cycles(cfg, i) + drain


def store_cycles(cfg: AccelConfig, burst_beats: list[int], ddr_latency: int) -> int:
    """Cycles from a STORE's start to its ``done``: bursts addressed one per cycle while at most
    ``max_outstanding`` are open (address to response), beats one per cycle from the third
    cycle on, each burst's after its address, the response ``ddr_latency // 2`` cycles after its
    last beat; done the cycle after the last response."""
    return store_schedule(cfg, burst_beats, ddr_latency)[0]


def store_schedule(
    cfg: AccelConfig, burst_beats: list[int], ddr_latency: int
) -> tuple[int, list[int]]:
    """``store_cycles``, and the cycle (from the STORE's start) of each burst's first beat."""
    open_until: deque[int] = deque()
    grant, beat, last_b = 0, 2, 0
    firsts = []
    for n in burst_beats:
        grant += 1
        while True:
            while open_until and open_until[0] < grant:
                open_until.popleft()
            if len(open_until) < cfg.max_outstanding:
                break
            grant = open_until[0] + 1
        beat = max(beat + 1, grant + 2)
        firsts.append(beat)
        beat += n - 1
        last_b = beat + 1 + ddr_latency // 2
        open_until.append(last_b)
    return last_b + 1, firsts


class _Unit:
    """A unit's sequencer: IDLE, POP, EXEC (until ``done_at``), PUSH; and its command queue."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.queue: deque[int] = deque()
        self.level = 0  # the queue's registered fill level
        self.state = "IDLE"
        self.cmd = -1
        self.done_at = 0
        self.started = 0
        self.busy_cycles = 0


class CycleModel:
    """Predicted counters of one run of ``insns`` (checked, in program order)."""

    def __init__(
        self,
        cfg: AccelConfig,
        insns: list[isa.Insn],
        window_base: int = 0,
        ddr_latency: int = DDR_READ_LATENCY,
        read_ports: int = 1,
    ) -> None:
        if ddr_latency < 0:
            raise ValueError(f"ddr_latency must be >= 0, got {ddr_latency}")
        if read_ports not in (1, 2):
            raise ValueError(f"read_ports must be 1 or 2, got {read_ports!r}")
        self.cfg, self.insns, self.base, self.lat = cfg, insns, window_base, ddr_latency
        self.insn_beats = cfg.insn_bits // cfg.axi_data_bits
        self.read_ports = read_ports
        self.transfers: list[tuple[int, int, int]] = []
        """After ``run``: every burst's data as (first cycle, cycles, beats), reads and writes."""

    def run(self) -> Counts:
        """Simulate the run and return its counters."""
        cfg, insns, lat = self.cfg, self.insns, self.lat
        n = len(insns)
        units = {u: _Unit(u) for u in (Unit.LOAD, Unit.COMPUTE, Unit.STORE)}
        tokens = dict.fromkeys(isa.TOKEN_COUNTERS, 0)
        # Fetch.
        req_idx, inflight, gen_valid_from = 0, 0, -1
        arrivals: deque[int] = deque()  # cycle each fetched instruction is in the FIFO
        f_state, f_until, dispatched = "TAKE", 0, 0
        # The shared read port: bursts in flight (their last beat), the R channel's next free cycle.
        occupied: deque[int] = deque()
        r_free = 0
        load_bursts: deque[int] = deque()
        load_valid_from = 0
        load_last = 0
        beats = n * self.insn_beats
        mac = 0
        t = last_change = FETCH_DELAY  # cycles from the units' reset release to fetch's first ask
        while True:
            changed = False
            # --- decisions at cycle t (all from the state at t) ---
            while occupied and occupied[0] < t:
                occupied.popleft()
            granted = None
            if len(occupied) < cfg.max_outstanding:
                if gen_valid_from >= 0 and gen_valid_from <= t:
                    granted = "fetch"
                elif load_bursts and load_valid_from <= t:
                    granted = "load"
            f_start = req_idx < n and inflight < cfg.max_outstanding
            f_start = f_start and gen_valid_from < 0
            f_take = f_dispatch = False
            if f_state == "TAKE":
                if dispatched == n:
                    f_state, changed = "STOP", True
                elif arrivals and arrivals[0] <= t:
                    f_take = True
            elif f_state == "DISPATCH":
                u = units[insns[dispatched].unit]
                f_dispatch = u.level < cfg.cmd_depth
            # Units.
            reads = {}
            pops: dict[str, int] = {}
            pushes: dict[str, int] = {}
            for u in units.values():
                reads[u.unit] = False
                if u.state == "IDLE":
                    if u.level:
                        reads[u.unit] = True
                elif u.state == "POP":
                    want = self._sides(u, "pop")
                    if all(tokens[c] > 0 for c in want):
                        for c in want:
                            pops[c] = 1
                        u.state, u.started, changed = "START", t, True
                elif u.state == "EXEC":
                    if u.done_at <= t:
                        u.state, changed = "DONE", True
                elif u.state == "PUSH":
                    want = self._sides(u, "push")
                    if all(tokens[c] < cfg.token_depth for c in want):
                        for c in want:
                            pushes[c] = 1
                        reads[u.unit] = u.level > 0
                        u.state, changed = "PUSHED", True
            # --- updates for t + 1 ---
            if granted == "fetch":
                start = max(t + 2 + lat, r_free)
                r_free = start + self.insn_beats
                self.transfers.append((start, self.insn_beats, self.insn_beats))
                occupied.append(r_free - 1)
                arrivals.append(r_free)
                gen_valid_from, changed = -1, True
            elif granted == "load":
                nb = load_bursts.popleft()
                start = max(t + 2 + lat, r_free)
                r_free = start + -(-nb // self.read_ports)
                self.transfers.append((start, r_free - start, nb))
                occupied.append(r_free - 1)
                load_valid_from, load_last, changed = t + 1, r_free - 1, True
                if not load_bursts:
                    units[Unit.LOAD].done_at = load_last + 1
            if f_start:
                gen_valid_from, req_idx, inflight, changed = t + 1, req_idx + 1, inflight + 1, True
            if f_take:
                arrivals.popleft()
                inflight -= 1
                f_state, f_until, changed = "CHECK", t + 1 + CHECK_LATENCY + 1, True
            elif f_state == "CHECK" and t + 1 >= f_until:
                f_state, changed = "DISPATCH", True
            if f_dispatch:
                u = units[insns[dispatched].unit]
                u.queue.append(dispatched)
                dispatched += 1
                f_state, changed = "TAKE", True
            for u in units.values():
                wrote = f_dispatch and insns[dispatched - 1].unit is u.unit
                if reads[u.unit]:
                    u.cmd = u.queue.popleft()
                    changed = True
                if u.state == "IDLE" and reads[u.unit]:
                    u.state = "POP"
                elif u.state == "START":
                    u.state = "EXEC"
                    i = insns[u.cmd]
                    if u.unit is Unit.LOAD:
                        b = _block(cfg, i, self.base)
                        beats += sum(b)
                        load_bursts.extend(b)
                        load_valid_from = t + 1
                        u.done_at = 1 << 62
                    elif u.unit is Unit.STORE:
                        b = _block(cfg, i, self.base)
                        beats += sum(b)
                        done, firsts = store_schedule(cfg, b, lat)
                        self.transfers += [(t + f, n, n) for f, n in zip(firsts, b, strict=True)]
                        u.done_at = t + done
                    elif i.op is Opcode.GEMM:
                        mac += i.oh_count * i.ow_count * i.c_count * i.kh * i.kw
                        u.done_at = t + gemm_cycles(cfg, i)
                    else:
                        u.done_at = t + 1
                elif u.state == "DONE":
                    u.state = "PUSH"
                    u.busy_cycles += t - u.started
                elif u.state == "PUSHED":
                    u.state = "POP" if reads[u.unit] else "IDLE"
                u.level += int(wrote) - int(reads[u.unit])
            for c in tokens:
                tokens[c] += pushes.get(c, 0) - pops.get(c, 0)

            # The end: nothing moves and no timer is left (fetch and every unit are stuck).
            if changed:
                last_change, t = t, t + 1
                continue
            t = self._next(t, units, arrivals, f_state, f_until, occupied)
            if t is None:
                break
        load, store = units[Unit.LOAD], units[Unit.STORE]
        return Counts(
            last_change + 1 + RUN_OVERHEAD, mac, beats, load.busy_cycles, store.busy_cycles
        )

    def _sides(self, u: _Unit, what: str) -> list[str]:
        """The counters ``u``'s current instruction pops (``what`` "pop") or pushes."""
        args = self.insns[u.cmd].args
        return [
            c for f, c in (isa.POPS if what == "pop" else isa.PUSHES)[u.unit].items() if args[f]
        ]

    @staticmethod
    def _next(t, units, arrivals, f_state, f_until, occupied) -> int | None:
        """The next cycle at which a timer can change anything (nothing changed at ``t``), or
        None if none can: the run is over."""
        cands = [u.done_at for u in units.values() if u.state == "EXEC" and u.done_at > t]
        if arrivals and arrivals[0] > t:
            cands.append(arrivals[0])
        if f_state == "CHECK":
            cands.append(f_until - 1)
        if occupied:
            cands.append(occupied[0] + 1)
        later = [c for c in cands if c > t]
        return min(later) if later else None


def predict(
    cfg: AccelConfig,
    insns: list[isa.Insn],
    window_base: int = 0,
    ddr_latency: int = DDR_READ_LATENCY,
) -> Counts:
    """The counters a run of ``insns`` (checked, in program order) leaves in the registers."""
    return CycleModel(cfg, insns, window_base, ddr_latency).run()


DDR_WINDOW = 1024
"""Cycles over which ``ddr_capped`` lets a board's DDR average its traffic: about what the HP
ports' FIFOs and the controller's queues (a few KiB) hold at a beat or two per cycle."""


def ddr_capped(
    transfers: list[tuple[int, int, int]],
    cycles: int,
    beats_per_cycle: float,
    window: int = DDR_WINDOW,
) -> int:
    """``cycles`` stretched where the DDR cannot keep up: every ``window`` cycles of the run
    take at least their beats (``transfers``, spread evenly over each burst's cycles) divided
    by the DDR's ``beats_per_cycle``. A projection, not a simulation: it assumes a stalled
    window delays only itself."""
    if not beats_per_cycle > 0:
        raise ValueError(f"beats_per_cycle must be positive, got {beats_per_cycle}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    span = max([cycles] + [a + d for a, d, _ in transfers])
    rate = np.zeros(span + 1)
    for a, d, n in transfers:
        rate[a] += n / d
        rate[a + d] -= n / d
    per_cycle = np.cumsum(rate)[:span]
    per_window = np.add.reduceat(per_cycle, np.arange(0, span, window))
    lengths = np.minimum(window, span - np.arange(0, span, window))
    stretch = np.maximum(lengths, per_window / beats_per_cycle) - lengths
    return cycles + int(np.ceil(stretch.sum()))
