"""The demo: ResNet-20's first conv layers (real weights, real CIFAR-10 images) on the RTL.

Quantize conv1+bn1+relu and layer1.0.conv1+bn1+relu row by row (PoT-4 / Fixed-4 / Fixed-8 at the
board's ratio), compile for the board's AccelConfig, run on the golden model and on the Verilated
RTL, and check that the integers agree with each other and with the integer-graph reference.
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
    print(
        f"RTL cycles: {rtl.total_cycles} ({', '.join(map(str, rtl.layer_cycles))} per layer), "
        f"MAC array busy {rtl.mac_cycles}; {macs / rtl.total_cycles:.1f} MAC/cycle "
        f"of {cfg.peak_macs_per_cycle} peak"
    )
    print(f"max |RTL - fake-quant torch| = {lsb:.3g} output LSB")
    print(f"bit-exact: {'yes' if exact else 'NO'}")
    return 0 if exact else 1


def _macs(graph, batch: int) -> int:
    shapes = graph.shapes()
    total = 0
    for layer, out in zip(graph.layers, shapes[1:], strict=False):
        k = int(np.prod(layer.weight.shape[1:]))
        total += batch * int(np.prod(out)) * k
    return total
