"""Whole networks on the accelerator: ResNet-20 (our rmsmp QAT checkpoint) and ResNet-18
(ImageNet topology, 224x224, random weights quantized post-training at the preset's ratio), each
compiled into one Program and run from input to logits on the golden model and the Verilated RTL.

For each network it prints and records: compile time; RTL cycles per image, useful MAC/cycle
against the array's peak and against what the passes' shapes allow (their array cycles if the
array never waited); DMA bytes against the minimum; golden and RTL wall time; and that RTL,
golden and ``IntGraph.evaluate`` agree bit for bit. ``--images N`` also runs ResNet-20 on N
CIFAR-10 test images through the golden model and compares its top-1 with the integer graph's
(``--images 10000``: the whole test set).

Writes benchmarks/results/whole_network.json; ``--readme`` rewrites the README's table from it.
Run it through ``benchmarks/rtl_speed.py --whole`` or directly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from readme import replace_block

from rmsmp.arch import AccelConfig
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import open_device, run_with_stats

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "whole_network.json"
ROOT = Path(__file__).resolve().parent.parent


def resnet20_graph():
    """The committed QAT checkpoint's integer graph, and its CIFAR-10 test images."""
    from rmsmp.demo import CHECKPOINT
    from rmsmp.quant.frontend import graph_from_file

    return graph_from_file(CHECKPOINT, None)


def resnet18_graph(cfg: AccelConfig):
    """ResNet-18 with random weights, quantized post-training at ``cfg``'s row ratio."""
    import torch

    import rmsmp
    from rmsmp.quant.export import export
    from rmsmp.quant.frontend import calibration_batch
    from rmsmp.quant.models.resnet_imagenet import resnet18

    torch.manual_seed(0)
    model = resnet18().eval()
    return export(rmsmp.quantize(model, calibration_batch((3, 224, 224)), ratio=cfg, act_bits=7))


def measure(name: str, graph, cfg: AccelConfig, x: np.ndarray) -> dict:
    """Compile ``graph`` (batch 1), run ``x`` image by image on golden and RTL, and count."""
    t0 = time.perf_counter()
    prog = lower(graph, cfg, batch=1)
    t_compile = time.perf_counter() - t0
    ref = graph.evaluate(graph.quantize_input(x))
    out, cost = {}, {}
    for backend in ("golden", "rtl"):
        dev = open_device(prog, backend)
        t0 = time.perf_counter()
        try:
            runs = [run_with_stats(prog, x[i : i + 1], device=dev) for i in range(len(x))]
        finally:
            dev.close()
        cost[backend] = time.perf_counter() - t0
        out[backend] = np.concatenate([r.output for r in runs])
    if not (np.array_equal(out["rtl"], out["golden"]) and np.array_equal(out["rtl"], ref)):
        raise SystemExit(f"{name}: RTL, golden and IntGraph.evaluate disagree")
    n = len(x)
    cycles = sum(r.total_cycles for r in runs) / n
    useful, bound = prog.useful_macs, prog.shape_bound_cycles
    dma = sum(r.dma_bytes for r in prog.layers)
    least = sum(r.min_dma_bytes for r in prog.layers)
    return {
        "network": name,
        "images": n,
        "passes": len(prog.layers),
        "instructions": prog.insn_count,
        "compile_s": t_compile,
        "cycles_per_image": cycles,
        "latency_us": cycles / cfg.clock_mhz,
        "macs": useful,
        "macs_per_cycle": useful / cycles,
        "utilization": useful / cycles / cfg.peak_macs_per_cycle,
        "shape_bound_cycles": bound,
        "of_shape_bound": bound / cycles,
        "mac_busy": sum(r.mac_cycles for r in runs) / n / cycles,
        "dma_bytes": dma,
        "min_dma_bytes": least,
        "dma_over_min": dma / least,
        "golden_s_per_image": cost["golden"] / n,
        "rtl_s_per_image": cost["rtl"] / n,
        "bit_exact": True,
    }


def golden_accuracy(graph, cfg: AccelConfig, images: int) -> dict:
    """ResNet-20 top-1 over ``images`` CIFAR-10 test images: golden model vs the integer graph."""
    from rich.progress import track

    from rmsmp.quant.data import cifar10_test

    x, labels = cifar10_test(n=images if images < 10_000 else None)
    prog = lower(graph, cfg, batch=1)
    dev = open_device(prog, "golden")
    chunk = 50
    gold, ref = [], []
    t0 = time.perf_counter()
    try:
        for i in track(range(0, len(x), chunk), description="golden, CIFAR-10 test"):
            xs = x[i : i + chunk]
            gold.append(run_with_stats(prog, xs, device=dev).output)
            ref.append(graph.evaluate(graph.quantize_input(xs)))
    finally:
        dev.close()
    gold, ref = np.concatenate(gold), np.concatenate(ref)
    return {
        "images": len(x),
        "top1_golden": 100 * float((gold.argmax(1) == labels).mean()),
        "top1_integer_graph": 100 * float((ref.argmax(1) == labels).mean()),
        "logits_identical": bool(np.array_equal(gold, ref)),
        "seconds": time.perf_counter() - t0,
    }


