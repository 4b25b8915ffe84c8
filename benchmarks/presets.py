"""Size each board's presets from the resource model: the mixed array and its Fixed-4 baselines.

For every array size R (R PE rows x R columns) and every split of the rows into PoT-4 : Fixed-4 :
Fixed-8 (Fixed-8 held at about 5% of the rows, at least one, as the paper's ratios have it), the
calibrated resource model (``rmsmp.boards.resources``) estimates LUT (LUTRAM included), FF,
DSP48E1 and BRAM36 at each preset's own buffer depths (zc706's W buffer is 512 entries deep:
1,024 took 420 of the part's 545 BRAM36 at 60x60 and saved ResNet-18 0.004% of its cycles). The
mixed preset is the largest R, a multiple of 8 (an X or OUT entry of R activations
then fills whole AXI beats: at 60x60 every entry's last beat was half empty, and the 56x56 array
runs ResNet-18 in 4% fewer cycles), whose best split keeps LUT and DSP within ``--fill`` of the
part (default 85%) and BRAM within ``BRAM_FILL``, the split chosen to fill LUT and DSP as evenly
as possible; the ratio that falls out is compared with the paper's (60:35:5 on XC7Z020, 65:30:5
on XC7Z045). ``fixed4-dsp`` is the largest all-Fixed-4 array on packed DSPs
within the same budget; ``fixed4-fill`` the largest all-Fixed-4 array of packed DSP rows plus
Fixed-4 rows multiplied in LUTs within the same LUT and DSP budget (the strongest Fixed-4-only
design on the part; capped at the mixed preset's LUT share instead, 76%, XC7Z020's would be
20x20 with 11 rows in LUTs at 62% of LUT and 63% of DSP, R stepping by 4). The baselines' R steps
by 4; the requant lanes are the divisor of R nearest R/4, so a 1x1 layer waits about 4 cycles
per output. Prints the table and writes benchmarks/results/presets.json; the board presets
(``pynq-z1``, ``zc706``) and their ``-fixed4-dsp`` and ``-fixed4-fill`` baselines in
``arch/config.py`` are copied from it, and tests/test_presets.py holds them to the budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from rmsmp.arch import PRESETS, AccelConfig, RowGroup
from rmsmp.boards import resources
from rmsmp.boards.devices import board

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "presets.json"
PAPER = {"pynq-z1": (60, 35, 5), "zc706": (65, 30, 5)}
"""The paper's PoT-4 : Fixed-4 : Fixed-8 row percentages per board's part."""
FILL = 0.85
"""Share of the part's LUT and DSP48E1 a preset may use (the rest for routing and the shell)."""
BRAM_FILL = 0.90
"""Share of the part's BRAM36 a preset may use."""
LANES_PER_OUTPUT = 4
"""Target cycles a requant lane group takes per output (rows / lanes)."""


def lanes_for(rows: int) -> int:
    """The divisor of ``rows`` nearest ``rows / LANES_PER_OUTPUT`` (at least 1)."""
    divisors = [d for d in range(1, rows + 1) if rows % d == 0]
    return min(divisors, key=lambda d: (abs(d - rows / LANES_PER_OUTPUT), d))


def config(base: AccelConfig, name: str, groups: tuple[RowGroup, ...]) -> AccelConfig:
    """``base`` (depths, clock) with these row groups, a square array and its lanes."""
    rows = sum(g.rows for g in groups)
    return dataclasses.replace(
        base, name=name, groups=groups, cols=rows, requant_lanes=lanes_for(rows)
    )


def usage(cfg: AccelConfig, name: str) -> dict[str, float]:
    """Estimated fraction of the board's LUT, FF, DSP and BRAM36 ``cfg`` uses."""
    b = board(name)
    est = resources.estimate(cfg)
    cap = {"lut": b.luts, "ff": b.ffs, "dsp": b.dsps, "bram36": b.bram36}
    return {r: getattr(est, r) / cap[r] for r in resources.RESOURCES}


def fits(u: dict[str, float], fill: float) -> bool:
    """Within ``fill`` of LUT and DSP, ``BRAM_FILL`` of BRAM36 and the part's FFs."""
    return u["lut"] <= fill and u["dsp"] <= fill and u["ff"] <= 1 and u["bram36"] <= BRAM_FILL


