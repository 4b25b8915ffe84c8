"""Worst register-to-register path of a board preset, estimated from the Yosys netlist.

Generates the preset's Verilog (``rmsmp.hw.generate.verilog_text``) or reads ``--verilog``, runs
Yosys ``synth_xilinx -family xc7 -noiopad``, flattens the netlist and finds the longest path from
cell delays plus one routing delay per general net (``--wire-ps``, 400 by default; zero on the
dedicated CARRY4, MUXF7/F8 and DSP cascade links). Delays, clock-to-out and setup times come from
the specify blocks of Yosys' ``xilinx/cells_sim.v`` (prjxray Artix-7 -1 numbers); DSP48E1 and
BRAM outputs follow that file's register-dependent tables. No placement, no clock skew: a rough
estimate, not a vendor timing report.

``--module NAME`` synthesizes one module of the generated Verilog alone (e.g. ``rq0``), its ports
taken as flip-flops outside it: fast, and a lower bound for paths that cross its boundary.
``--crosscheck`` also runs ../shared/tools/sta_estimate.py on the same netlist. Synthesis results
are cached by Verilog hash under ~/.cache/rmsmp/synth. Prints a table and writes
benchmarks/results/timing.json (``--out`` to change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
STA_TOOL = REPO.parent / "shared" / "tools" / "sta_estimate.py"
CACHE = Path.home() / ".cache" / "rmsmp" / "synth"
FLAT_TOP = "rmsmp_top"  # the flattened top is renamed to this, as sta_estimate expects
SYNTH = "synth_xilinx -top {top} -family xc7 -noiopad"

CLOCKS = {"C", "CLK", "WCLK", "CLKARDCLK", "CLKBWRCLK"}
DEDICATED = {
    ("CARRY4", "CI"),
    ("MUXF7", "I0"),
    ("MUXF7", "I1"),
    ("MUXF8", "I0"),
    ("MUXF8", "I1"),
    ("DSP48E1", "ACIN"),
    ("DSP48E1", "BCIN"),
    ("DSP48E1", "PCIN"),
    ("DSP48E1", "CARRYCASCIN"),
    ("DSP48E1", "MULTSIGNIN"),
}
# Cells whose arc is one pass through a LUT (logic, distributed RAM read, shift-register tap).
LUT_LEVEL = re.compile(r"LUT\d|INV|RAM\d+X\d[SD]|RAM\d+M|SRLC?\d+E?")
PORT_FF = "FDRE"  # a port counts as a flip-flop of this type outside the design

Pin = tuple[str, int | None]


@dataclass
class CellTiming:
    """One primitive's timing in ps: combinational arcs, clock-to-out, setup."""

    arcs: dict[Pin, list[tuple[Pin, int]]] = field(default_factory=dict)
    clk_to_out: dict[Pin, int] = field(default_factory=dict)
    setup: dict[Pin, int] = field(default_factory=dict)


_PIN = r"(\w+)(?:\[(\d+)\])?"
_ARC = re.compile(rf"\(\s*{_PIN}\s*[*=]>\s*{_PIN}\s*\)\s*=\s*([^;]+);")
_EDGE = re.compile(rf"\((?:pos|neg)edge\s+(\w+)\s*=>\s*\(\s*{_PIN}\s*:[^;]*?\)\s*\)\s*=\s*([^;]+);")
_SETUP = re.compile(rf"\$setup\(\s*{_PIN}\s*,.*,([^,]*)\);")


def _pin(name: str, idx: str | None) -> Pin:
    return name, None if idx is None else int(idx)


def _ps(expr: str) -> int | None:
    """``642 + 193 /* cross */`` -> 835; None for anything but a sum of integers."""
    s = re.sub(r"/\*.*?\*/", "", expr).strip()
    return sum(int(t) for t in s.split("+")) if re.fullmatch(r"\d+(\s*\+\s*\d+)*", s) else None