def markdown(d: dict) -> str:
    """The README's whole-network table from whole_network.json."""
    lines = [
        f"`{d['board']}` RTL ({d['peak_macs_per_cycle']} MAC/cycle peak, {d['clock_mhz']:g} MHz), "
        f"batch 1, from `{d['command']}`:",
        "",
        "| network | passes | cycles/image | latency | MAC/cycle | of peak | of shape bound | "
        "DMA / min | compile | RTL sim |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["networks"]:
        lines.append(
            f"| {r['network']} | {r['passes']} | {r['cycles_per_image']:,.0f} | "
            f"{r['latency_us'] / 1000:.2f} ms | {r['macs_per_cycle']:.1f} | "
            f"{r['utilization']:.0%} | {r['of_shape_bound']:.0%} | {r['dma_over_min']:.2f} | "
            f"{r['compile_s']:.1f} s | {r['rtl_s_per_image']:.1f} s/image |"
        )
    acc = d.get("accuracy")
    if acc:
        lines += [
            "",
            f"ResNet-20 on {acc['images']:,} CIFAR-10 test images through the golden model: "
            f"top-1 {acc['top1_golden']:.2f}% (the integer graph: {acc['top1_integer_graph']:.2f}%"
            f"; logits identical: {'yes' if acc['logits_identical'] else 'no'}).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--board", default="pynq-z1")
    p.add_argument("--samples", type=int, default=2, help="images per network on golden and RTL")
    p.add_argument("--images", type=int, default=0, help="ResNet-20 golden accuracy images")
    p.add_argument("--only", default="resnet20,resnet18")
    p.add_argument("--readme", action="store_true", help="only rewrite the README's table")
    args = p.parse_args(argv)
    if args.readme:
        replace_block("whole-network-table", markdown(json.loads(JSON.read_text())))
        return 0
    cfg = AccelConfig.for_board(args.board)
    old = json.loads(JSON.read_text()) if JSON.is_file() else {}
    rows = {r["network"]: r for r in old.get("networks", []) if old.get("board") == args.board}
    rng = np.random.default_rng(0)
    for net in args.only.split(","):
        if net == "resnet20":
            from rmsmp.quant.data import cifar10_test

            graph, (x, _) = resnet20_graph(), cifar10_test(n=args.samples, seed=3)
        elif net == "resnet18":
            graph = resnet18_graph(cfg)
            x = rng.normal(0, 1, size=(args.samples, 3, 224, 224)).astype(np.float32)
        else:
            raise SystemExit(f"unknown network {net!r}; use resnet20 and/or resnet18")
        rows[net] = r = measure(net, graph, cfg, x)
        print(
            f"{net}: {r['passes']} passes, compiled in {r['compile_s']:.2f} s; "
            f"{r['cycles_per_image']:,.0f} cycles/image ({r['latency_us'] / 1000:.2f} ms at "
            f"{cfg.clock_mhz:g} MHz); {r['macs_per_cycle']:.1f} MAC/cycle = "
            f"{r['utilization']:.1%} of peak, {r['of_shape_bound']:.1%} of the shape bound; "
            f"DMA {r['dma_over_min']:.2f}x min; golden {r['golden_s_per_image']:.1f} s, "
            f"RTL {r['rtl_s_per_image']:.1f} s per image; bit-exact"
        )
    out = {
        "board": args.board,
        "config_hash": cfg.hash,
        "peak_macs_per_cycle": cfg.peak_macs_per_cycle,
        "clock_mhz": cfg.clock_mhz,
        "networks": [rows[k] for k in ("resnet20", "resnet18") if k in rows],
        "accuracy": old.get("accuracy"),
        "command": f"python benchmarks/whole_network.py --board {args.board}",
    }
    if args.images:
        acc = golden_accuracy(resnet20_graph(), cfg, args.images)
        out["accuracy"] = acc
        print(
            f"ResNet-20 golden top-1 on {acc['images']} images: {acc['top1_golden']:.2f}% "
            f"(integer graph {acc['top1_integer_graph']:.2f}%, identical logits: "
            f"{acc['logits_identical']})"
        )
    RESULTS.mkdir(exist_ok=True)
    JSON.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
