"""End to end: ResNet-20 and ResNet-18 on every board preset, from the cycle model.

For each preset of a board (the mixed array, and the Fixed-4-only baselines where they exist:
``BOARD-fixed4-dsp``, ``BOARD-fixed4-fill``) both networks are quantized post-training at the
preset's row ratio (random weights: cycles depend on shapes and ratios only), compiled into one
Program (batch 1) and run on the golden backend, whose counters are the cycle model's
(``rmsmp.sim.cycles``: equal to the RTL's on random programs, within a few cycles on whole
networks). ``--rtl`` also runs ResNet-20 on the Verilated RTL of each mixed preset and records
both counts.

Per run it records cycles, latency and frames/s at the preset's clock, useful MAC/cycle against
the peak, DMA bytes, the board latency (the model's cycles stretched wherever the beats moved in
a 1024-cycle window, reads and writes together, need longer on the board's DDR,
``sim.cycles.ddr_capped``: the harness serves a beat per cycle each way, a PYNQ-Z1's 16-bit
DDR3 about 1.6 GB/s in all, 1.3 beats per cycle at 150 MHz), and what bounds the time: the array's
issue cycles (MACs, plus the cycles a short GEMM waits for the requant lanes) and the DMA beats
(one 64-bit beat per cycle on one HP port), each against the total; and benchmarks/ddr.py's
split of the DMA beats by what they move and its projection of a second HP port. It writes
benchmarks/results/e2e.json, a roofline plot (benchmarks/results/roofline.png: GMAC/s against
MAC per DDR byte, under each preset's compute and one-HP-port roofs) and, with ``--readme``, the
README's e2e table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import ddr
import numpy as np
from readme import replace_block

from rmsmp.arch import PRESETS, AccelConfig, isa, layout
from rmsmp.arch.isa import Opcode
from rmsmp.boards import devices
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.sim.cycles import issue_cycles

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "e2e.json"
PLOT = RESULTS / "roofline.png"
BOARDS = ("pynq-z1", "zc706")
BASELINES = ("fixed4-dsp", "fixed4-fill")
"""Preset name suffixes of the Fixed-4-only designs the mixed presets are compared with."""
NETWORKS = {"resnet20": (3, 32, 32), "resnet18": (3, 224, 224)}
ACT_BITS = 4
"""Activation bits after each ReLU (the paper's A4)."""


def board_of(cfg: AccelConfig) -> str:
    """The board a preset is sized for (its name's prefix)."""
    return next(b for b in BOARDS if cfg.name == b or cfg.name.startswith(f"{b}-"))


def presets(board: str) -> list[AccelConfig]:
    """The board's mixed preset, then whichever baselines exist."""
    names = [board] + [f"{board}-{b}" for b in BASELINES]
    return [PRESETS[n] for n in names if n in PRESETS]


def graph_for(net: str, cfg: AccelConfig):
    """``net`` with seeded random weights, quantized post-training at ``cfg``'s row ratio."""
    import torch

    import rmsmp
    from rmsmp.quant.export import export
    from rmsmp.quant.frontend import calibration_batch
    from rmsmp.quant.models.resnet_cifar import resnet20
    from rmsmp.quant.models.resnet_imagenet import resnet18

    torch.manual_seed(0)
    model = (resnet20 if net == "resnet20" else resnet18)().eval()
    x = calibration_batch(NETWORKS[net])
    return export(rmsmp.quantize(model, x, ratio=cfg, act_bits=ACT_BITS))


def instructions(prog) -> list[isa.Insn]:
    """The Program's instructions, decoded (batch 1 runs each once)."""
    cfg = prog.config
    return [isa.decode(cfg, w) for w in isa.from_bytes(cfg, prog.segments["insn"].data)]


def static_counts(prog) -> tuple[int, int]:
    """The Program's array issue cycles (MACs and requant waits) and its write-port beats,
    summed over its instructions."""
    cfg, insns = prog.config, instructions(prog)
    issue = sum(issue_cycles(cfg, i) for i in insns if i.op is Opcode.GEMM)
    out_beats = layout.entry_beats(cfg, layout.Entry.OUT)
    stores = sum(i.y_size * i.x_size * out_beats for i in insns if i.op is Opcode.STORE)
    return issue, stores


def measure(net: str, cfg: AccelConfig, rtl: bool) -> dict:
    """Compile ``net`` for ``cfg`` and count one image on the golden backend (and the RTL)."""
    graph = graph_for(net, cfg)
    t0 = time.perf_counter()
    prog = lower(graph, cfg, batch=1)
    t_compile = time.perf_counter() - t0
    x = np.random.default_rng(1).normal(0, 1, size=(1, *NETWORKS[net])).astype(np.float32)
    t0 = time.perf_counter()
    res = run_with_stats(prog, x)
    t_model = time.perf_counter() - t0
    cycles = res.total_cycles
    beat_bytes = cfg.axi_data_bits // 8
    row = {
        "network": net,
        "preset": cfg.name,
        "config_hash": cfg.hash,
        "clock_mhz": cfg.clock_mhz,
        "peak_macs_per_cycle": cfg.peak_macs_per_cycle,
        "cycles": cycles,
        "latency_ms": cycles / cfg.clock_mhz / 1000,
        "fps": cfg.clock_mhz * 1e6 / cycles,
        "macs": prog.useful_macs,
        "macs_per_cycle": prog.useful_macs / cycles,
        "utilization": prog.useful_macs / cycles / cfg.peak_macs_per_cycle,
        "mac_cycles": res.mac_cycles,
        "dma_beats": res.dma_beats,
        "dma_bytes": res.dma_beats * beat_bytes,
        "compile_s": t_compile,
        "model_s": t_model,
    }
    row["array_cycles"], row["write_beats"] = static_counts(prog)
    row |= ddr.project(cfg, instructions(prog), devices.board(board_of(cfg)))
    if row["cycles_1port"] != cycles:
        raise SystemExit(f"{net} on {cfg.name}: the cycle model and the golden backend differ")
    row["board_latency_ms"] = row["ddr_cycles_1port"] / cfg.clock_mhz / 1000
    row["bound"] = bound(row)
    if rtl:
        hw = run_with_stats(prog, x, backend="rtl")
        if not np.array_equal(hw.output, res.output):
            raise SystemExit(f"{net} on {cfg.name}: RTL and golden outputs differ")
        row["rtl_cycles"] = hw.total_cycles
        row["model_error"] = (cycles - hw.total_cycles) / hw.total_cycles
    return row


def bound(r: dict) -> str:
    """What limits a run: the array (issue cycles, requant waits named), or DMA (the busier of
    the read and the write port, one beat per cycle each), or neither alone (control:
    instruction fetch, token waits, pipeline drains)."""
    reads = r["dma_beats"] - r["write_beats"]
    shares = {
        "compute": r["mac_cycles"] / r["cycles"],
        "requant": (r["array_cycles"] - r["mac_cycles"]) / r["cycles"],
        "DMA": max(reads, r["write_beats"]) / r["cycles"],
    }
    top = max(shares, key=shares.get)
    parts = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
    return f"{top if shares[top] > 0.6 else 'control/overlap'} ({parts})"


def speedups(rows: list[dict]) -> list[dict]:
    """Each mixed preset over each baseline, per network: the board latency ratio, and the
    cycle ratio (the arrays alone, apart from the clocks the presets are backed at)."""
    out = []
    by = {(r["preset"], r["network"]): r for r in rows}
    for board in BOARDS:
        for b, net in ((b, n) for b in BASELINES for n in NETWORKS):
            mixed, base = by.get((board, net)), by.get((f"{board}-{b}", net))
            if mixed and base:
                speedup = base["board_latency_ms"] / mixed["board_latency_ms"]
                out.append(
                    {
                        "mixed": mixed["preset"],
                        "baseline": base["preset"],
                        "network": net,
                        "speedup": speedup,
                        "cycle_speedup": base["cycles"] / mixed["cycles"],
                    }
                )
    return out


def plot(rows: list[dict]) -> Path:
    """Roofline per board: achieved GMAC/s against MAC per DDR byte, with each preset's compute
    roof (peak MAC/cycle x clock), one HP port's read roof (8 bytes x clock) and the board's DDR
    (reads and writes together)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BOARDS), figsize=(6 * len(BOARDS), 4.5), squeeze=False)
    for ax, board in zip(axes[0], BOARDS, strict=True):
        mine = [r for r in rows if r["preset"].startswith(board)]
        xs = np.logspace(0, 3, 100)
        for cfg in presets(board):
            peak = cfg.peak_macs_per_cycle * cfg.clock_mhz / 1e3
            bw = cfg.axi_data_bits // 8 * cfg.clock_mhz / 1e3  # GB/s on one HP port
            (line,) = ax.plot(xs, np.minimum(peak, bw * xs), label=f"{cfg.name} roof")
            for r in (r for r in mine if r["preset"] == cfg.name):
                gmacs = r["macs"] / (r["latency_ms"] * 1e6)
                ax.plot(r["macs"] / r["dma_bytes"], gmacs, "o", color=line.get_color())
                ax.annotate(r["network"], (r["macs"] / r["dma_bytes"], gmacs), fontsize=7)
        ddr = devices.board(board).ddr_gbps
        ax.plot(xs, ddr * xs, "k--", label=f"DDR {ddr:.2f} GB/s")
        ax.set(xscale="log", yscale="log", title=board, xlabel="MAC per DDR byte")
        ax.set_ylabel("GMAC/s")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    return PLOT


def markdown(d: dict) -> str:
    """The README's e2e table and speedups from e2e.json."""
    lines = [
        f"From `{d['command']}` (cycle model; batch 1; one 64-bit HP port at the preset clock):",
        "",
        "| preset | clock | peak MAC/cycle | network | cycles | latency | board DDR | frames/s | "
        "MAC/cycle | of peak | DMA | bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        lines.append(
            f"| {r['preset']} | {r['clock_mhz']:g} MHz | {r['peak_macs_per_cycle']} | "
            f"{r['network']} | {r['cycles']:,} | {r['latency_ms']:.2f} ms | "
            f"{r['board_latency_ms']:.2f} ms | {r['fps']:,.0f} | "
            f"{r['macs_per_cycle']:.0f} | {r['utilization']:.0%} | "
            f"{r['dma_bytes'] / 2**20:.1f} MiB | {r['bound']} |"
        )
    if d["speedups"]:
        lines += [
            "",
            "| mixed preset | over | network | speedup (time) | in cycles |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['mixed']} | {s['baseline']} | {s['network']} | {s['speedup']:.2f}x | "
            f"{s['cycle_speedup']:.2f}x |"
            for s in d["speedups"]
        ]
    rtl = [r for r in d["runs"] if "rtl_cycles" in r]
    if rtl:
        lines += [""] + [
            f"RTL check, {r['network']} on {r['preset']}: {r['rtl_cycles']:,} cycles "
            f"(model {r['model_error']:+.3%})."
            for r in rtl
        ]
    return "\n".join(lines) + "\n"


def networks(only: str) -> list[str]:
    """The comma-separated network names of ``--only``, checked."""
    nets = only.split(",")
    if unknown := set(nets) - set(NETWORKS):
        raise SystemExit(f"unknown network(s) {sorted(unknown)}; use {sorted(NETWORKS)}")
    return nets


def sweep(
    path: Path, boards: list[str], nets: list[str], run: Callable[[str, AccelConfig], dict]
) -> list[dict]:
    """``run(net, cfg)`` for every preset of ``boards`` and every network of ``nets``, merged
    into the runs the JSON at ``path`` already holds; in board, preset and network order."""
    old = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    rows = {(r["preset"], r["network"]): r for r in old["runs"]}
    for b in boards:
        for cfg in presets(b):
            for net in nets:
                rows[(cfg.name, net)] = run(net, cfg)
    order = [c.name for b in BOARDS for c in presets(b)]
    return sorted(
        (r for r in rows.values() if r["preset"] in order),
        key=lambda r: (order.index(r["preset"]), list(NETWORKS).index(r["network"])),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--board", action="append", choices=BOARDS, help="default: every board")
    p.add_argument("--only", default=",".join(NETWORKS), help="networks, comma separated")
    p.add_argument("--rtl", action="store_true", help="also run ResNet-20 on each mixed RTL")
    p.add_argument("--readme", action="store_true", help="only rewrite the README's table")
    args = p.parse_args(argv)
    if args.readme:
        d = json.loads(JSON.read_text())
        replace_block("e2e-table", markdown(d))
        replace_block("ddr-table", ddr.markdown(d))
        return 0
    rtl = args.rtl

    def one(net: str, cfg: AccelConfig) -> dict:
        r = measure(net, cfg, rtl and net == "resnet20" and cfg.name == board_of(cfg))
        print(
            f"{cfg.name:>20} {net:>8}: {r['cycles']:>10,} cycles = "
            f"{r['latency_ms']:7.2f} ms at {cfg.clock_mhz:g} MHz, "
            f"{r['macs_per_cycle']:6.1f} MAC/cycle ({r['utilization']:.0%} of "
            f"{cfg.peak_macs_per_cycle}), DMA {r['dma_bytes'] / 2**20:.1f} MiB, "
            f"{r['bound']}",
            flush=True,
        )
        return r

    runs = sweep(JSON, args.board or BOARDS, networks(args.only), one)
    out = {
        "runs": runs,
        "speedups": speedups(runs),
        "command": "python benchmarks/e2e.py",
    }
    for s in out["speedups"]:
        print(f"{s['mixed']} over {s['baseline']} on {s['network']}: {s['speedup']:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    JSON.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {JSON} and {plot(runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
