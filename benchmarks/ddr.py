"""Where the DMA time goes, and what the board's DDR and a second HP port change (issue 17, item 5).

For ResNet-20 and ResNet-18 on every board preset (compiled as benchmarks/e2e.py compiles them)
it splits the DMA traffic by what moves: weights (W and their requant parameters Q), input
activations (X), residual inputs (R), output stores, instructions. On the one read port each
read beat is one cycle, so a preset whose read beats come near its cycles is read-bound.

Then it runs the cycle model four ways: the RTL as built (one HP port; the harness serves a beat
per cycle), the same held to the board's DDR (``Board.ddr_gbps``: reads and writes together,
per 1024-cycle window, ``sim.cycles.ddr_capped``), and, as a projection of hardware not built,
a second HP port under the load unit (``read_ports=2``: a load's beats two per cycle), with and
without the DDR cap. It prints a table and writes benchmarks/results/ddr.json; ``--readme``
rewrites the README's ddr-table block from that JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from e2e import BOARDS, NETWORKS, board_of, graph_for, presets
from readme import replace_block

from rmsmp.arch import AccelConfig, isa, layout
from rmsmp.arch.isa import Buf, Opcode
from rmsmp.boards import devices
from rmsmp.compiler.lower import lower
from rmsmp.sim.cycles import CycleModel, ddr_capped, issue_cycles

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "ddr.json"
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


def run(cfg: AccelConfig, insns: list[isa.Insn], read_ports: int, ddr: float) -> tuple[int, int]:
    """Cycles of the run with ``read_ports``, then held to ``ddr`` beats per cycle."""
    model = CycleModel(cfg, insns, read_ports=read_ports)
    cycles = model.run().cycles
    return cycles, ddr_capped(model.transfers, cycles, ddr)


def measure(net: str, cfg: AccelConfig) -> dict:
    """One network on one preset: traffic by kind, array cycles, the four model runs."""
    prog = lower(graph_for(net, cfg), cfg, batch=1)
    insns = [isa.decode(cfg, w) for w in isa.from_bytes(cfg, prog.segments["insn"].data)]
    board = devices.board(board_of(cfg))
    ddr = board.ddr_beats_per_cycle(cfg)
    row = {
        "network": net,
        "preset": cfg.name,
        "config_hash": cfg.hash,
        "clock_mhz": cfg.clock_mhz,
        "ddr_gbps": board.ddr_gbps,
        "hp_port_gbps": cfg.axi_data_bits // 8 * cfg.clock_mhz / 1e3,
        "ddr_beats_per_cycle": ddr,
        "beats": traffic(cfg, insns),
        "array_cycles": sum(issue_cycles(cfg, i) for i in insns if i.op is Opcode.GEMM),
    }
    for ports in (1, 2):
        cycles, capped = run(cfg, insns, ports, ddr)
        row[f"cycles_{ports}port"], row[f"ddr_cycles_{ports}port"] = cycles, capped
        row[f"ddr_ms_{ports}port"] = capped / cfg.clock_mhz / 1e3
    return row


def markdown(d: dict) -> str:
    """The README's ddr-table block from ddr.json."""
    lines = [
        f"From `{d['command']}` (cycle model; beats of 8 bytes; DDR = the board's "
        f"{devices.DDR_EFFICIENCY:.0%} of peak, reads and writes together; 2 ports is a "
        "projection, not built):",
        "",
        "| preset | network | weights | activations | residual | stores | instructions | "
        "array cycles | 1 port | + DDR | 2 ports | + DDR | 2 ports gain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        b = r["beats"]
        lines.append(
            f"| {r['preset']} | {r['network']} | "
            + " | ".join(f"{b[k]:,}" for k in KINDS)
            + f" | {r['array_cycles']:,} | {r['cycles_1port']:,} | "
            f"{r['ddr_cycles_1port']:,} ({r['ddr_ms_1port']:.2f} ms) | {r['cycles_2port']:,} | "
            f"{r['ddr_cycles_2port']:,} ({r['ddr_ms_2port']:.2f} ms) | "
            f"{r['ddr_cycles_1port'] / r['ddr_cycles_2port']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--board", action="append", choices=BOARDS, help="default: every board")
    p.add_argument("--only", default=",".join(NETWORKS), help="networks, comma separated")
    p.add_argument("--readme", action="store_true", help="only rewrite the README's table")
    args = p.parse_args(argv)
    if args.readme:
        replace_block("ddr-table", markdown(json.loads(JSON.read_text())))
        return 0
    nets = args.only.split(",")
    if unknown := set(nets) - set(NETWORKS):
        raise SystemExit(f"unknown network(s) {sorted(unknown)}; use {sorted(NETWORKS)}")
    old = json.loads(JSON.read_text()) if JSON.is_file() else {"runs": []}
    rows = {(r["preset"], r["network"]): r for r in old["runs"]}
    for b in args.board or BOARDS:
        for cfg in presets(b):
            for net in nets:
                t0 = time.perf_counter()
                r = rows[(cfg.name, net)] = measure(net, cfg)
                reads = sum(v for k, v in r["beats"].items() if k != "stores")
                print(
                    f"{cfg.name:>20} {net:>8}: reads {reads:>9,} beats (W {r['beats']['weights']:,}"
                    f", X {r['beats']['activations']:,}, R {r['beats']['residual']:,}), writes "
                    f"{r['beats']['stores']:>9,}; array {r['array_cycles']:>9,}; 1 port "
                    f"{r['cycles_1port']:>9,} (DDR {r['ddr_cycles_1port']:,}); 2 ports "
                    f"{r['cycles_2port']:>9,} (DDR {r['ddr_cycles_2port']:,}) "
                    f"[{time.perf_counter() - t0:.0f} s]",
                    flush=True,
                )
    order = [c.name for b in BOARDS for c in presets(b)]
    runs = sorted(
        (r for r in rows.values() if r["preset"] in order),
        key=lambda r: (order.index(r["preset"]), list(NETWORKS).index(r["network"])),
    )
    RESULTS.mkdir(exist_ok=True)
    JSON.write_text(
        json.dumps({"runs": runs, "command": "python benchmarks/ddr.py"}, indent=1) + "\n"
    )
    print(f"wrote {JSON}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
