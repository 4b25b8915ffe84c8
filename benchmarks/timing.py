"""Worst register-to-register path of a board preset, estimated from the Yosys netlist.

Generates the preset's Verilog (``rmsmp.hw.generate.verilog_text``) or reads ``--verilog``, runs
Yosys ``synth_xilinx -family xc7 -noiopad`` on it one module at a time (``synthesize_modules``:
cached per module, so a change resynthesizes what it touches), joins the mapped modules into one
flat netlist, the MAC array's PE units left out as blackboxes, and finds the longest path from cell
delays plus one routing delay per general net (``--wire-ps``, 400 by default; zero on the dedicated
CARRY4, MUXF7/F8 and DSP cascade links). Delays, clock-to-out and setup times come from the specify
blocks of Yosys' ``xilinx/cells_sim.v`` (prjxray Artix-7 -1 numbers); DSP48E1 and BRAM outputs
follow that file's register-dependent tables. The worst path is then scaled to the board's part and
speed grade (``SPEED``). No placement, no clock skew: a rough estimate, not a vendor timing report.
Each distinct PE unit is timed alone and joined to the rest at its pins (``compose``: exact where a
pin is registered on one side, as every PE unit's are; an upper bound elsewhere), so a 60 x 60
array needs no flat netlist of every MAC; ``--whole`` flattens them in too.

``--module NAME`` times one module of the generated Verilog with what is under it (e.g.
``rq0``), its ports taken as flip-flops outside it: a lower bound for paths that cross its
boundary. ``--blackbox NAME`` times more modules alone and joins them the same way.
``--crosscheck`` also runs ../shared/tools/sta_estimate.py on the whole flat netlist.
Synthesis results are cached under ~/.cache/rmsmp/synth. Prints a table and writes
benchmarks/results/timing_BOARD.json (``--out`` to change); ``--readme`` rewrites the README's
timing table from those files.
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
from dataclasses import dataclass, field, replace
from fnmatch import fnmatch
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
SPEED = {"xc7z020-1": 1.0, "xc7z045-2": 0.75}
"""Path delay on a part and grade over the cell library's (cells_sim.v: prjxray's Zynq-7020 /
Artix-7 -1 numbers). The XC7Z045 is Kintex-7 fabric: prjxray's SDF of a Kintex-class -2 part
(xc7vx485t-2, openXC7/prjxray-db virtex7/timings) has LUT6 43 ps against 124, CARRY4 CIN->CO3
53 against 114, S0->CO3 248 against 508, CYINIT->O3 326 against 642: 0.35 to 0.51 of the -1
cell delays. No public table here gives the routing's ratio, so the whole path, routing
included, is scaled by 0.75: slower than every one of those cell ratios."""

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
def yosys_version() -> str:
    """The version line of ``yosys_bin()`` (part of every cache key)."""
    return subprocess.run([yosys_bin(), "-V"], capture_output=True, text=True).stdout.strip()


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


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


def boundary_timing(cell: dict) -> CellTiming:
    """A blackboxed module's instance: every output starts and every input ends at a flip-flop,
    as the ports of a module synthesized alone do."""
    ff = library()[PORT_FF]
    t = CellTiming()
    for pin, direction in cell["port_directions"].items():
        if direction == "output":
            t.clk_to_out[(pin, None)] = ff.clk_to_out[("Q", None)]
        elif pin not in CLOCKS | {"clk"}:
            t.setup[(pin, None)] = ff.setup[("D", None)]
    return t


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


def estimate(netlist: dict, wire_ps: int = 400, boxes: tuple[str, ...] = ()) -> Estimate:
    """Worst path into each endpoint bus of a flattened Yosys JSON netlist (top ``FLAT_TOP``).

    Register starts and input-port starts are timed separately, so a port path never hides a
    register-to-register one. Instances of the blackboxed modules ``boxes`` count as registers
    (``boundary_timing``), their own kind of start and end (``box->reg``, ``reg->box``), so
    that ``compose`` can join the paths at their pins with the paths inside them.
    """
    mod = netlist["modules"][FLAT_TOP]
    names = _net_names(mod)
    port_ff = library()[PORT_FF]
    seeds: dict[str, dict[int, int]] = {"reg": {}, "in": {}, "box": {}}
    origin: dict[int, str] = {}
    edges: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    ends: list[tuple[int, int, str, str]] = []  # (bit, wire + setup, endpoint, reg/out/box)
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
        boxed = c["type"] in boxes
        t = boundary_timing(c) if boxed else cell_timing(c)
        if t is None:
            untimed[c["type"]] += 1
            continue
        ty, conns = c["type"], c["connections"]
        kind = "box" if boxed else "reg"
        q = _bits(conns, ("Q", None)) if ty.startswith("FD") else []
        for pin, d in t.clk_to_out.items():
            for b in _bits(conns, pin):
                seeds[kind][b], origin[b] = d, f"{ty} {names.get(b, cname)}"
        for pin, d in t.setup.items():
            wire = 0 if (ty, pin[0]) in DEDICATED else wire_ps
            what = names.get(q[0], cname) if q else cname
            ends += [(b, wire + d, f"{ty} {what} ({pin[0]})", kind) for b in _bits(conns, pin)]
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
    version = yosys_version()
    script = (
        f"read_verilog rtl.v; {SYNTH.format(top=top)}; flatten; opt_clean; "
        f"rename -top {FLAT_TOP}; tee -q -o stat.txt stat; write_json flat.json"
    )
    work = cache_dir / _key(version, script, verilog_text)
    meta = work / "synth.json"
    if meta.exists():
        return Synth(work, top, json.loads(meta.read_text())["seconds"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "rtl.v").write_text(verilog_text)
    seconds = _yosys_run(work, script, top)
    meta.write_text(json.dumps({"top": top, "seconds": seconds, "yosys": version}) + "\n")
    return Synth(work, top, seconds)


UNIT = "__unit__"
"""The name every module is synthesized under (identical modules share one synthesis)."""
UNIT_SYNTH = (
    "read_verilog rtl.v; " + SYNTH.format(top=UNIT) + " -noclkbuf; "
    f"select {UNIT}; write_rtlil -selected unit.il"
)


def _yosys_run(work: Path, script: str, what: str) -> float:
    """Run a Yosys script in ``work`` (log in yosys.log); seconds taken."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [yosys_bin(), "-q", "-l", "yosys.log", "-p", script],
        cwd=work,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"yosys failed on {what} (log in {work}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


