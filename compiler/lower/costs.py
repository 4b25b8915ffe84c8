"""What a tiling costs: a pass's cycles estimated from the cycle model's closed forms
(``sim.cycles``: ``gemm_cycles``, ``store_cycles``, ``bursts``), with the DDR bytes it moves as
the tie-break.

The units overlap, so a pass takes about as long as its busiest resource: the compute unit
(its GEMMs), the shared read port (every instruction fetched, every load burst; each burst holds
one of ``max_outstanding`` slots from its address to its last beat), fetch's one dispatch at a
time, or the store unit; plus what cannot overlap: the loads before the first GEMM, and the last
store after the last GEMM. Running ``predict`` on every candidate would say the same more
exactly, at several times the compile time of a ResNet-18; tests/test_costs.py holds this
estimate against it."""

from __future__ import annotations

from ...arch import AccelConfig, isa, layout
from ...arch.isa import Buf, Opcode
from ...arch.layout import Entry
from ...arch.timing import CHECK_LATENCY, DDR_READ_LATENCY
from ...host.program import align
from ...sim.cycles import bursts, gemm_cycles, store_cycles
from ..tokens import Op
from .passes import Pass
from .records import dma_bytes
from .scheduling import Halves, Scheduler
from .tiling import Tiling

SEQUENCER_CYCLES = 2
"""Cycles a unit's sequencer adds to each instruction it runs back to back (pop, push)."""
DISPATCH_CYCLES = CHECK_LATENCY + 3
"""Fetch dispatches at most one instruction per this many cycles (take, check, dispatch)."""
ADDRESS_CYCLES = 2
"""Cycles from a read burst's grant to its address on the bus; its first beat comes
``DDR_READ_LATENCY`` later."""


class PassCosts:
    """Estimated cycles and DMA bytes of passes under tilings, each distinct one estimated once
    (a pass's instructions depend only on its tiling and whether it pools by max or adds a
    residual)."""

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg
        self.seen: dict[tuple[Tiling, bool, bool], tuple[int, int]] = {}

    def choose(self, p: Pass, tilings: list[Tiling]) -> Tiling:
        """The tiling of ``p`` with the fewest estimated cycles, then the fewest DMA bytes, then
        the first."""
        return min(tilings, key=lambda t: self.cost(p, t))

    def cost(self, p: Pass, t: Tiling) -> tuple[int, int]:
        """Estimated cycles of pass ``p`` under tiling ``t``, and its DMA bytes."""
        key = (t, p.max, p.res is not None)
        if key not in self.seen:
            ops = Scheduler(p, t, self.cfg, Halves()).run()
            self.seen[key] = estimate(self.cfg, p, t, ops), dma_bytes(self.cfg, ops)
        return self.seen[key]


def estimate(cfg: AccelConfig, p: Pass, t: Tiling, ops: list[Op]) -> int:
    """Cycles of pass ``p`` run alone as ``ops`` (its instructions in pass order)."""
    base = window(cfg, p, t)
    lat, slots = DDR_READ_LATENCY, cfg.max_outstanding
    fetch = cfg.insn_bits // cfg.axi_data_bits
    beats, held = len(ops) * fetch, len(ops) * (ADDRESS_CYCLES + lat + fetch)
    compute = store = last_store = 0
    first_gemm = None
    for o in ops:
        a = o.args
        if o.op is Opcode.GEMM:
            compute += gemm_cycles(cfg, isa.Insn(o.op, a)) + SEQUENCER_CYCLES
            if first_gemm is None:
                first_gemm = max(beats, held / slots) + ADDRESS_CYCLES + lat
        elif o.op in (Opcode.LOAD, Opcode.STORE):
            kind = Entry.OUT if o.op is Opcode.STORE else layout.BUF_ENTRY[Buf(a["buf"])]
            nb, eb = layout.entry_beats(cfg, kind), layout.entry_bytes(cfg, kind)
            addr = base[o.region] + o.offset
            b = bursts(cfg, addr, a["y_size"], a["x_size"] * nb, a["x_stride"] * eb)
            if o.op is Opcode.LOAD:
                beats += sum(b)
                held += sum(ADDRESS_CYCLES + lat + n for n in b)
            else:
                last_store = store_cycles(cfg, b, lat) + SEQUENCER_CYCLES
                store += last_store
    busiest = max(compute, beats, held / slots, len(ops) * DISPATCH_CYCLES, store)
    return round((first_gemm or 0) + busiest + last_store)


def window(cfg: AccelConfig, p: Pass, t: Tiling) -> dict[str | None, int]:
    """Byte offsets of the regions ``p`` touches, laid out as the window lays them out."""
    g, batch = t.geom, t.tiles[-1].b + 1
    regions = (
        ("w", Entry.W, g.n_tiles * g.w_chunks * g.kh * g.kw),
        ("q", Entry.Q, g.n_tiles),
        (p.src, Entry.X, batch * g.in_chunks * g.h * g.w),
        (p.res, Entry.X, batch * g.n_tiles * g.oh * g.ow),
        (p.dst, Entry.X, 0),
    )
    base, pos = {}, 0
    for region, kind, n in regions:
        base[region], pos = pos, align(pos + n * layout.entry_bytes(cfg, kind))
    return base
