"""The resource model: LUT, FF, DSP48E1 and BRAM36 of an AccelConfig without synthesizing it.

Calibrated on Yosys ``synth_xilinx`` runs of single modules (``benchmarks/pe_resources.py`` writes
``resource_model.json`` beside this file): each PE unit of ``arch.layout.pe_units`` costs
``a + b * cols`` of its kind (a PoT-4, SP2-4, Fixed-4 or Fixed-8 row, a packed Fixed-4 pair, or a
Fixed-4 row multiplied in LUTs; refitted on the presets' own rows, ``--from-presets``, where they
give a kind two widths), each requant lane a fixed amount, and everything else (buffers,
fetch, load, store, DMA ports, queues, registers, compute control and its accumulators, the
array's input registers) ``a + b * rows`` through the calibrated presets (tiny and pynq-z1;
larger arrays extrapolate).
Block RAM is the buffers' alone (``arch.isa.buffer_shapes``): each buffer deeper than the
model's ``lutram_max_depth`` takes the cheapest of the block RAM shapes Yosys maps to (RAMB36E1
and RAMB18E1 width x depth; ``memory_bram36``), so buffer depths and the array's width (the W
entry grows with rows x cols) count as they do in synthesis. LUT counts LUT sites, LUTRAM
included, as ``benchmarks/resources.py`` does. numpy and the standard library only.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..arch import FORMATS, AccelConfig
from ..arch.isa import buffer_shapes
from ..arch.layout import PeUnit, pe_units

MODEL_FILE = Path(__file__).with_name("resource_model.json")
RESOURCES = ("lut", "ff", "dsp", "bram36")
NAMES = {"lut": "LUT", "ff": "FF", "dsp": "DSP48E1", "bram36": "BRAM36"}
FORMAT_ORDER = tuple(FORMATS)
"""The weight formats, in the order the model's tables list them."""
LANES, REST, BUFFERS = "requant lanes", "rest", "buffers"
"""The parts of an estimate that are not PE units (BUFFERS: the buffers' block RAM)."""
HINTS = {
    LANES: "use fewer requant_lanes",
    REST: "use fewer columns (rows)",
    BUFFERS: "use smaller buffer depths (x_depth, w_depth, acc_depth, out_depth, q_depth)",
}
"""What to shrink when a part that is not a PE unit is the largest user of a resource."""


def unit_kind(fmt: str, rows: int, lut_mul: bool = False) -> str:
    """The model's name of a PE unit kind, e.g. ``pot4x1``, ``fixed4x2`` (a packed pair) or
    ``fixed4-lutx1`` (a Fixed-4 row multiplied in LUTs)."""
    return f"{fmt}{'-lut' if lut_mul else ''}x{rows}"


@functools.cache
def load(path: Path = MODEL_FILE) -> dict:
    """The calibrated coefficients."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing: run python benchmarks/pe_resources.py to calibrate the model"
        ) from None


@dataclass(frozen=True)
class Estimate:
    """Estimated resources of a config, in total and by part (PE kinds, lanes, rest)."""

    lut: float
    ff: float
    dsp: float
    bram36: float
    parts: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain data (rounded) for JSON."""
        d = asdict(self)
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in d.items()}


def _linear(coef: dict[str, list[float]], x: int, times: int = 1) -> dict[str, float]:
    return {r: times * (coef[r][0] + coef[r][1] * x) for r in RESOURCES}


def memory_bram36(bits: int, depth: int, data: dict | None = None) -> float:
    """BRAM36 (a RAMB18E1 counts half) of one ``bits`` x ``depth`` memory: none at or below the
    model's ``lutram_max_depth`` (distributed RAM, counted in the rest's LUTs), else the
    cheapest of its block RAM shapes, each tiled ceil(bits / width) x ceil(depth / depth')."""
    mem = (load() if data is None else data)["memory"]
    if depth <= mem["lutram_max_depth"]:
        return 0.0
    return min(
        cost * -(-bits // width) * -(-depth // deep) for cost, width, deep in mem["bram_shapes"]
    )


def buffers_bram36(cfg: AccelConfig, data: dict | None = None) -> float:
    """BRAM36 of ``cfg``'s buffers (``arch.isa.buffer_shapes``, ``memory_bram36``)."""
    data = load() if data is None else data
    return sum(memory_bram36(bits, depth, data) for bits, depth in buffer_shapes(cfg).values())


def estimate(
    cfg: AccelConfig,
    pe_costs: dict[str, dict[str, float]] | None = None,
    units: list[PeUnit] | None = None,
) -> Estimate:
    """Resources of ``cfg``. ``pe_costs`` (PE kind -> resources of one unit at ``cfg.cols``)
    replaces the model's PE units and ``units`` the array's (``arch.layout.pe_units``), e.g.
    with the measured rows of an older design."""
    data = load()
    parts: dict[str, dict[str, float]] = {}
    for unit in pe_units(cfg) if units is None else units:
        kind = unit_kind(*unit)
        if pe_costs is not None:
            one = pe_costs[kind]
        else:
            one = _linear(data["pe"][kind], cfg.cols)
        got = parts.setdefault(kind, dict.fromkeys(RESOURCES, 0.0))
        for r in RESOURCES:
            got[r] += one[r]
    parts[LANES] = {r: cfg.requant_lanes * data["lane"][r] for r in RESOURCES}
    parts[REST] = _linear(data["rest"], cfg.rows)
    parts[BUFFERS] = {**dict.fromkeys(RESOURCES, 0.0), "bram36": buffers_bram36(cfg, data)}
    total = {r: sum(p[r] for p in parts.values()) for r in RESOURCES}
    return Estimate(**total, parts=parts)


def overshoot(cfg: AccelConfig, part: str, capacity: dict[str, int]) -> str | None:
    """Why ``cfg`` does not fit ``capacity`` (resource -> available on ``part``), or None.

    The message names the first resource over budget, by how much, and what to shrink.
    """
    est = estimate(cfg)
    device = re.match(r"xc7z\d+", part)
    device_name = device[0] if device else part
    for r in RESOURCES:
        need, have = getattr(est, r), capacity[r]
        if need <= have:
            continue
        biggest = max(est.parts, key=lambda k: est.parts[k][r])
        what = {
            unit_kind(*u): f"{u.fmt} {'lut_rows' if u.lut_mul else 'rows'}" for u in pe_units(cfg)
        }
        hint = HINTS.get(biggest, f"use fewer {what.get(biggest)} or fewer columns")
        return (
            f"config {cfg.name} needs {need:,.0f} {NAMES[r]}, {need - have:,.0f} more than "
            f"{device_name}'s {have:,}; {hint}"
        )
    return None
