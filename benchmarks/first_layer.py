"""ResNet-18's conv1 on every preset, unfolded and folded into lanes (``lower.input_fold``).

conv1 (3 input channels, 7x7 stride 2, padding 3, 64 rows on a 224x224 image) fills 3 of the
array's input lanes; folded, the host lays its input out as more channels of a smaller kernel.
Per preset the layer is compiled alone (batch 1, random levels, its 64 rows in the preset's
format ratio: cycles depend on shapes and formats only) without the fold stage and with it, and
the cycle model (``sim.cycles.predict``) counts both. Prints a table and writes
benchmarks/results/first_layer.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rmsmp.arch import PRESETS, AccelConfig, isa, numerics
from rmsmp.compiler.ir import IntGraph, IntLayer
from rmsmp.compiler.lower import pipeline
from rmsmp.host.program import Program
from rmsmp.sim.cycles import predict

JSON = Path(__file__).resolve().parent / "results" / "first_layer.json"
ROWS, KERNEL, STRIDE, PAD, SIDE = 64, 7, 2, 3, 224
"""ResNet-18's conv1 and ImageNet's input side."""


def conv1_graph(cfg: AccelConfig, seed: int = 0) -> IntGraph:
    """ResNet-18's conv1 alone: random levels, rows in ``cfg``'s format ratio (group by group)."""
    rng = np.random.default_rng(seed)
    rows = [g.fmt for g in cfg.groups for _ in range(g.rows)]
    fmts = [rows[i * len(rows) // ROWS] for i in range(ROWS)]
    w = np.stack(
        [rng.choice(numerics.weight_format(f).levels(), size=(3, KERNEL, KERNEL)) for f in fmts]
    )
    mult, shift = numerics.requant_multiplier(1 / 4096)
    zeros = np.zeros(ROWS, dtype=np.int64)
    layer = IntLayer(
        "conv1", "conv", w, fmts, zeros, zeros + mult, zeros + shift, 0, 15, 1.0, 1.0,
        (STRIDE, STRIDE), (PAD, PAD),
    )  # fmt: skip
    return IntGraph([layer], (3, SIDE, SIDE), 1.0)


def lower_unfolded(graph: IntGraph, cfg: AccelConfig, batch: int) -> Program:
    """The lowering without its fold stage: the first layer as the graph has it."""
    s = pipeline.Lowering(graph, cfg, batch)
    for stage in pipeline.STAGES:
        if stage is not pipeline.fold_first_layer:
            stage(s)
    return s.program


def predicted(prog: Program) -> int:
    """Cycles the cycle model predicts for one run of ``prog``."""
    cfg = prog.config
    words = isa.from_bytes(cfg, prog.segments["insn"].data)
    return predict(cfg, [isa.decode(cfg, w) for w in words]).cycles


def measure(cfg: AccelConfig) -> dict:
    """conv1 on ``cfg`` unfolded and as the lowering folds it."""
    graph = conv1_graph(cfg)
    plain, folded = lower_unfolded(graph, cfg, 1), pipeline.lower(graph, cfg, 1)
    fold = folded.input_fold
    before, after = predicted(plain), predicted(folded)
    return {
        "preset": cfg.name,
        "lanes": cfg.cols,
        "fold": fold and {"step": fold.step, "phases": fold.phases, "channels": fold.out_shape[0]},
        "kernel": list(folded.layers[0].kernel),
        "cycles_before": before,
        "cycles_after": after,
        "speedup": before / after,
        "dma_bytes_before": sum(r.dma_bytes for r in plain.layers),
        "dma_bytes_after": sum(r.dma_bytes for r in folded.layers),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", action="append", help="default: every preset but tiny")
    args = p.parse_args(argv)
    names = args.preset or [n for n in PRESETS if n != "tiny"]
    rows = []
    print(f"{'preset':<20}{'lanes':>6}{'fold (phases)':>15}{'kernel':>8}{'before':>12}"
          f"{'after':>11}{'x':>7}{'DMA MB':>14}")  # fmt: skip
    for name in names:
        r = measure(PRESETS[name])
        rows.append(r)
        fold = "none" if r["fold"] is None else "x".join(map(str, r["fold"]["phases"]))
        dma = f"{r['dma_bytes_before'] / 1e6:.2f}->{r['dma_bytes_after'] / 1e6:.2f}"
        print(
            f"{name:<20}{r['lanes']:>6}{fold:>15}{'x'.join(map(str, r['kernel'])):>8}"
            f"{r['cycles_before']:>12,}{r['cycles_after']:>11,}{r['speedup']:>7.2f}{dma:>14}"
        )
    JSON.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {JSON}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