_ZERO_INIT = re.compile(r"^  initial begin\n(?:    \S+\[\d+\] = \d+'[bhd]0+;\n)+  end\n", re.M)
"""An ``initial`` block that sets every word of a memory to zero (as Amaranth writes one for
each ``Memory``): one line per word, 3 MB of the zc706 top, which kept Yosys 0.23 busy for
hours where the same module without them maps in 4 minutes."""


def drop_zero_init(module_text: str) -> str:
    """``module_text`` without its all-zero memory ``initial`` blocks: the same cells, since a
    7-series block or distributed RAM (and a flip-flop) comes out of configuration holding its
    INIT value, zero unless set."""
    return _ZERO_INIT.sub("", module_text)


def unit_text(mods: dict[str, str], name: str) -> str:
    """Module ``name`` of ``split_modules`` as ``synthesize_modules`` synthesizes it: renamed
    ``UNIT``, its ports sorted, its all-zero memory inits dropped (``drop_zero_init``), the
    modules it instantiates as blackboxes after it."""
    body = drop_zero_init(mods[name])
    header = _HEADER.search(body)
    ports = sorted(p.strip() for p in header[2].split(","))  # named connections only
    ports = [p + " " if p.startswith("\\") else p for p in ports]  # escaped names end at " "
    subs = [i for i in dict.fromkeys(_INSTANCE.findall(body)) if i in mods]
    return (
        body[: header.start()]
        + f"module {UNIT} ({', '.join(ports)});"
        + body[header.end() :]
        + "".join(blackbox(mods[c]) for c in subs)
    )