def parse_specify(text: str) -> dict[str, CellTiming]:
    """Cell timing from the specify blocks of a Verilog cell library (Yosys' preprocessor view).

    Conditions are ignored (worst case over them); arcs whose delay is not a literal sum are
    skipped (DSP48E1 and BRAM outputs are modelled in ``cell_timing``).
    """
    lib: dict[str, CellTiming] = {}
    module, in_specify, active = "", False, []
    for raw in text.splitlines():
        s = raw.split("//")[0].strip()
        words = s.split()
        if s.startswith(("`ifdef", "`ifndef")):
            active.append((words[1] == "YOSYS") == (words[0] == "`ifdef"))
        elif s.startswith("`else"):
            active[-1] = not active[-1]
        elif s.startswith("`endif"):
            active.pop()
        elif not all(active):
            continue
        elif m := re.match(r"module\s+\\?([\w$]+)", s):
            module = m[1]
        elif words[:1] == ["specify"]:
            in_specify = True
        elif words[:1] == ["endspecify"]:
            in_specify = False
        elif in_specify:
            t = lib.setdefault(module, CellTiming())
            for m in _EDGE.finditer(s):
                if m[1] in CLOCKS and (d := _ps(m[4])) is not None:
                    out = _pin(m[2], m[3])
                    t.clk_to_out[out] = max(d, t.clk_to_out.get(out, 0))
            for m in _SETUP.finditer(s):
                if (d := _ps(m[3])) is not None:
                    p = _pin(m[1], m[2])
                    t.setup[p] = max(d, t.setup.get(p, 0))
            for m in _ARC.finditer(s):
                if (d := _ps(m[5])) is not None:
                    t.arcs.setdefault(_pin(m[1], m[2]), []).append((_pin(m[3], m[4]), d))
    return lib


def yosys_bin() -> str:
    """Path of Debian's yosys (the one with synth_xilinx)."""
    path = shutil.which("yosys")
    if path is None:
        raise SystemExit("yosys not found: apt-get install yosys (Debian's has synth_xilinx)")
    return path


@cache
def library() -> dict[str, CellTiming]:
    """Timing of the Xilinx primitives, parsed from this yosys' cells_sim.v."""
    lib = Path(yosys_bin()).resolve().parents[1] / "share" / "yosys" / "xilinx" / "cells_sim.v"
    if not lib.exists():
        raise SystemExit(f"{lib} not found: needs Debian's yosys with its share directory")
    return parse_specify(lib.read_text())


def _param(params: dict, name: str, default: int | str) -> int | str:
    """A cell parameter from Yosys JSON (binary strings for integers), or the primitive default."""
    v = params.get(name)
    if v is None:
        return default
    if isinstance(default, int):
        return int(v, 2) if isinstance(v, str) else int(v)
    return v.strip()


def dsp_timing(params: dict) -> CellTiming:
    """DSP48E1 (no pre-adder, no pattern detect) as in cells_sim.v's register-dependent tables."""
    reg = {k: bool(_param(params, k + "REG", 1)) for k in "ABCMP"}
    mult = _param(params, "USE_MULT", "MULTIPLY") != "NONE"
    inputs = {  # pins, then (register, setup into it) in path order
        "A": (("A", "ACIN"), (("A", 254), ("M", 1416), ("P", 2739 if mult else 1441))),
        "B": (("B", "BCIN"), (("B", 324), ("M", 1285), ("P", 2608 if mult else 1428))),
        "C": (("C",), (("C", 168), ("P", 1244))),
        "PCIN": (("PCIN",), (("P", 1025),)),
    }
    comb = {  # delay to (P, PCOUT) with no register on the way
        "A": (2823, 2970) if mult else (1523, 1671),
        "B": (2690, 2838) if mult else (1509, 1658),
        "C": (1325, 1474),
        "PCIN": (1107, 1255),
    }
    t = CellTiming()
    for port, (pins, regs) in inputs.items():
        setup = next((d for r, d in regs if reg[r]), None)
        for pin in pins:
            if setup is None:
                to_p, to_pcout = comb[port]
                t.arcs[(pin, None)] = [(("P", None), to_p), (("PCOUT", None), to_pcout)]
            else:
                t.setup[(pin, None)] = setup
    order = [("P", 329, 435), ("C", 1687, 1835)] + (
        [("M", 1671, 1819), ("A", 2952, 3098), ("B", 2813, 2960)]
        if mult
        else [("A", 1632, 1780), ("B", 1616, 1765)]
    )
    for r, p, pc in order:  # P's clock-to-out: from the last register on its path
        if reg[r]:
            t.clk_to_out = {("P", None): p, ("PCOUT", None): pc}
            break
    return t


def bram_timing(cell_type: str, params: dict) -> CellTiming:
    """RAMB18E1/RAMB36E1: setups from cells_sim.v; DO 2454 ps, or 882 ps with DO*_REG."""
    t = CellTiming(setup=dict(library()[cell_type].setup))
    for side, outs in (("A", ("DOADO", "DOPADOP")), ("B", ("DOBDO", "DOPBDOP"))):
        for out in outs:
            t.clk_to_out[(out, None)] = 882 if _param(params, f"DO{side}_REG", 0) else 2454
    return t


