"""The demo: ResNet-20's first conv layers (real weights, real CIFAR-10 images) on the RTL.

Quantize conv1+bn1+relu and layer1.0.conv1+bn1+relu row by row (PoT-4 / Fixed-4 / Fixed-8 at the
board's ratio), compile for the board's AccelConfig, run on the golden model and on the Verilated
RTL, and check that the integers agree with each other and with the integer-graph reference. The
whole chain runs as one device run, so the cost report is for all layers together: cycles, MAC
array utilisation (MAC_CYCLES) and DMA beats.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np


def main(board: str = "pynq-z1", images: int = 4) -> int:
    """Run the demo; 0 when golden, RTL and the reference agree bit for bit."""
    import torch
    from torch import nn

    from .arch import AccelConfig
    from .compiler.data import cifar10_test
    from .compiler.export import export
    from .compiler.lower import lower
    from .compiler.models.resnet_cifar import load_resnet20
    from .compiler.quant import quantize
    from .host.runtime import run_with_stats

    if images < 1:
        raise ValueError(f"--images must be at least 1, got {images}")
    cfg = AccelConfig.for_board(board)
    net = load_resnet20()
    chain = nn.Sequential(
        OrderedDict(
            conv1=net.conv1,
            bn1=net.bn1,
            relu1=nn.ReLU(),
            layer1_0_conv1=net.layer1[0].conv1,
            layer1_0_bn1=net.layer1[0].bn1,
            relu2=nn.ReLU(),
        )
    )
    x, _ = cifar10_test(n=images, seed=0)
    qmodel = quantize(chain, torch.from_numpy(x), ratio=cfg)
    graph = export(qmodel)
    program = lower(graph, cfg, batch=images)
    print(
        f"board {board}: AccelConfig hash {cfg.hash}, {cfg.rows} PE rows "
        f"({', '.join(f'{g.fmt} x{g.rows}' for g in cfg.groups)}) x {cfg.cols} cols"
    )
    for name, fmts in qmodel.assignment.items():
        counts = {f: fmts.count(f) for f in sorted(set(fmts))}
        print(f"  {name}: rows {counts}")
    t0 = time.perf_counter()
    gold = run_with_stats(program, x, backend="golden")
    t1 = time.perf_counter()
    rtl = run_with_stats(program, x, backend="rtl")
    t2 = time.perf_counter()
    ref = graph.evaluate(graph.quantize_input(x))
    fq = qmodel(torch.from_numpy(x)).detach().numpy()
    lsb = np.abs(program.dequantize(rtl.output) - fq).max() / graph.output_scale
    exact = np.array_equal(gold.output, rtl.output) and np.array_equal(rtl.output, ref)
    macs = _macs(graph, images)
    print(f"golden model: {t1 - t0:.2f} s; RTL (Verilator, incl. any build): {t2 - t1:.2f} s")
    for line in _cost_report(cfg, program, rtl, macs):
        print(line)
    print(f"max |RTL - fake-quant torch| = {lsb:.3g} output LSB")
    print(f"bit-exact: {'yes' if exact else 'NO'}")
    return 0 if exact else 1


def _cost_report(cfg, program, res, macs: int) -> list[str]:
    """What the RTL run cost: the whole chain is one device run per batch, so the counters
    cover every layer together."""
    cyc = res.total_cycles
    per = max(cyc, 1)
    beat = cfg.axi_data_bits // 8
    moved = sum(r.dma_bytes for r in program.layers)
    least = sum(r.min_dma_bytes for r in program.layers)
    return [
        f"RTL cycles: {cyc} for {program.batch} images, {len(program.layers)} layers, "
        f"{program.insn_count} instructions in one run "
        f"({cyc / cfg.clock_mhz:.0f} us at {cfg.clock_mhz:g} MHz)",
        f"MAC array issued in {res.mac_cycles} cycles ({res.mac_cycles / per:.1%} of the run); "
        f"{macs / per:.1f} useful MAC/cycle of {cfg.peak_macs_per_cycle} peak "
        f"({macs / per / cfg.peak_macs_per_cycle:.1%})",
        f"DMA: {res.dma_beats} AXI beats ({res.dma_beats * beat / 1024:.1f} KiB, instruction "
        f"fetch included); the layers' LOAD/STORE blocks move {moved / 1024:.1f} KiB "
        f"(at least {least / 1024:.1f} KiB: each layer's weights, input and output once); "
        f"load unit busy "
        f"{res.load_cycles / per:.1%}, store unit {res.store_cycles / per:.1%} of the cycles",
    ]


def _macs(graph, batch: int) -> int:
    shapes = graph.shapes()
    total = 0
    for layer, out in zip(graph.layers, shapes[1:], strict=False):
        k = int(np.prod(layer.weight.shape[1:]))
        total += batch * int(np.prod(out)) * k
    return total