def unit_dir(mods: dict[str, str], name: str, cache_dir: Path = CACHE) -> Path:
    """Where ``synthesize_modules`` caches module ``name`` of ``split_modules`` (its mapped
    netlist is ``unit.il`` there once synthesized)."""
    return cache_dir / _key(yosys_version(), UNIT_SYNTH, unit_text(mods, name))


def synthesize_modules(
    verilog_text: str, top: str = "rmsmp_top", cache_dir: Path = CACHE, boxes: tuple[str, ...] = ()
) -> Synth:
    """``synthesize`` one module at a time, then put the mapped modules together and flatten.

    synth_xilinx (without -flatten) maps each module on its own, so this is the whole design's
    netlist; but each module is cached by its own text (renamed to ``UNIT``, its submodules
    blackboxed, its ports sorted), so a change resynthesizes only the modules it touches, and
    modules of the same text (the PE rows of one format) are synthesized once. Modules in
    ``boxes`` stay blackboxes.
    """
    version = yosys_version()
    cache_dir = cache_dir.resolve()
    mods = split_modules(verilog_text)
    todo, order = [top], []
    while todo:
        name = todo.pop()
        if name in order:
            continue
        order.append(name)
        if name not in boxes:
            todo += [i for i in _INSTANCE.findall(mods[name]) if i in mods]
    units, seconds = {}, 0.0
    for name in order:
        if name in boxes:
            continue
        work = unit_dir(mods, name, cache_dir)
        if not (work / "unit.il").exists():
            work.mkdir(parents=True, exist_ok=True)
            (work / "rtl.v").write_text(unit_text(mods, name))
            seconds += _yosys_run(work, UNIT_SYNTH, name)
        units[name] = work / "unit.il"
    compose = "".join(f"read_rtlil {il}; rename {UNIT} \\{name}; " for name, il in units.items())
    if boxes:
        compose += "read_verilog rtl_boxes.v; "
    compose += (
        f"hierarchy -top \\{top}; flatten; opt_clean; rename -top {FLAT_TOP}; "
        "tee -q -o stat.txt stat; write_json flat.json"
    )
    work = cache_dir / _key(version, compose, *(str(p) for p in units.values()))
    meta = work / "synth.json"
    if not meta.exists():
        work.mkdir(parents=True, exist_ok=True)
        (work / "rtl_boxes.v").write_text("".join(blackbox(mods[b]) for b in boxes))
        seconds += _yosys_run(work, compose, f"{top} (composing {len(units)} modules)")
        meta.write_text(json.dumps({"top": top, "seconds": seconds, "yosys": version}) + "\n")
    return Synth(work, top, json.loads(meta.read_text())["seconds"])


def module_name(verilog_text: str, name: str) -> str:
    """The Verilog module called ``name`` or ending in ``.name`` (e.g. ``rq0``)."""
    mods = re.findall(r"^module\s+\\?(\S+?)\s*\(", verilog_text, re.M)
    hits = [m for m in mods if m == name or m.endswith("." + name)]
    if len(hits) != 1:
        raise SystemExit(f"--module {name}: matches {hits or 'nothing'}; modules: {mods}")
    return hits[0]


_INSTANCE = re.compile(r"^\s+\\?(\S+)\s+\S+\s*\($", re.M)


def split_modules(verilog_text: str) -> dict[str, str]:
    """Each module's text (its attribute lines included) by name, from write_verilog output."""
    mods: dict[str, str] = {}
    chunk: list[str] = []
    inside = False
    for line in verilog_text.splitlines(keepends=True):
        if not inside and not line.startswith(("(*", "module")):
            chunk = []  # between modules
            continue
        chunk.append(line)
        inside = inside or line.startswith("module")
        if line.startswith("endmodule"):
            body = "".join(chunk)
            mods[re.search(r"^module\s+\\?(\S+?)\s*\(", body, re.M)[1]] = body
            chunk, inside = [], False
    return mods


