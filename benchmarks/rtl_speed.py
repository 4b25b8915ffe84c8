"""Convolution speed on the accelerator: every conv layer shape of ResNet-20 and ResNet-18.

For each distinct conv shape (random rmsmp-ratio weights, random inputs), compiled for a board
preset and run on the Verilated RTL (bit-exact against the golden model), it prints:

* MAC/cycle against the array's peak;
* the occupancy the shape allows (output channels over the PE row slots they occupy, input
  channels over the column lanes), and the utilisation against that bound;
* DMA bytes moved against the minimum (weights once + input map once + output map once);
* simulated cycles per second of the Verilator model.

Writes benchmarks/results/rtl_speed.json; ``--readme`` rewrites the README's table from it.
``--whole`` reports whole networks instead (``benchmarks/whole_network.py``).
``--backend golden`` prints the DMA and shape columns without RTL cycles (no Verilator needed)
and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from readme import replace_block

from rmsmp.arch import AccelConfig, numerics
from rmsmp.compiler.ir import IntGraph, IntLayer
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "rtl_speed.json"

# (network, name, in channels, out channels, input H=W, kernel, stride, padding)
SHAPES = [
    ("resnet20", "conv1", 3, 16, 32, 3, 1, 1),
    ("resnet20", "layer1.conv", 16, 16, 32, 3, 1, 1),
    ("resnet20", "layer2.0.conv1", 16, 32, 32, 3, 2, 1),
    ("resnet20", "layer2.conv", 32, 32, 16, 3, 1, 1),
    ("resnet20", "layer3.0.conv1", 32, 64, 16, 3, 2, 1),
    ("resnet20", "layer3.conv", 64, 64, 8, 3, 1, 1),
    ("resnet18", "conv1", 3, 64, 224, 7, 2, 3),
    ("resnet18", "layer1.conv", 64, 64, 56, 3, 1, 1),
    ("resnet18", "layer2.0.conv1", 64, 128, 56, 3, 2, 1),
    ("resnet18", "layer2.0.downsample", 64, 128, 56, 1, 2, 0),
    ("resnet18", "layer2.conv", 128, 128, 28, 3, 1, 1),
    ("resnet18", "layer3.0.conv1", 128, 256, 28, 3, 2, 1),
    ("resnet18", "layer3.0.downsample", 128, 256, 28, 1, 2, 0),
    ("resnet18", "layer3.conv", 256, 256, 14, 3, 1, 1),
    ("resnet18", "layer4.0.conv1", 256, 512, 14, 3, 2, 1),
    ("resnet18", "layer4.0.downsample", 256, 512, 14, 1, 2, 0),
    ("resnet18", "layer4.conv", 512, 512, 7, 3, 1, 1),
]


def conv_graph(
    cfg: AccelConfig, cin: int, cout: int, hw: int, k: int, s: int, p: int, seed: int = 0
) -> IntGraph:
    """One conv layer, its rows split between the config's formats by the group ratio."""
    rng = np.random.default_rng(seed)
    counts = [round(cout * g.rows / cfg.rows) for g in cfg.groups]
    counts[0] += cout - sum(counts)
    fmts = [g.fmt for g, c in zip(cfg.groups, counts, strict=True) for _ in range(c)]
    w = np.stack([rng.choice(numerics.weight_format(f).levels(), size=(cin, k, k)) for f in fmts])
    mult, shift = numerics.requant_multiplier(1.0 / (8 * cin * k * k))
    layer = IntLayer(
        "conv",
        "conv",
        w,
        fmts,
        np.zeros(cout, np.int64),
        np.full(cout, mult),
        np.full(cout, shift),
        0,
        127,
        1.0,
        1.0,
        (s, s),
        (p, p),
    )
    return IntGraph([layer], (cin, hw, hw), 1.0, input_lo=0, input_hi=127)


