"""Per-PE and per-unit FPGA resources from Yosys ``synth_xilinx``, and the resource model's data.

PE units (``arch.layout.pe_units``: one PoT-4, SP2-4, Fixed-4 or Fixed-8 row, a packed Fixed-4
pair, or a Fixed-4 row multiplied in LUTs) are synthesized alone at every preset's width; the model
takes each unit's cost as ``a + b * cols`` (least squares over those widths). The other units are
each module of a preset's generated Verilog, synthesized with the modules it instantiates as port-
only blackboxes, so that every cell is counted once: requant lanes per lane, the rest (buffers,
fetch, load, store, DMA ports, queues, registers, compute control with its accumulators, the
array's input registers) as ``a + b * rows`` over ``--unit-presets`` (tiny and pynq-z1: zc706's
buffers alone keep Yosys busy for over half an hour, so its rest is extrapolated). Block RAM is
modelled apart (``BLOCK_RAM``): the buffers' shapes mapped as Yosys maps them; the rest's fit
takes only what that leaves (none in any preset counted so far).
``--from-presets`` refits only the PE unit kinds, from the PE rows of the presets' module-by-module
syntheses (``timing.synthesize_modules``' cache, as ``resources_presets.py`` and ``timing.py``
leave it): each row is one module there, so a preset counted by those tools calibrates the rows
of its widths with no synthesis of its own; a kind found at fewer than two widths keeps its fit.
``--before-rev REV`` also synthesizes the PE rows of that commit, for the before/after table.
``--estimates`` only recomputes the results' estimates of every preset and the model's cross-check
(``crosscheck``: the model against pynq-z1's Yosys count as it is now, ``resources.now_count``)
from boards/resource_model.json as it is, keeping the measured rows: the step after
``--from-presets``.

Writes the model's coefficients to boards/resource_model.json (read by
``rmsmp.boards.resources``) and every measurement to benchmarks/results/pe_resources.json;
prints the tables. Synthesis runs are cached with timing.py's (by Verilog hash).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
from readme import replace_block
from resources import now_count, parse_stat, utilisation
from timing import (
    CACHE,
    SYNTH,
    UNIT,
    command_line,
    source_label,
    split_modules,
    synthesize,
    unit_dir,
    yosys_bin,
)

from rmsmp.arch import PRESETS, AccelConfig
from rmsmp.arch.layout import LUT_MUL_FORMAT, PAIRED_FORMAT, PeUnit, pe_units
from rmsmp.boards import resources as model
from rmsmp.hw.generate import to_verilog, verilog_text
from rmsmp.hw.mac_array import unit

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
PE_TOP = "pe"
ACT_BITS = 8
KINDS = [PeUnit(f, 1) for f in model.FORMAT_ORDER] + [
    PeUnit(PAIRED_FORMAT, 2),
    PeUnit(LUT_MUL_FORMAT, 1, lut_mul=True),
]
"""Every PE unit kind: each format as a single row, the packed pair and the LUT multiplier."""
KEYS = {"lut": "lut", "ff": "ff", "dsp": "dsp48e1", "bram36": "bram36_equiv"}
"""Model resource name -> ``resources.utilisation`` key."""
BLOCK_RAM = {
    "lutram_max_depth": 64,
    "bram_shapes": [
        *([1.0, 72 >> i, 512 << i] for i in range(7)),
        *([0.5, 36 >> i, 512 << i] for i in range(6)),
    ],
}
"""The model's ``memory`` data: a buffer at most this deep is distributed RAM (RAM32M/RAM64M in
every preset counted; 128 entries and more map to block RAM), a deeper one the cheapest tiling
by the 7-series block RAM shapes [BRAM36 cost, width, depth] that Yosys' memory_libmap offers
(share/yosys/xilinx/brams_xc4v.txt: RAMB36E1 72x512 simple dual port down to 1x32K, RAMB18E1
36x512 down to 1x16K at half the cost). Checked cell by cell against every preset's count:
benchmarks/results/resources_presets.json, model_error_pct."""
PE_MODULE = re.compile(r"\.array\.pe\d+$")
LANE_MODULE = re.compile(r"\.compute\.rq\d+$")
INSTANCE = re.compile(r"^\s+\\?(\S+)\s+\\?\S+\s*\($")
_PORT = re.compile(r"^  (input|output|inout)\b")  # module level: functions indent further


def counts(text: str, top: str, cache: Path) -> dict[str, float]:
    """Model resources (and CARRY4) of ``top`` in ``text`` after synth_xilinx."""
    use = utilisation(parse_stat(synthesize(text, top, cache).stat.read_text()))
    return {**{k: use[v] for k, v in KEYS.items()}, "carry4": use["carry4"]}


def modules(text: str) -> dict[str, list[str]]:
    """Each module of Yosys-written Verilog: name -> its lines (attributes through endmodule)."""
    out: dict[str, list[str]] = {}
    pending: list[str] = []
    name = None
    for line in text.splitlines():
        if name is None:
            if m := re.match(r"module\s+\\?(\S+?)\s*\(", line):
                name = m[1]
                out[name] = pending + [line]
                pending = []
            elif line.startswith("(*"):
                pending.append(line)
            continue
        out[name].append(line)
        if line.startswith("endmodule"):
            name = None
    return out


def own_cells(mods: dict[str, list[str]], name: str) -> str:
    """Module ``name`` with the modules it instantiates as port-only blackboxes: synthesizing it
    counts the cells of that module alone."""
    parts = ["\n".join(mods[name])]
    children = {m[1] for ln in mods[name] if (m := INSTANCE.match(ln)) and m[1] in mods}
    for lines in (mods[c] for c in sorted(children)):
        start = next(i for i, ln in enumerate(lines) if ln.startswith("module"))
        end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith(");"))
        ports = [ln for ln in lines[end + 1 :] if _PORT.match(ln)]
        parts.append("\n".join(["(* blackbox *)", *lines[start : end + 1], *ports, "endmodule"]))
    return "\n".join(parts) + "\n"


def unit_group(name: str) -> str:
    """``pe``, ``lane`` or ``rest``: how the model accounts for a module of the design."""
    if PE_MODULE.search(name):
        return "pe"
    return "lane" if LANE_MODULE.search(name) else "rest"


def preset_units(cfg: AccelConfig, cache: Path) -> dict[str, dict[str, float]]:
    """Each module's own resources in ``cfg``'s generated Verilog (PE units left out)."""
    mods = modules(verilog_text(cfg))
    out: dict[str, dict[str, float]] = {}
    seen: dict[str, dict[str, float]] = {}  # one synthesis per distinct module body
    for name in mods:
        if unit_group(name) != "pe":
            text = own_cells(mods, name)
            body = text.replace(name, "")
            if body not in seen:
                seen[body] = counts(text, name, cache)
            out[name] = seen[body]
            print(f"  {name}: {out[name]}", flush=True)
    return out


def preset_rows(cfg: AccelConfig, cache: Path) -> dict[str, dict[int, dict[str, float]]]:
    """Own cells of each PE row kind of ``cfg`` at its width, read (``stat``) from the
    module-by-module syntheses in ``cache``; kinds whose module is not there are left out."""
    mods = split_modules(verilog_text(cfg))
    rows = sorted((n for n in mods if PE_MODULE.search(n)), key=lambda n: int(n.rsplit("pe", 1)[1]))
    out: dict[str, dict[int, dict[str, float]]] = {}
    for name, u in zip(rows, pe_units(cfg), strict=True):
        il = unit_dir(mods, name, cache) / "unit.il"
        kind = model.unit_kind(*u)
        if kind in out or not il.exists():
            continue
        script = f"read_rtlil {il}; select {UNIT}; tee -q -o /dev/stdout stat"
        stat = subprocess.run(
            [yosys_bin(), "-q", "-p", script],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        use = utilisation(parse_stat(stat))
        out[kind] = {cfg.cols: {k: use[v] for k, v in KEYS.items()}}
    return out


def refit_from_presets(path: Path, cache: Path) -> dict:
    """The model at ``path`` with each PE kind refitted on the presets' rows (``preset_rows``)
    where they give it two widths or more; what it measured, by kind and width."""
    data = json.loads(path.read_text())
    found: dict[str, dict[int, dict[str, float]]] = {}
    for cfg in PRESETS.values():
        for kind, by in preset_rows(cfg, cache).items():
            found.setdefault(kind, {}).update(by)
    for kind, by in found.items():
        if len(by) >= 2:
            xs = sorted(by)
            data["pe"][kind] = {r: fit(xs, [by[c][r] for c in xs])[0] for r in KEYS}
            print(f"{kind}: {data['pe'][kind]} from {xs} columns", flush=True)
    data["pe_from_presets"] = {
        "source": f"rmsmp {source_label()}",
        "rows": {k: {str(c): v for c, v in sorted(by.items())} for k, by in found.items()},
    }
    return data


def crosscheck(name: str = "pynq-z1") -> dict:
    """The model's estimate of preset ``name`` against its Yosys count now (``now_count``)."""
    count, how, _ = now_count(name)
    whole = {r: count[KEYS[r]] for r in KEYS}
    est = model.estimate(PRESETS[name])
    return {
        "board": name,
        "config_hash": PRESETS[name].hash,
        "count": whole,
        "count_how": how,
        "model": est.as_dict(),
        "error_pct": {r: round(100 * (getattr(est, r) / whole[r] - 1), 1) for r in KEYS},
    }