_HEADER = re.compile(r"^module\s+(\\?\S+?)\s*\((.*?)\);", re.M | re.S)


def blackbox(module_text: str) -> str:
    """A module cut down to its port declarations, marked ``(* blackbox *)``."""
    header = _HEADER.search(module_text)[0]
    ports = [ln for ln in module_text.splitlines() if ln.startswith(("  input ", "  output "))]
    return "\n".join(["(* blackbox *)", header, *ports, "endmodule", ""])


def subtree(verilog_text: str, top: str, boxes: tuple[str, ...] = ()) -> str:
    """The text of module ``top`` and every module under it, those named in ``boxes`` (full names)
    as blackboxes: all Yosys needs to synthesize ``top`` (a fraction of the whole file's
    parse time), and the cache key of that synthesis."""
    mods = split_modules(verilog_text)
    out, todo, seen = [], [top], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in boxes:
            out.append(blackbox(mods[name]))
            continue
        out.append(mods[name])
        todo += [i for i in _INSTANCE.findall(mods[name]) if i in mods]
    return "".join(out)


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
    """This run's command as typed at the repository root (wherever it was started from), with
    the PYTHONPATH that picked another checkout's rmsmp if any."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(REPO):
        script = script.relative_to(REPO)
    cmd = "python " + " ".join([script.as_posix(), *sys.argv[1:]])
    pkg = _package_dir()
    return cmd if pkg == REPO else f"PYTHONPATH=<dir with rmsmp -> {pkg}> {cmd}"


def part_of(preset: str) -> str:
    """The FPGA part (with its grade) of the board a preset is sized for."""
    from e2e import board_of

    from rmsmp.arch import AccelConfig
    from rmsmp.boards import board

    return board(board_of(AccelConfig.for_board(preset))).part


def speed_scale(part: str) -> float:
    """``SPEED``'s factor for a Zynq part name with its grade, e.g. ``xc7z045ffg900-2``."""
    device, grade = re.match(r"xc7z\d+", part)[0], part.rpartition("-")[2]
    key = f"{device}-{grade}"
    if key not in SPEED:
        raise SystemExit(f"no speed factor for {part} ({key}); known: {sorted(SPEED)}")
    return SPEED[key]


ARRAY_UNITS = re.compile(r".*\.array\.pe\d+")
"""The modules ``time_design`` blackboxes by default: the MAC array's PE units (most of a large
preset's cells, a few distinct texts, every port registered on one side)."""


def box_groups(verilog_text: str, boxes: tuple[str, ...]) -> dict[str, list[str]]:
    """The blackboxed modules grouped by their text (the module's own name taken out), each
    group under its first member: one synthesis and one estimate serve the whole group."""
    mods = split_modules(verilog_text)

    def key(name: str) -> tuple:
        subs = [i for i in dict.fromkeys(_INSTANCE.findall(mods[name])) if i in mods]
        return (unit_text(mods, name), *(key(c) for c in subs))

    groups: dict[tuple, list[str]] = {}
    for b in boxes:
        groups.setdefault(key(b), []).append(b)
    return {members[0]: members for members in groups.values()}


