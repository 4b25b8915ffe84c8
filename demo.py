"""The demo: whole ResNet-20 (our rmsmp QAT checkpoint) on real CIFAR-10 JPEG test images, from
the input to the logits on the accelerator, on the golden model and on the Verilated RTL.

The checkpoint's integer graph is exported as trained (``quant.frontend``), lowered for the
board's AccelConfig into one Program (every conv, residual add and pool is a pass on the
accelerator; the host only quantizes the input and reads the logits), and run image by image.
The demo checks that golden, RTL and ``IntGraph.evaluate`` agree bit for bit, and reports the
top-1 over the images it ran and what one inference costs on the RTL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "resnet20-rmsmp.pt"
"""Our ResNet-20 rmsmp QAT checkpoint (its command is in checkpoints/README.md)."""
SUMMARY = Path(__file__).resolve().parent / "benchmarks" / "results" / "demo.json"
"""Where each run leaves its summary (benchmarks/demo_readme.py makes the README block of it)."""


def main(board: str = "pynq-z1", images: int = 32, checkpoint: Path = CHECKPOINT) -> int:
    """Run the demo; 0 when golden, RTL and the integer graph agree bit for bit. Prints its
    report and writes it as data to ``SUMMARY``."""
    from rich.progress import Progress

    from .boards import target_config
    from .compiler.lower import lower
    from .host.runtime import open_device, run_with_stats
    from .quant.data import cifar10_test
    from .quant.frontend import graph_from_file
    from .quant.train import read_checkpoint

    if images < 1:
        raise ValueError(f"--images must be at least 1, got {images}")
    cfg = target_config(board)
    ck = read_checkpoint(checkpoint)
    graph = graph_from_file(checkpoint, None)
    t0 = time.perf_counter()
    program = lower(graph, cfg, batch=1)
    s = {
        "command": f"rmsmp demo --board {board} --images {images}",
        "board": board,
        "groups": [[g.fmt, g.rows] for g in cfg.groups],
        "rows": cfg.rows,
        "cols": cfg.cols,
        "clock_mhz": cfg.clock_mhz,
        "config_hash": cfg.hash,
        "peak_macs_per_cycle": cfg.peak_macs_per_cycle,
        "method": ck["method"],
        "epochs": ck["epoch"],
        "checkpoint": checkpoint.name,
        "integer_nodes": len(graph.layers),
        "passes": len(program.layers),
        "instructions": program.insn_count,
        "lower_s": time.perf_counter() - t0,
        "useful_macs": int(program.useful_macs),
        "shape_bound_cycles": float(program.shape_bound_cycles),
        "images": images,
    }
    for line in head_lines(s):
        print(line)
    x, labels = cifar10_test(n=images, seed=0)
    ref = graph.evaluate(graph.quantize_input(x))
    outs = {}
    with Progress() as bar:
        for backend in ("golden", "rtl"):
            task = bar.add_task(f"{backend:>6}", total=images)
            dev = open_device(program, backend)
            ys, cycles, macs, beats = [], 0, 0, 0
            t0 = time.perf_counter()
            try:
                for i in range(images):
                    res = run_with_stats(program, x[i : i + 1], device=dev)
                    ys.append(res.output)
                    cycles, macs = cycles + res.total_cycles, macs + res.mac_cycles
                    beats += res.dma_beats
                    bar.advance(task)
            finally:
                dev.close()
            outs[backend] = np.concatenate(ys)
            s[backend] = {
                "seconds": time.perf_counter() - t0,
                "cycles": int(cycles),
                "mac_cycles": int(macs),
                "dma_beats": int(beats),
            }
    s["dma_bytes"] = s["rtl"]["dma_beats"] * cfg.axi_data_bits // 8
    s["golden_equals_rtl"] = bool(np.array_equal(outs["golden"], outs["rtl"]))
    s["rtl_equals_evaluate"] = bool(np.array_equal(outs["rtl"], ref))
    s["top1"] = 100.0 * float((outs["rtl"].argmax(1) == labels).mean())
    for line in result_lines(s):
        print(line)
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(s, indent=1) + "\n")
    return 0 if s["golden_equals_rtl"] and s["rtl_equals_evaluate"] else 1


def head_lines(s: dict) -> list[str]:
    """What the demo prints before it runs: the board's array and the compiled model."""
    return [
        f"board {s['board']}: {s['rows']} PE rows "
        f"({', '.join(f'{fmt} x{rows}' for fmt, rows in s['groups'])}) x {s['cols']} cols, "
        f"{s['clock_mhz']:g} MHz, config {s['config_hash']}",
        f"model: ResNet-20 {s['method']} QAT, {s['epochs']} epochs ({s['checkpoint']}); "
        f"{s['integer_nodes']} integer nodes -> {s['passes']} accelerator passes, "
        f"{s['instructions']} instructions per image (lowered in {s['lower_s']:.1f} s)",
    ]


def result_lines(s: dict) -> list[str]:
    """What the demo prints after the runs: top-1, what one inference cost on the RTL, how long
    each backend took here, and whether golden, RTL and the integer graph agree."""
    images, clock, peak = s["images"], s["clock_mhz"], s["peak_macs_per_cycle"]
    rtl, golden = s["rtl"], s["golden"]
    per = rtl["cycles"] / images
    pred = golden["cycles"] / images
    useful, bound = s["useful_macs"], s["shape_bound_cycles"]
    exact = s["golden_equals_rtl"] and s["rtl_equals_evaluate"]
    return [
        f"top-1 on {images} CIFAR-10 test images: {s['top1']:.1f}% (integer logits, 8-bit)",
        f"RTL: {per:,.0f} cycles per image = {per / clock:,.0f} us at {clock:g} MHz "
        f"({clock * 1e6 / per:,.0f} images/s)",
        f"  {useful / per:.1f} useful MAC/cycle of {peak} peak ({useful / per / peak:.1%}); "
        f"MAC array busy {rtl['mac_cycles'] / rtl['cycles']:.1%} of the cycles; the layer "
        f"shapes allow at best {bound:,.0f} cycles ({bound / per:.0%} of that reached)",
        f"  DMA {s['dma_bytes'] / images / 1024:,.0f} KiB per image",
        f"cycle model (golden backend): {pred:,.0f} cycles per image, {(pred - per) / per:+.3%} "
        "from the RTL count",
        f"simulation: golden {golden['seconds'] / images:.2f} s/image, RTL (Verilator) "
        f"{rtl['seconds'] / images:.2f} s/image ({rtl['cycles'] / rtl['seconds']:,.0f} cycles/s)",
        f"bit-exact (golden == RTL == IntGraph.evaluate): {'yes' if exact else 'NO'}",
    ]
