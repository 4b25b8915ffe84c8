"""The demo: whole ResNet-20 (our rmsmp QAT checkpoint) on real CIFAR-10 JPEG test images, from
the input to the logits on the accelerator, on the golden model and on the Verilated RTL.

The checkpoint's integer graph is exported as trained (``quant.frontend``), lowered for the
board's AccelConfig into one Program (every conv, residual add and pool is a pass on the
accelerator; the host only quantizes the input and reads the logits), and run image by image.
The demo checks that golden, RTL and ``IntGraph.evaluate`` agree bit for bit, and reports the
top-1 over the images it ran and what one inference costs on the RTL.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "resnet20-rmsmp.pt"
"""Our ResNet-20 rmsmp QAT checkpoint (its command is in checkpoints/README.md)."""


def main(board: str = "pynq-z1", images: int = 32, checkpoint: Path = CHECKPOINT) -> int:
    """Run the demo; 0 when golden, RTL and the integer graph agree bit for bit."""
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
    t_lower = time.perf_counter() - t0
    print(
        f"board {board}: {cfg.rows} PE rows ({', '.join(f'{g.fmt} x{g.rows}' for g in cfg.groups)})"
        f" x {cfg.cols} cols, {cfg.clock_mhz:g} MHz, config {cfg.hash}"
    )
    print(
        f"model: ResNet-20 {ck['method']} QAT, {ck['epoch']} epochs ({checkpoint.name}); "
        f"{len(graph.layers)} integer nodes -> {len(program.layers)} accelerator passes, "
        f"{program.insn_count} instructions per image (lowered in {t_lower:.1f} s)"
    )
    x, labels = cifar10_test(n=images, seed=0)
    ref = graph.evaluate(graph.quantize_input(x))
    outs, stats = {}, {}
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
            stats[backend] = (time.perf_counter() - t0, cycles, macs, beats)
    exact = np.array_equal(outs["golden"], outs["rtl"]) and np.array_equal(outs["rtl"], ref)
    top1 = 100.0 * float((outs["rtl"].argmax(1) == labels).mean())
    print(f"top-1 on {images} CIFAR-10 test images: {top1:.1f}% (integer logits, 8-bit)")
    for line in _cost_report(cfg, program, images, stats):
        print(line)
    print(f"bit-exact (golden == RTL == IntGraph.evaluate): {'yes' if exact else 'NO'}")
    return 0 if exact else 1


def _cost_report(cfg, program, images: int, stats: dict) -> list[str]:
    """What one inference cost on the RTL, and how long each backend took here."""
    wall_g = stats["golden"][0]
    wall, cycles, mac_cycles, beats = stats["rtl"]
    per = cycles / images
    pred = stats["golden"][1] / images
    useful, bound = program.useful_macs, program.shape_bound_cycles
    return [
        f"RTL: {per:,.0f} cycles per image = {per / cfg.clock_mhz:,.0f} us at "
        f"{cfg.clock_mhz:g} MHz ({cfg.clock_mhz * 1e6 / per:,.0f} images/s)",
        f"  {useful / per:.1f} useful MAC/cycle of {cfg.peak_macs_per_cycle} peak "
        f"({useful / per / cfg.peak_macs_per_cycle:.1%}); MAC array busy "
        f"{mac_cycles / cycles:.1%} of the cycles; the layer shapes allow at best "
        f"{bound:,.0f} cycles ({bound / per:.0%} of that reached)",
        f"  DMA {beats * cfg.axi_data_bits // 8 / images / 1024:,.0f} KiB per image",
        f"cycle model (golden backend): {pred:,.0f} cycles per image, {(pred - per) / per:+.3%} "
        "from the RTL count",
        f"simulation: golden {wall_g / images:.2f} s/image, RTL (Verilator) "
        f"{wall / images:.2f} s/image ({cycles / wall:,.0f} cycles/s)",
    ]
