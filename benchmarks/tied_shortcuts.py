"""Row formats tied across identity shortcuts: what the copy passes cost and what the tie costs.

The pretrained ResNet-20 is quantized post-training (W4A4) at a preset's row ratio twice: each
layer's rows assigned on their own, and with ``tie_shortcuts`` (the layers joined by identity
shortcuts share one assignment, so the lowering reads those shortcuts without a copy pass). Per
run: top-1 of the fake-quant model on a seeded subset of the CIFAR-10 test split, the copy
passes, and one image's cycles from the cycle model (golden backend, batch 1, output checked
against IntGraph.evaluate). Prints a table and writes benchmarks/results/tied_shortcuts.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import rmsmp
from rmsmp.arch import PRESETS
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.quant.data import cifar10_test
from rmsmp.quant.export import export
from rmsmp.quant.frontend import calibration_batch
from rmsmp.quant.models.resnet_cifar import load_resnet20

JSON = Path(__file__).resolve().parent / "results" / "tied_shortcuts.json"
ACT_BITS = 4
BATCH = 500
"""Images per fake-quant forward."""


def top1(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 of ``model`` on images ``x`` with labels ``y``."""
    with torch.no_grad():
        pred = [
            model(torch.from_numpy(x[i : i + BATCH])).argmax(1).numpy()
            for i in range(0, len(x), BATCH)
        ]
    return float(np.mean(np.concatenate(pred) == y))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="pynq-z1", choices=sorted(PRESETS))
    p.add_argument("--images", type=int, default=2000, help="test images (seeded subset)")
    args = p.parse_args(argv)
    cfg = PRESETS[args.preset]
    model = load_resnet20()
    x, y = cifar10_test(args.images, seed=0)
    calib = calibration_batch((3, 32, 32))
    out = {"preset": cfg.name, "images": args.images, "fp32_top1": top1(model, x, y), "runs": []}
    print(f"ResNet-20 pretrained, W{ACT_BITS}A{ACT_BITS} PTQ at {cfg.name}'s ratio, fp32 top-1 "
          f"{out['fp32_top1']:.2%} on {args.images} test images")  # fmt: skip
    print(f"{'formats':<10}{'top-1':>8}{'copies':>8}{'cycles':>10}")
    for tie in (False, True):
        qmodel = rmsmp.quantize(model, calib, cfg, act_bits=ACT_BITS, tie_shortcuts=tie)
        graph = export(qmodel)
        prog = lower(graph, cfg, 1)
        xq = graph.quantize_input(x[:1])
        res = run_with_stats(prog, xq)
        if not np.array_equal(res.output, graph.evaluate(xq)):
            raise SystemExit("golden output differs from IntGraph.evaluate")
        row = {
            "tie_shortcuts": tie,
            "top1": top1(qmodel, x, y),
            "copy_passes": sum(r.op == "copy" for r in prog.layers),
            "cycles": res.total_cycles,
        }
        out["runs"].append(row)
        name = "tied" if tie else "own"
        print(f"{name:<10}{row['top1']:>8.2%}{row['copy_passes']:>8}{row['cycles']:>10,}")
    JSON.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {JSON}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