def cell_timing(cell: dict) -> CellTiming | None:
    """Timing of one netlist cell; None for a type the library does not time."""
    ty = cell["type"]
    if ty == "DSP48E1":
        return dsp_timing(cell["parameters"])
    if ty in ("RAMB18E1", "RAMB36E1"):
        return bram_timing(ty, cell["parameters"])
    return library().get(ty)


@dataclass
class TimedPath:
    """One timed path: delay, start/end points and what lies on it."""

    delay_ps: int
    kind: str
    start: str
    end: str
    cells: list[str]

    def count(self, pattern: str) -> int:
        """How many cells on the path have a type matching ``pattern``."""
        return sum(1 for c in self.cells if re.fullmatch(pattern, c))

    def summary(self) -> dict:
        """JSON form with the cell counts that matter."""
        return {
            "delay_ns": round(self.delay_ps / 1000, 3),
            "fmax_mhz": round(1e6 / self.delay_ps, 1),
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "lut_levels": sum(1 for c in self.cells if LUT_LEVEL.fullmatch(c)),
            "carry4": self.count("CARRY4"),
            "dsp48e1": self.count("DSP48E1"),
            "muxf": self.count("MUXF[78]"),
            "cells": self.cells,
        }


@dataclass
class Estimate:
    """Result of ``estimate``: paths per endpoint bus (worst first) and untimed cell types."""

    paths: list[TimedPath]
    untimed: dict[str, int]
    loops: int

    def worst(self, kind: str = "reg->reg") -> TimedPath | None:
        """The slowest path of one kind."""
        return next((p for p in self.paths if p.kind == kind), None)


def _bits(conns: dict, pin: Pin) -> list[int]:
    bits = conns.get(pin[0], [])
    sel = bits if pin[1] is None else bits[pin[1] : pin[1] + 1]
    return [b for b in sel if isinstance(b, int)]


def _propagate(
    seeds: dict[int, int], edges: dict[int, list[tuple[int, int, str]]]
) -> tuple[dict[int, int], dict[int, tuple[int, str]], int]:
    """Latest arrival per bit from ``seeds``, its predecessor, and bits left on loops."""
    indeg: dict[int, int] = defaultdict(int)
    for outs in edges.values():
        for ob, *_ in outs:
            indeg[ob] += 1
    arrival = dict(seeds)
    prev: dict[int, tuple[int, str]] = {}
    queue = deque(b for b in set(edges) | set(seeds) if indeg[b] == 0)
    while queue:
        b = queue.popleft()
        for ob, d, ty in edges.get(b, []):
            if b in arrival and arrival[b] + d > arrival.get(ob, -1):
                arrival[ob], prev[ob] = arrival[b] + d, (b, ty)
            indeg[ob] -= 1
            if indeg[ob] == 0:
                queue.append(ob)
    return arrival, prev, sum(1 for v in indeg.values() if v > 0)


def _net_names(mod: dict) -> dict[int, str]:
    """A name per bit: one the RTL wrote (no ``$``) if any, from the widest bus holding it."""
    names: dict[int, str] = {}
    ranked = sorted(
        mod["netnames"].items(),
        key=lambda kv: (kv[1].get("hide_name", 0), "$" in kv[0], -len(kv[1]["bits"])),
    )
    for net, info in ranked:
        bits = info["bits"]
        for i, b in enumerate(bits):
            if isinstance(b, int) and b not in names:
                names[b] = net if len(bits) == 1 else f"{net}[{i}]"
    return names