def compose(parent: Estimate, parts: dict[str, tuple[list[str], Estimate]], wire_ps: int) -> list:
    """Register-to-register paths across the pins of the blackboxed modules.

    ``parts`` maps a group's first module to (its members, the estimate of that module alone).
    A path into a pin is the parent's worst path into the group's pins joined to the module's
    worst path from an input port (a path out, the module's worst into an output port joined to
    the parent's worst from the group's pins); the port's flip-flop (clock-to-out and setup)
    and one net are counted once. Where the pins are registered on one side (the PE units: the
    array's input register in front, their output register behind) that is the path exactly;
    otherwise it bounds it from above, since the two halves may cross different pins.
    """
    ff = library()[PORT_FF]
    joint = ff.clk_to_out[("Q", None)] + ff.setup[("D", None)] + wire_ps

    def worst(paths: list, kinds: tuple[str, ...], where) -> TimedPath | None:
        hits = [p for p in paths if p.kind in kinds and where(p)]
        return max(hits, key=lambda p: p.delay_ps, default=None)

    def join(a: TimedPath, b: TimedPath, start: str, end: str) -> TimedPath:
        return TimedPath(a.delay_ps + b.delay_ps - joint, "reg->reg", start, end, a.cells + b.cells)

    into, outof = ("reg->box", "in->box", "box->box"), ("box->reg", "box->out", "box->box")
    any_out = worst(parent.paths, outof, lambda p: True)
    out = []
    for rep, (members, est) in parts.items():
        tys = tuple(f"{m} " for m in members)
        p_in = worst(parent.paths, into, lambda p, tys=tys: p.end.startswith(tys))
        p_out = worst(parent.paths, outof, lambda p, tys=tys: p.start.startswith(tys)) or any_out
        c_in = worst(est.paths, ("in->reg",), lambda p: True)
        c_out = worst(est.paths, ("reg->out",), lambda p: True)
        c_thru = worst(est.paths, ("in->out",), lambda p: True)
        if p_in and c_in:
            out.append(join(p_in, c_in, p_in.start, f"{rep}: {c_in.end}"))
        if c_out and p_out:
            out.append(join(c_out, p_out, f"{rep}: {c_out.start}", p_out.end))
        if p_in and c_thru and p_out:
            out.append(join(join(p_in, c_thru, p_in.start, ""), p_out, p_in.start, p_out.end))
    return out


@dataclass
class Timing:
    """Result of ``time_netlist``: every timed path (worst first), the joined ones among them,
    the blackboxed groups, and what the runs took."""

    paths: list[TimedPath]
    boundary: list[TimedPath]
    groups: dict[str, int]
    untimed: dict[str, int]
    loops: int
    yosys_s: float
    estimate_s: float


def time_netlist(
    text: str,
    top: str = "rmsmp_top",
    boxes: tuple[str, ...] = (),
    wire_ps: int = 400,
    cache_dir: Path = CACHE,
) -> Timing:
    """Time module ``top`` of a Verilog text with the modules ``boxes`` (full names) as
    blackboxes: each distinct one (``box_groups``) synthesized and estimated alone, its
    register-to-register paths kept and its ports joined to the rest (``compose``)."""
    synth = synthesize_modules(text, top, cache_dir, boxes)
    seconds, t0 = synth.seconds, time.perf_counter()
    est = estimate(json.loads(synth.flat_json.read_text()), wire_ps, boxes)
    parts: dict[str, tuple[list[str], Estimate]] = {}
    untimed = dict(est.untimed)
    for rep, members in box_groups(text, boxes).items():
        alone = synthesize_modules(text, rep, cache_dir)
        seconds += alone.seconds
        parts[rep] = (members, estimate(json.loads(alone.flat_json.read_text()), wire_ps))
        for ty, n in parts[rep][1].untimed.items():
            untimed[ty] = untimed.get(ty, 0) + n * len(members)
    paths = [p for p in est.paths if "box" not in p.kind]
    for rep, (_, part_est) in parts.items():
        paths += [
            replace(p, start=f"{rep}: {p.start}", end=f"{rep}: {p.end}")
            for p in part_est.paths
            if p.kind == "reg->reg"
        ]
    boundary = sorted(compose(est, parts, wire_ps), key=lambda p: -p.delay_ps)
    return Timing(
        paths=sorted(paths + boundary, key=lambda p: -p.delay_ps),
        boundary=boundary,
        groups={rep: len(members) for rep, (members, _) in parts.items()},
        untimed=untimed,
        loops=est.loops,
        yosys_s=seconds,
        estimate_s=time.perf_counter() - t0,
    )


