"""RTL backend speed: simulated cycles per second, and MACs per cycle on a 256x256x256 GEMM.

Runs one integer Linear layer (M = K = N = 256 by default) compiled for a board preset on the
Verilated RTL, prints a table and writes benchmarks/results/rtl_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from rmsmp.arch import AccelConfig, numerics
from rmsmp.compiler.ir import IntGraph, IntLayer
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.sim.verilator import RtlDevice, build

RESULTS = Path(__file__).resolve().parent / "results"


def gemm_graph(
    cfg: AccelConfig, m: int, k: int, n: int, seed: int = 0
) -> tuple[IntGraph, np.ndarray]:
    """A single Linear layer with rows split between the config's formats by its group ratio."""
    rng = np.random.default_rng(seed)
    counts = [round(n * g.rows / cfg.rows) for g in cfg.groups]
    counts[0] += n - sum(counts)
    fmts = [g.fmt for g, c in zip(cfg.groups, counts, strict=False) for _ in range(c)]
    w = np.stack([rng.choice(numerics.weight_format(f).levels(), size=k) for f in fmts])
    mult, shift = numerics.requant_multiplier(1.0 / (4 * k))
    layer = IntLayer(
        "gemm",
        "linear",
        w,
        fmts,
        np.zeros(n, np.int64),
        np.full(n, mult),
        np.full(n, shift),
        -128,
        127,
        1.0,
        1.0,
    )
    x = rng.integers(0, 16, size=(m, k))
    return IntGraph([layer], (k,), 1.0), x


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--board", default="pynq-z1")
    p.add_argument("--size", type=int, default=256, help="M = K = N")
    args = p.parse_args()
    cfg = AccelConfig.for_board(args.board)
    s = args.size
    t0 = time.perf_counter()
    build(cfg)
    t_build = time.perf_counter() - t0
    graph, x = gemm_graph(cfg, s, s, s)
    program = lower(graph, cfg, batch=s)
    dev = RtlDevice(cfg, program.window_size)
    c0 = dev.sim_cycles
    t0 = time.perf_counter()
    res = run_with_stats(program, x, device=dev)
    t_rtl = time.perf_counter() - t0
    sim_cycles = dev.sim_cycles - c0
    dev.close()
    t0 = time.perf_counter()
    gold = run_with_stats(program, x, backend="golden")
    t_gold = time.perf_counter() - t0
    assert np.array_equal(res.output, gold.output), "RTL and golden disagree"
    macs = s * s * s
    row = {
        "board": args.board,
        "config_hash": cfg.hash,
        "gemm": [s, s, s],
        "accelerator_cycles": res.total_cycles,
        "mac_array_cycles": res.mac_cycles,
        "dma_beats": res.dma_beats,
        "macs_per_cycle": macs / res.total_cycles,
        "peak_macs_per_cycle": cfg.peak_macs_per_cycle,
        "utilization": macs / res.total_cycles / cfg.peak_macs_per_cycle,
        "sim_cycles": sim_cycles,
        "rtl_wall_s": t_rtl,
        "sim_cycles_per_s": sim_cycles / t_rtl,
        "golden_wall_s": t_gold,
        "build_s": t_build,
        "time_at_clock_ms": res.total_cycles / (cfg.clock_mhz * 1e3),
        "machine": platform.processor() or platform.machine(),
        "command": f"python benchmarks/rtl_speed.py --board {args.board} --size {s}",
    }
    width = max(map(len, row))
    for k, v in row.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rtl_speed.json").write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