def estimate(netlist: dict, wire_ps: int = 400) -> Estimate:
    """Worst path into each endpoint bus of a flattened Yosys JSON netlist (top ``FLAT_TOP``).

    Register starts and input-port starts are timed separately, so a port path never hides a
    register-to-register one.
    """
    mod = netlist["modules"][FLAT_TOP]
    names = _net_names(mod)
    port_ff = library()[PORT_FF]
    seeds: dict[str, dict[int, int]] = {"reg": {}, "in": {}}
    origin: dict[int, str] = {}
    edges: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    ends: list[tuple[int, int, str, str]] = []  # (bit, wire + setup, endpoint, reg/out)
    untimed: dict[str, int] = defaultdict(int)
    for pname, p in mod["ports"].items():
        for i, b in enumerate(p["bits"]):
            if not isinstance(b, int):
                continue
            if p["direction"] == "input":
                seeds["in"][b], origin[b] = port_ff.clk_to_out[("Q", None)], f"port {pname}[{i}]"
            else:
                ends.append((b, wire_ps + port_ff.setup[("D", None)], f"port {pname}[{i}]", "out"))
    for cname, c in mod["cells"].items():
        t = cell_timing(c)
        if t is None:
            untimed[c["type"]] += 1
            continue
        ty, conns = c["type"], c["connections"]
        q = _bits(conns, ("Q", None)) if ty.startswith("FD") else []
        for pin, d in t.clk_to_out.items():
            for b in _bits(conns, pin):
                seeds["reg"][b], origin[b] = d, f"{ty} {names.get(b, cname)}"
        for pin, d in t.setup.items():
            wire = 0 if (ty, pin[0]) in DEDICATED else wire_ps
            what = names.get(q[0], cname) if q else cname
            ends += [(b, wire + d, f"{ty} {what} ({pin[0]})", "reg") for b in _bits(conns, pin)]
        for pin, outs in t.arcs.items():
            wire = 0 if (ty, pin[0]) in DEDICATED else wire_ps
            for b in _bits(conns, pin):
                edges[b] += [(ob, wire + d, ty) for opin, d in outs for ob in _bits(conns, opin)]

    best: dict[tuple[str, str], TimedPath] = {}
    loops = 0
    for start_kind, start_bits in seeds.items():
        arrival, prev, loops = _propagate(start_bits, edges)
        for b, extra, end, end_kind in ends:
            if b not in arrival:
                continue
            key = (f"{start_kind}->{end_kind}", re.sub(r"\[\d+\]", "", end))
            delay = arrival[b] + extra
            if key in best and best[key].delay_ps >= delay:
                continue
            cells, x = [], b
            while x in prev:
                x, ty = prev[x]
                cells.append(ty)
            best[key] = TimedPath(delay, key[0], origin[x], end, cells[::-1])
    paths = sorted(best.values(), key=lambda p: -p.delay_ps)
    return Estimate(paths, dict(untimed), loops)


@dataclass
class Synth:
    """A synthesized and flattened netlist in the cache."""

    work: Path
    top: str
    seconds: float

    @property
    def flat_json(self) -> Path:
        """The flattened JSON netlist (top renamed to ``FLAT_TOP``)."""
        return self.work / "flat.json"

    @property
    def stat(self) -> Path:
        """Yosys ``stat`` of the flattened design."""
        return self.work / "stat.txt"


def synthesize(verilog_text: str, top: str = "rmsmp_top", cache_dir: Path = CACHE) -> Synth:
    """Run synth_xilinx once per (Verilog, top, yosys); reuse the cached result after that."""
    yosys = yosys_bin()
    version = subprocess.run([yosys, "-V"], capture_output=True, text=True).stdout.strip()
    script = (
        f"read_verilog rtl.v; {SYNTH.format(top=top)}; flatten; opt_clean; "
        f"rename -top {FLAT_TOP}; tee -q -o stat.txt stat; write_json flat.json"
    )
    key = hashlib.sha256("\n".join([version, script, verilog_text]).encode()).hexdigest()[:16]
    work = cache_dir / key
    meta = work / "synth.json"
    if meta.exists():
        return Synth(work, top, json.loads(meta.read_text())["seconds"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "rtl.v").write_text(verilog_text)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [yosys, "-q", "-l", "yosys.log", "-p", script], cwd=work, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"yosys failed (log in {work}):\n{proc.stderr[-3000:]}")
    seconds = time.perf_counter() - t0
    meta.write_text(json.dumps({"top": top, "seconds": seconds, "yosys": version}) + "\n")
    return Synth(work, top, seconds)


def module_name(verilog_text: str, name: str) -> str:
    """The Verilog module called ``name`` or ending in ``.name`` (e.g. ``rq0``)."""
    mods = re.findall(r"^module\s+\\?(\S+?)\s*\(", verilog_text, re.M)
    hits = [m for m in mods if m == name or m.endswith("." + name)]
    if len(hits) != 1:
        raise SystemExit(f"--module {name}: matches {hits or 'nothing'}; modules: {mods}")
    return hits[0]