def time_design(
    board: str,
    text: str,
    module: str | None = None,
    boxes: tuple[str, ...] = (),
    wire_ps: int = 400,
    cache_dir: Path = CACHE,
    top_n: int = 10,
    whole: bool = False,
) -> tuple[dict, Timing]:
    """Time a board's design (``time_netlist``); the JSON row.

    The whole design is judged on register-to-register paths (its ports meet the PS7's
    registered AXI ports); a ``module`` alone on every path, its ports counting as registers.
    Unless ``whole``, the MAC array's PE units (``ARRAY_UNITS``) and the modules matching a
    ``boxes`` pattern are blackboxes: a 60 x 60 array is timed from a handful of module
    estimates instead of one flat netlist of every PE. ``part_delay_ns`` scales the worst path
    to the board's part and grade (``SPEED``).
    """
    from rmsmp.arch import AccelConfig

    cfg, part = AccelConfig.for_board(board), part_of(board)
    top = module_name(text, module) if module else "rmsmp_top"
    below = [n for n in split_modules(subtree(text, top)) if n != top]
    boxed = tuple(
        n
        for n in below
        if any(fnmatch(n, b) or n.endswith("." + b) for b in boxes)
        or (not whole and module is None and ARRAY_UNITS.fullmatch(n))
    )
    tm = time_netlist(text, top, boxed, wire_ps, cache_dir)
    kinds = ("reg->reg",) if module is None else ("reg->reg", "in->reg", "reg->out", "in->out")
    worst = next((p for p in tm.paths if p.kind in kinds), None)
    if worst is None:
        raise SystemExit("no timed path found")
    scale = speed_scale(part)
    part_ps = worst.delay_ps * scale
    row = {
        "board": board,
        "part": part,
        "speed_scale": scale,
        "config_hash": cfg.hash,
        "clock_mhz": cfg.clock_mhz,
        "top": top,
        "method": "composed" if tm.groups else "whole",
        "blackboxes": [{"module": m, "instances": n} for m, n in tm.groups.items()],
        "wire_ps": wire_ps,
        "worst": worst.summary(),
        "part_delay_ns": round(part_ps / 1000, 3),
        "part_fmax_mhz": round(1e6 / part_ps, 1),
        "meets_clock": part_ps <= 1e6 / cfg.clock_mhz,
        "worst_per_endpoint": [q.summary() for q in tm.paths[:top_n]],
        "boundary_paths": [q.summary() for q in tm.boundary[:top_n]],
        "untimed_cells": tm.untimed,
        "combinational_loop_bits": tm.loops,
        "yosys_s": round(tm.yosys_s, 1),
        "estimate_s": round(tm.estimate_s, 1),
        "tool": f"yosys {SYNTH.format(top=top)}, module by module; benchmarks/timing.py",
        "yosys": {"binary": yosys_bin(), "version": yosys_version()},
    }
    return row, tm


BOARD_PRESETS = (
    "pynq-z1",
    "pynq-z1-fixed4-dsp",
    "zc706",
    "zc706-fixed4-dsp",
    "pynq-z1-fixed4-fill",
    "zc706-fixed4-fill",
)
"""The presets sized for a board (issue 17's clock goals apply to each)."""
TABLE_BOARDS = (
    "pynq-z1",
    "pynq-z1-fixed4-dsp",
    "pynq-z1-fixed4-fill",
    "zc706",
    "zc706-fixed4-dsp",
    "zc706-fixed4-fill",
)
"""The presets with a recorded estimate (benchmarks/results/timing_PRESET.json), listed in the
README's timing table: every preset of ``BOARD_PRESETS`` (tests/test_clock.py)."""