def largest(
    name: str, fill: float, candidates: Iterable[AccelConfig], what: str
) -> tuple[AccelConfig, dict[str, float]]:
    """The candidate with the most rows within ``fill`` (``fits``), among those the one filling
    LUT and DSP most evenly; and its usage."""
    best = None
    for cfg in candidates:
        u = usage(cfg, name)
        if fits(u, fill):
            score = (cfg.rows, min(u["lut"], u["dsp"]))
            if best is None or score > best[0]:
                best = (score, cfg, u)
    if best is None:
        raise SystemExit(f"{name}: no {what} fits {fill:.0%} of the part")
    return best[1], best[2]


def mixed(name: str, fill: float) -> tuple[AccelConfig, dict[str, float]]:
    """The largest mixed array within ``fill``, R a multiple of the activations per AXI beat
    (8), its split filling LUT and DSP most evenly."""
    base = PRESETS[name]
    step = base.axi_data_bits // base.act_bits

    def candidates() -> Iterator[AccelConfig]:
        for rows in range(step, 80, step):
            f8 = max(1, round(0.05 * rows))
            for f4 in range(1, rows - f8):
                groups = (RowGroup("pot4", rows - f4 - f8), RowGroup("fixed4", f4))
                yield config(base, name, (*groups, RowGroup("fixed8", f8)))

    return largest(name, fill, candidates(), "mixed array")


def fixed4_dsp(name: str, fill: float) -> tuple[AccelConfig, dict[str, float]]:
    """The largest all-Fixed-4 array (packed, two products per DSP48E1) within ``fill``."""
    candidates = (
        config(PRESETS[f"{name}-fixed4-dsp"], f"{name}-fixed4-dsp", (RowGroup("fixed4", rows),))
        for rows in range(4, 80, LANES_PER_OUTPUT)
    )
    return largest(name, fill, candidates, "Fixed-4 array")


def fixed4_fill(name: str, fill: float) -> tuple[AccelConfig, dict[str, float]]:
    """The largest all-Fixed-4 array of packed DSP rows and LUT-multiplier rows
    (``RowGroup.lut_rows``) within ``fill`` of LUT and DSP, the mixed array's budget, its split
    filling LUT and DSP most evenly."""
    candidates = (
        config(
            PRESETS[f"{name}-fixed4-fill"],
            f"{name}-fixed4-fill",
            (RowGroup("fixed4", rows, lut_rows),),
        )
        for rows in range(4, 120, LANES_PER_OUTPUT)
        for lut_rows in range(rows + 1)
    )
    return largest(name, fill, candidates, "Fixed-4 fill array")


def describe(cfg: AccelConfig, u: dict[str, float]) -> dict:
    """One table row: shape, ratio, peak and the estimated use of each resource."""
    ratio = {g.fmt: round(100 * g.rows / cfg.rows) for g in cfg.groups}
    return {
        "preset": cfg.name,
        "groups": [dataclasses.asdict(g) for g in cfg.groups],
        "rows": cfg.rows,
        "requant_lanes": cfg.requant_lanes,
        "peak_macs_per_cycle": cfg.peak_macs_per_cycle,
        "ratio_pct": ratio,
        "use_pct": {r: round(100 * v, 1) for r, v in u.items()},
        "estimate": resources.estimate(cfg).as_dict(),
    }


def _group(g: RowGroup) -> str:
    """A row group for the printed table, its LUT-multiplier rows named."""
    return f"{g.fmt} x{g.rows}" + (f" ({g.lut_rows} in LUTs)" if g.lut_rows else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fill", type=float, default=FILL, help="LUT and DSP budget (fraction)")
    args = p.parse_args(argv)
    rows = []
    for name in PAPER:
        sized = (mixed(name, args.fill), fixed4_dsp(name, args.fill), fixed4_fill(name, args.fill))
        for cfg, u in sized:
            r = describe(cfg, u)
            rows.append(r)
            paper = ":".join(map(str, PAPER[name])) if cfg.name == name else "-"
            print(
                f"{cfg.name:>18}: {cfg.rows}x{cfg.cols} ({cfg.peak_macs_per_cycle} MAC/cycle), "
                f"{' '.join(_group(g) for g in cfg.groups)}, "
                f"{cfg.requant_lanes} lanes; ratio {r['ratio_pct']} (paper {paper}); "
                + ", ".join(f"{k} {v:.0f}%" for k, v in r["use_pct"].items())
            )
    RESULTS.mkdir(exist_ok=True)
    JSON.write_text(json.dumps({"fill": args.fill, "presets": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