def crosscheck(flat_json: Path, wire_ps: int) -> dict:
    """Worst path by ../shared/tools/sta_estimate.py on the same netlist."""
    if not STA_TOOL.exists():
        raise SystemExit(f"--crosscheck: {STA_TOOL} not found (needs ../shared beside the repo)")
    out = subprocess.run(
        [sys.executable, str(STA_TOOL), str(flat_json), str(wire_ps)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"^([\d.]+) ns -> Fmax (\d+) MHz\s+end (\S+) (\S+)\s+start (\S+)", out, re.M)
    if m is None:
        raise SystemExit(f"sta_estimate: no path found in its output:\n{out[:2000]}")
    lv = re.search(r"LUT levels (\d+)", out[m.end() :])
    return {
        "tool": str(STA_TOOL.relative_to(REPO.parent)),
        "delay_ns": float(m[1]),
        "fmax_mhz": int(m[2]),
        "lut_levels": int(lv[1]) if lv else None,
    }


def _package_dir() -> Path:
    import rmsmp

    return Path(rmsmp.__file__).resolve().parent


def source_label() -> str:
    """The commit of the rmsmp package that generated the Verilog (``-dirty`` if modified)."""
    return subprocess.run(
        ["git", "-C", str(_package_dir()), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()


def command_line() -> str:
    """This run's command, with the PYTHONPATH that picked another checkout's rmsmp if any."""
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    pkg = _package_dir()
    return cmd if pkg == REPO else f"PYTHONPATH=<dir with rmsmp -> {pkg}> {cmd}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--board", default="pynq-z1")
    p.add_argument("--verilog", type=Path, help="time this Verilog instead of generating it")
    p.add_argument("--module", help="synthesize only this module, e.g. rq0")
    p.add_argument("--wire-ps", type=int, default=400, help="routing delay per general net")
    p.add_argument("--crosscheck", action="store_true", help="also run sta_estimate.py")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--out", type=Path, default=RESULTS / "timing.json")
    p.add_argument("--top-n", type=int, default=10, help="endpoint buses to list")
    args = p.parse_args()

    from rmsmp.arch import AccelConfig

    cfg = AccelConfig.for_board(args.board)
    if args.verilog:
        text, source = args.verilog.read_text(), str(args.verilog)
    else:
        from rmsmp.hw.generate import verilog_text

        text, source = verilog_text(cfg), f"rmsmp {source_label()}"
    top = module_name(text, args.module) if args.module else "rmsmp_top"
    synth = synthesize(text, top, args.cache)
    t0 = time.perf_counter()
    est = estimate(json.loads(synth.flat_json.read_text()), args.wire_ps)
    sta_s = time.perf_counter() - t0
    kind = "reg->reg" if not args.module else None
    worst = est.worst(kind) if kind else (est.paths[0] if est.paths else None)
    if worst is None:
        raise SystemExit("no timed path found")
    row = {
        "board": args.board,
        "config_hash": cfg.hash,
        "clock_mhz": cfg.clock_mhz,
        "source": source,
        "top": top,
        "wire_ps": args.wire_ps,
        "worst": worst.summary(),
        "meets_clock": worst.delay_ps <= 1e6 / cfg.clock_mhz,
        "worst_per_endpoint": [q.summary() for q in est.paths[: args.top_n]],
        "untimed_cells": est.untimed,
        "combinational_loop_bits": est.loops,
        "yosys_s": round(synth.seconds, 1),
        "estimate_s": round(sta_s, 1),
        "tool": f"yosys {SYNTH.format(top=top)} (Debian 0.23); benchmarks/timing.py",
        "command": command_line(),
    }
    if args.crosscheck:
        row["crosscheck"] = crosscheck(synth.flat_json, args.wire_ps)
    w = row["worst"]
    print(f"{source}, top {top}, {args.wire_ps} ps/net; clock {cfg.clock_mhz:g} MHz")
    print(f"{'ns':>7} {'MHz':>6} {'kind':<8} {'LUT':>3} {'CY4':>3} {'DSP':>3}  end <- start")
    for q in (worst, *[q for q in est.paths[: args.top_n] if q is not worst]):
        s = q.summary()
        print(
            f"{s['delay_ns']:7.2f} {s['fmax_mhz']:6.1f} {s['kind']:<8} {s['lut_levels']:3d} "
            f"{s['carry4']:3d} {s['dsp48e1']:3d}  {s['end']} <- {s['start']}"
        )
    verdict = "meets" if row["meets_clock"] else "MISSES"
    print(
        f"worst {kind or 'path'}: {w['delay_ns']} ns, Fmax {w['fmax_mhz']} MHz: {verdict} "
        f"{cfg.clock_mhz:g} MHz"
    )
    if "crosscheck" in row:
        print(f"sta_estimate: {row['crosscheck']['delay_ns']} ns")
    if est.untimed:
        print(f"cells without a timing model: {est.untimed}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
