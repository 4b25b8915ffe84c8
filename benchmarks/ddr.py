"""Where the DMA time goes, and what the board's DDR and a second HP port change (issue 17, item 5).

benchmarks/e2e.py calls ``project`` on every run it measures and writes what it returns into
e2e.json. It splits the run's DMA traffic by what moves: weights (W and their requant
parameters Q), input activations (X), residual inputs (R), output stores, instructions. On the
one read port each read beat takes a cycle, so a run whose read beats come near its cycles is
read-bound.

Then it runs the cycle model four ways: the RTL as built (one HP port; the harness serves a beat
per cycle each way), the same held to the board's DDR (``Board.ddr_gbps``: reads and writes
together, per 1024-cycle window, ``sim.cycles.ddr_capped``), and, as a projection of hardware
not built, a second HP port under the load unit (``read_ports=2``: a load's beats two per
cycle), with and without the DDR cap. ``markdown`` is the README's ddr-table block
(``python benchmarks/e2e.py --readme`` writes it).
"""

from __future__ import annotations

from rmsmp.arch import AccelConfig, isa, layout
from rmsmp.arch.isa import Buf, Opcode
from rmsmp.boards.devices import DDR_EFFICIENCY, Board
from rmsmp.sim.cycles import CycleModel, ddr_capped

KINDS = ("weights", "activations", "residual", "stores", "instructions")
"""What DMA moves: W and Q loads, X loads, R loads, STOREs, instruction reads."""
KIND_OF_BUF = {Buf.W: "weights", Buf.Q: "weights", Buf.X: "activations", Buf.R: "residual"}


def traffic(cfg: AccelConfig, insns: list[isa.Insn]) -> dict[str, int]:
    """Beats each kind of transfer moves in one run of ``insns``."""
    out = dict.fromkeys(KINDS, 0)
    out["instructions"] = len(insns) * cfg.insn_bits // cfg.axi_data_bits
    for i in insns:
        if i.op not in (Opcode.LOAD, Opcode.STORE):
            continue
        kind = layout.BUF_ENTRY[Buf(i.buf)] if i.op is Opcode.LOAD else layout.Entry.OUT
        n = i.y_size * i.x_size * layout.entry_beats(cfg, kind)
        out[KIND_OF_BUF[Buf(i.buf)] if i.op is Opcode.LOAD else "stores"] += n
    return out


def project(cfg: AccelConfig, insns: list[isa.Insn], board: Board) -> dict:
    """Traffic by kind and the four model runs: ``cycles_Nport`` with N read ports (1 is the
    RTL), ``ddr_cycles_Nport`` the same held to ``board``'s DDR."""
    ddr = board.ddr_beats_per_cycle(cfg)
    row = {
        "ddr_gbps": board.ddr_gbps,
        "hp_port_gbps": cfg.axi_data_bits // 8 * cfg.clock_mhz / 1e3,
        "ddr_beats_per_cycle": ddr,
        "beats": traffic(cfg, insns),
    }
    for ports in (1, 2):
        model = CycleModel(cfg, insns, read_ports=ports)
        cycles = model.run().cycles
        row[f"cycles_{ports}port"] = cycles
        row[f"ddr_cycles_{ports}port"] = ddr_capped(model.transfers, cycles, ddr)
    return row


def markdown(d: dict) -> str:
    """The README's ddr-table block from e2e.json."""
    lines = [
        f"From `{d['command']}` (cycle model; DMA beats of 8 bytes by what they move; DDR = "
        f"{DDR_EFFICIENCY:.0%} of the board's peak, reads and writes together; two ports is a "
        "projection of hardware not built):",
        "",
        "| preset | network | weights | activations | residual | stores | instructions | "
        "array cycles | 1 port | + DDR | 2 ports | + DDR | 2 ports gain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        b, mhz = r["beats"], r["clock_mhz"] * 1e3
        one, two = r["ddr_cycles_1port"], r["ddr_cycles_2port"]
        lines.append(
            f"| {r['preset']} | {r['network']} | "
            + " | ".join(f"{b[k]:,}" for k in KINDS)
            + f" | {r['array_cycles']:,} | {r['cycles_1port']:,} | {one:,} ({one / mhz:.2f} ms) "
            f"| {r['cycles_2port']:,} | {two:,} ({two / mhz:.2f} ms) | {one / two:.2f}x |"
        )
    return "\n".join(lines) + "\n"