def refresh_estimates(path: Path) -> dict:
    """The results at ``path`` with ``estimates`` and ``crosscheck`` made again from the model
    as it is now (``--estimates``)."""
    data = json.loads(path.read_text())
    data["estimates"] = {n: model.estimate(c).as_dict() for n, c in PRESETS.items()}
    data["crosscheck"] = crosscheck()
    data["estimates_source"] = f"rmsmp {source_label()}: {command_line()}"
    print(f"model vs {data['crosscheck']['board']}: {data['crosscheck']['error_pct']} %")
    return data


def old_pe_verilog(rev: str, fmt: str, cols: int) -> str:
    """Verilog of a pipelined PE row of commit ``rev`` (its arch and hw packages, run apart)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "__init__.py", "arch", "hw"],
        capture_output=True,
        check=True,
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(Path(tmp) / "rmsmp", filter="data")
        code = (
            "import sys\nfrom rmsmp.arch import weight_format\nfrom rmsmp.hw.pe import DotRow\n"
            "from rmsmp.hw.generate import to_verilog\n"
            f"dut = DotRow(weight_format({fmt!r}), {cols}, {ACT_BITS}, pipelined=True)\n"
            f"sys.stdout.write(to_verilog(dut, {PE_TOP!r}))\n"
        )
        return subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp,
            env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"},
        ).stdout


def fit(xs: list[int], ys: list[float]) -> tuple[list[float], float]:
    """Least-squares ``[a, b]`` of ``y = a + b x`` and the largest residual."""
    a = np.stack([np.ones(len(xs)), np.asarray(xs, float)], axis=1)
    coef = np.linalg.lstsq(a, np.asarray(ys, float), rcond=None)[0]
    return [round(float(c), 3) for c in coef], float(np.abs(a @ coef - ys).max())


def per_mac(row: dict[str, float], macs: int) -> dict[str, float]:
    """Resources per MAC, rounded for the table."""
    return {k: round(row[k] / macs, 2) for k in ("lut", "ff", "dsp")}


def readme_table() -> str:
    """README rows from pe_resources.json: per-MAC costs before and after, the model's check."""
    res = json.loads((RESULTS / "pe_resources.json").read_text())

    def cell(r: dict | None) -> str:
        return f"{r['lut']:.1f} / {r['ff']:.1f} / {r['dsp']:.2f}" if r else "(new)"

    lines = [
        f"| PE unit, {res['per_mac'][0]['cols']} columns | LUT / FF / DSP48E1 per MAC before "
        f"({res['before_rev']}) | after |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['kind']} | {cell(r.get('before'))} | {cell(r['after'])} |" for r in res["per_mac"]
    ]
    c = res["crosscheck"]
    err = ", ".join(f"{r} {c['error_pct'][r]:+.1f}%" for r in KEYS)
    lines.append(
        f"\nModel (`rmsmp.boards.resources`) against the Yosys count of `{c['board']}` "
        f"(config {c['config_hash']}, {c['count_how']}): {err}. Estimates of the presets now "
        "(`python benchmarks/pe_resources.py --estimates`): "
        + "; ".join(
            f"`{n}` {e['lut']:,.0f} LUT, {e['ff']:,.0f} FF, {e['dsp']:.0f} DSP48E1, "
            f"{e['bram36']:g} BRAM36"
            for n, e in res["estimates"].items()
        )
        + ".\n"
    )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--before-rev", help="also synthesize the PE rows of this commit")
    p.add_argument(
        "--unit-presets",
        nargs="+",
        default=["tiny", "pynq-z1"],
        help="presets whose modules calibrate the rest (zc706's buffers take Yosys over 30 min)",
    )
    p.add_argument(
        "--units-from",
        type=Path,
        help="take the other units' counts from this earlier pe_resources.json instead of "
        "synthesizing them (refits the PE units only)",
    )
    p.add_argument(
        "--kinds",
        nargs="+",
        help="with --units-from: synthesize only these PE kinds (e.g. fixed4-lutx1), the others' "
        "counts taken from that file too",
    )
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--out", type=Path, default=RESULTS / "pe_resources.json")
    p.add_argument("--model", type=Path, default=model.MODEL_FILE)
    p.add_argument("--readme", action="store_true", help="only rewrite the README's PE table")
    p.add_argument(
        "--estimates",
        action="store_true",
        help="only recompute the results' estimates and cross-check from the model as it is",
    )
    p.add_argument(
        "--from-presets",
        action="store_true",
        help="only refit the PE kinds from the presets' cached module-by-module syntheses",
    )
    args = p.parse_args()
    if args.from_presets:
        data = refit_from_presets(args.model, args.cache)
        args.model.write_text(json.dumps(data, indent=1) + "\n")
        return 0
    if args.estimates:
        args.out.write_text(json.dumps(refresh_estimates(args.out), indent=1) + "\n")
        return 0
    if args.kinds and not args.units_from:
        p.error("--kinds needs --units-from (where the other kinds' counts come from)")
    if args.readme:
        replace_block("pe-table", readme_table())
        return 0

    presets = dict(PRESETS)
    widths = sorted({c.cols for c in presets.values()})
    earlier = json.loads(args.units_from.read_text()) if args.units_from else {}
    pe: dict[str, dict] = {}
    if args.kinds:
        pe = {k: {int(c): v for c, v in by.items()} for k, by in earlier["pe"].items()}
    for u in KINDS:
        kind = model.unit_kind(*u)
        if args.kinds and kind not in args.kinds:
            continue
        pe[kind] = {}
        for cols in widths:
            pe[kind][cols] = counts(to_verilog(unit(u, cols, ACT_BITS), PE_TOP), PE_TOP, args.cache)
            print(f"{kind} x {cols}: {pe[kind][cols]}", flush=True)
    before = {}
    if args.before_rev:
        cols = presets["pynq-z1"].cols
        for fmt in model.FORMAT_ORDER:
            text = old_pe_verilog(args.before_rev, fmt, cols)
            before[model.unit_kind(fmt, 1)] = {cols: counts(text, PE_TOP, args.cache)}
    units = earlier.get("units", {})
    for name in [] if args.units_from else args.unit_presets:
        cfg = presets[name]
        print(f"units of {name}:", flush=True)
        units[name] = preset_units(cfg, args.cache)

    coef: dict = {"pe": {}, "rest": {}}
    residual: dict = {"pe": {}, "rest": {}}
    for kind, by_cols in pe.items():
        coef["pe"][kind], residual["pe"][kind] = {}, {}
        for res in KEYS:
            xs = sorted(by_cols)
            coef["pe"][kind][res], residual["pe"][kind][res] = fit(
                xs, [by_cols[c][res] for c in xs]
            )
    lanes = [m for mods in units.values() for n, m in mods.items() if unit_group(n) == "lane"]
    coef["lane"] = {r: round(float(np.mean([m[r] for m in lanes])), 1) for r in KEYS}
    rows = [presets[n].rows for n in units]
    buffers = {p: model.buffers_bram36(presets[p], {"memory": BLOCK_RAM}) for p in units}
    for res in KEYS:
        rest = [
            sum(m[res] for n, m in units[p].items() if unit_group(n) == "rest")
            - (buffers[p] if res == "bram36" else 0)
            for p in units
        ]
        coef["rest"][res], residual["rest"][res] = fit(rows, rest)
    data = {
        "about": "rmsmp.boards.resources coefficients, from benchmarks/pe_resources.py",
        "tool": f"yosys {SYNTH.format(top='<module>')} (Debian 0.23)",
        "source": f"rmsmp {source_label()}",
        "units_source": f"{earlier['source']} ({args.units_from})" if earlier else None,
        "kinds_synthesized": args.kinds or "all",
        **coef,
        "memory": BLOCK_RAM,
    }
    args.model.write_text(json.dumps(data, indent=1) + "\n")
    model.load.cache_clear()

    table = []
    for u in KINDS:
        kind = model.unit_kind(*u)
        cols = presets["pynq-z1"].cols
        row = {"kind": kind, "cols": cols, "after": per_mac(pe[kind][cols], cols * u.rows)}
        if kind in before:
            row["before"] = per_mac(before[kind][cols], cols)
        table.append(row)
    print(f"\nper MAC at {presets['pynq-z1'].cols} columns (LUT / FF / DSP48E1):")
    for row in table:
        old = row.get("before")
        old_s = f"{old['lut']:6.1f} {old['ff']:5.1f} {old['dsp']:4.2f}" if old else " " * 17
        new = row["after"]
        print(
            f"{row['kind']:<10} before {old_s}   after {new['lut']:6.1f} {new['ff']:5.1f} "
            f"{new['dsp']:4.2f}"
        )
    check = crosscheck()
    print(f"\nmodel vs {check['board']}: {check['error_pct']} %")
    out = {
        "pe": {k: {str(c): v for c, v in by.items()} for k, by in pe.items()},
        "pe_before": {k: {str(c): v for c, v in by.items()} for k, by in before.items()},
        "before_rev": args.before_rev,
        "per_mac": table,
        "units": units,
        "units_source": data["units_source"],
        "kinds_synthesized": data["kinds_synthesized"],
        "fit_max_residual": residual,
        "estimates": {n: model.estimate(c).as_dict() for n, c in presets.items()},
        "crosscheck": check,
        "tool": data["tool"],
        "source": data["source"],
        "command": command_line(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