def markdown(d: dict) -> str:
    """The RTL rows of rtl_speed.json as the README's table."""
    lines = [
        f"`{d['board']}` RTL (config {d['config_hash']}, {d['peak_macs_per_cycle']} MAC/cycle "
        f"peak, {d['clock_mhz']:g} MHz), batch 1, from `{d['command']}`:",
        "",
        "| layer (Cin->Cout, HxW, k/s) | MAC/cycle | of peak | shape allows | of that | "
        "DMA / min | cycles | sim cycles/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in d["layers"]:
        cin, cout, hw, k, s, _ = r["shape"]
        lines.append(
            f"| {r['layer']} ({cin}->{cout}, {hw}x{hw}, {k}/{s}) | {r['macs_per_cycle']:.1f} | "
            f"{r['utilization']:.0%} | {r['shape_occupancy']:.0%} | {r['of_shape']:.0%} | "
            f"{r['dma_over_min']:.2f} | {r['cycles']:,} | {r['sim_cycles_per_s'] / 1e3:.0f}k |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--board", default="pynq-z1")
    p.add_argument("--backend", default="rtl", choices=["rtl", "golden"])
    p.add_argument("--only", default="", help="comma-separated network names (resnet20,resnet18)")
    p.add_argument("--readme", action="store_true", help="only rewrite the README's table")
    p.add_argument(
        "--whole",
        action="store_true",
        help="whole ResNet-20 and ResNet-18 instead of single layers (benchmarks/whole_network.py)",
    )
    args, rest = p.parse_known_args()
    if rest and not args.whole:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.whole:
        import whole_network

        return whole_network.main(["--board", args.board, *rest])
    if args.readme:
        replace_block("rtl-speed-table", markdown(json.loads(JSON.read_text())))
        return 0
    cfg = AccelConfig.for_board(args.board)
    nets = set(args.only.split(",")) if args.only else {"resnet20", "resnet18"}
    rows = []
    head = (
        f"{'layer':<30}{'MAC/cyc':>8}{'peak':>6}{'util':>7}{'shape':>7}{'of shape':>9}"
        f"{'DMA/min':>8}{'cycles':>11}{'sim c/s':>10}"
    )
    print(f"{args.board} (config {cfg.hash}), backend {args.backend}")
    print(head)
    for net, name, cin, cout, hw, k, s, pad in SHAPES:
        if net not in nets:
            continue
        graph = conv_graph(cfg, cin, cout, hw, k, s, pad)
        prog = lower(graph, cfg, batch=1)
        rec = prog.layers[0]
        x = np.random.default_rng(1).integers(0, 128, size=(1, cin, hw, hw))
        row = {
            "layer": f"{net}.{name}",
            "shape": [cin, cout, hw, k, s, pad],
            "macs": rec.macs,
            "shape_occupancy": rec.macs / rec.array_macs,
            "dma_bytes": rec.dma_bytes,
            "min_dma_bytes": rec.min_dma_bytes,
            "dma_over_min": rec.dma_bytes / rec.min_dma_bytes,
            "order": rec.order,
            "x_tiles": rec.x_tiles,
            "w_groups": rec.w_groups,
        }
        if args.backend == "rtl":
            from rmsmp.sim.verilator import RtlDevice

            dev = RtlDevice(cfg, prog.window_size)
            c0, t0 = dev.sim_cycles, time.perf_counter()
            res = run_with_stats(prog, x, device=dev)
            wall = time.perf_counter() - t0
            sim_cycles = dev.sim_cycles - c0
            dev.close()
            gold = run_with_stats(prog, x, backend="golden")
            if not np.array_equal(res.output, gold.output):
                raise SystemExit(f"{net}.{name}: RTL and golden disagree")
            mpc = rec.macs / res.total_cycles
            row.update(
                cycles=res.total_cycles,
                mac_cycles=res.mac_cycles,
                dma_beats=res.dma_beats,
                load_cycles=res.load_cycles,
                store_cycles=res.store_cycles,
                macs_per_cycle=mpc,
                utilization=mpc / cfg.peak_macs_per_cycle,
                of_shape=mpc / (cfg.peak_macs_per_cycle * row["shape_occupancy"]),
                sim_cycles_per_s=sim_cycles / wall,
            )
        rows.append(row)
        r = row
        if "cycles" in r:
            print(
                f"{r['layer']:<30}{r['macs_per_cycle']:>8.1f}{cfg.peak_macs_per_cycle:>6}"
                f"{r['utilization']:>7.0%}{r['shape_occupancy']:>7.0%}{r['of_shape']:>9.0%}"
                f"{r['dma_over_min']:>8.2f}{r['cycles']:>11}{r['sim_cycles_per_s']:>10.3g}"
            )
        else:
            print(
                f"{r['layer']:<30}{'-':>8}{cfg.peak_macs_per_cycle:>6}{'-':>7}"
                f"{r['shape_occupancy']:>7.0%}{'-':>9}{r['dma_over_min']:>8.2f}"
            )
    out = {
        "board": args.board,
        "config_hash": cfg.hash,
        "backend": args.backend,
        "peak_macs_per_cycle": cfg.peak_macs_per_cycle,
        "clock_mhz": cfg.clock_mhz,
        "layers": rows,
        "machine": platform.processor() or platform.machine(),
        "command": f"python benchmarks/rtl_speed.py --board {args.board} --backend {args.backend}",
    }
    RESULTS.mkdir(exist_ok=True)
    if args.backend == "rtl":
        JSON.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