def timing_table() -> str:
    """The README's timing table: per preset, the worst path and the clock set from it."""
    rows = [
        "| preset (part) | clock | worst register-to-register path (-1 cell delays + routing) "
        "| on the part | timed as | command |",
        "|---|---|---|---|---|---|",
    ]
    for b in TABLE_BOARDS:
        t = json.loads((RESULTS / f"timing_{b}.json").read_text())
        w = t["worst"]
        scaled = "" if t["speed_scale"] == 1 else f" (x {t['speed_scale']:g} for the grade)"
        boxes = ", ".join(f"{x['instances']} x {x['module']}" for x in t["blackboxes"])
        how = f"{t['method']}: {boxes} alone, joined at their pins" if boxes else t["method"]
        rows.append(
            f"| `{b}` ({t['part']}) | {t['clock_mhz']:g} MHz | {w['delay_ns']:.2f} ns "
            f"({t['wire_ps']} ps/net; {w['lut_levels']} LUT, {w['carry4']} CARRY4, "
            f"{w['dsp48e1']} DSP48E1): {w['start']} -> {w['end']} | "
            f"{t['part_delay_ns']:.2f} ns{scaled} = {t['part_fmax_mhz']:.0f} MHz, "
            f"{'meets' if t['meets_clock'] else 'MISSES'} {t['clock_mhz']:g} MHz | {how} | "
            f"`{t['command']}` |"
        )
    return "\n".join(rows) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--board", default="pynq-z1")
    p.add_argument("--verilog", type=Path, help="time this Verilog instead of generating it")
    p.add_argument("--module", help="synthesize only this module, e.g. rq0")
    p.add_argument(
        "--blackbox",
        action="append",
        default=[],
        help="time this module (a name, its last part, or a glob) alone and join it at its pins",
    )
    p.add_argument(
        "--whole", action="store_true", help="one flat netlist, the PE units included (slow)"
    )
    p.add_argument("--wire-ps", type=int, default=400, help="routing delay per general net")
    p.add_argument("--crosscheck", action="store_true", help="also run sta_estimate.py")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--out", type=Path, help="default benchmarks/results/timing_BOARD.json")
    p.add_argument("--top-n", type=int, default=10, help="endpoint buses to list")
    p.add_argument("--readme", action="store_true", help="only rewrite the README's timing table")
    args = p.parse_args()
    if args.readme:
        from readme import replace_block

        replace_block("timing-table", timing_table())
        return 0

    if args.verilog:
        text, source = args.verilog.read_text(), str(args.verilog)
    else:
        from rmsmp.arch import AccelConfig
        from rmsmp.hw.generate import verilog_text

        text, source = verilog_text(AccelConfig.for_board(args.board)), f"rmsmp {source_label()}"
    row, _ = time_design(
        args.board,
        text,
        args.module,
        tuple(args.blackbox),
        args.wire_ps,
        args.cache,
        args.top_n,
        args.whole,
    )
    row = {**row, "source": source, "command": command_line()}
    if args.crosscheck:
        row["crosscheck"] = crosscheck(synthesize_modules(text).flat_json, args.wire_ps)
    w, clock = row["worst"], row["clock_mhz"]
    print(
        f"{source}, {args.board} ({row['part']}, delays x{row['speed_scale']:g}), "
        f"top {row['top']}, {args.wire_ps} ps/net; clock {clock:g} MHz; {row['method']}: "
        + ", ".join(f"{b['module']} x{b['instances']}" for b in row["blackboxes"])
    )
    print(f"{'ns':>7} {'MHz':>6} {'kind':<8} {'LUT':>3} {'CY4':>3} {'DSP':>3}  end <- start")
    for s in row["worst_per_endpoint"]:
        print(
            f"{s['delay_ns']:7.2f} {s['fmax_mhz']:6.1f} {s['kind']:<8} {s['lut_levels']:3d} "
            f"{s['carry4']:3d} {s['dsp48e1']:3d}  {s['end']} <- {s['start']}"
        )
    verdict = "meets" if row["meets_clock"] else "MISSES"
    print(
        f"worst {w['kind']}: {w['delay_ns']} ns (-1 cells), {row['part_delay_ns']} ns on "
        f"{row['part']} = Fmax {row['part_fmax_mhz']} MHz: {verdict} {clock:g} MHz"
    )
    if "crosscheck" in row:
        print(f"sta_estimate: {row['crosscheck']['delay_ns']} ns")
    if row["untimed_cells"]:
        print(f"cells without a timing model: {row['untimed_cells']}")
    out = args.out or RESULTS / f"timing_{args.board}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
