"""Run the overlay package's model on the board: ``python3 run_on_board.py`` in its directory.

Loads the overlay (rmsmp.bit with rmsmp.hwh beside it) through pynq, checks that the
accelerator's CONFIG_HASH is the one the Program was compiled for, runs the Program on the
sample images and prints the top-1 and the latency. ``--backend pynq-sim`` runs the same steps
on the simulated board (a machine with rmsmp[sim] installed, no board needed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rmsmp.host.backends import open_backend
from rmsmp.host.program import Program
from rmsmp.host.runtime import run_with_stats

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    """Run the package in ``--dir`` (default: this script's directory); returns 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=HERE, help="the overlay package's directory")
    p.add_argument("--backend", default="pynq", help="pynq (the board) or pynq-sim")
    args = p.parse_args(argv)
    manifest = json.loads((args.dir / "manifest.json").read_text())
    program = Program.load(args.dir / manifest["program"])
    samples = np.load(args.dir / manifest["samples"])
    x = samples["x"]
    labels = samples["labels"] if "labels" in samples.files else None
    options = {"bitfile": args.dir / manifest["bitstream"]} if args.backend == "pynq" else {}
    dev = open_backend(args.backend, program.config, program.window_size, **options)
    try:
        start = time.perf_counter()
        res = run_with_stats(program, x, device=dev)
        wall = time.perf_counter() - start
    finally:
        dev.close()
    n = len(x)
    at_clock = res.total_cycles / program.config.clock_mhz / n
    print(f"{manifest['board']} ({args.backend}): config {program.config_hash}, {n} images")
    print(
        f"latency: {wall * 1e3 / n:.2f} ms/image end to end; accelerator {at_clock:.1f} "
        f"us/image ({res.total_cycles} cycles at {program.config.clock_mhz:g} MHz)"
    )
    if labels is not None:
        pred = res.output.reshape(n, -1).argmax(axis=1)
        hits = int((pred == labels).sum())
        print(f"top-1: {100 * hits / n:.1f}% ({hits}/{n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
