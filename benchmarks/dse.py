"""Design-space exploration: array shape and scheme ratio under each board's budget.

For each board (pynq-z1: XC7Z020, zc706: XC7Z045) it sweeps square arrays of R PE rows x R
columns (``AccelConfig`` requires cols == rows) and row mixes: a shift format (PoT-4 or SP2-4)
on a share of the rows, Fixed-4 on the rest, with or without about 5% Fixed-8 rows (at least
one); and the Fixed-4-only arrays, packed on DSP48E1s or partly multiplied in LUTs. Each point is
built as ``benchmarks/presets.py`` builds the presets (the board preset's buffer depths and clock,
the requant lanes nearest R/4) and kept only if the calibrated resource model
(``rmsmp.boards.resources``) puts its LUT and DSP within ``--fill`` of the part and its FF and
BRAM36 within the part; a rejected point records which resource it overshoots and by how much.

For every feasible point: the estimated share of LUT, FF, DSP48E1 and BRAM36; ResNet-20's cycles
from the cycle model (``rmsmp.sim.cycles.predict``, what the golden backend's ``run_with_stats``
reports) and the latency at the point's clock; and the mix's weight quantisation error
(``benchmarks/weight_error.py``: total relative MSE of the pretrained ResNet-20's inner conv rows
at the mix's ratio, relative to Fixed-4's). The network is quantized once (random weights, as
``benchmarks/e2e.py`` does); each point's rows are then reassigned at its ratio the way
``rmsmp.quantize`` assigns them (``assign_rows``; cycles depend on the formats' row counts and
places, not on the weight values). The committed presets of each board are evaluated alike.

Prints the Pareto front (lowest latency for its error) per board, writes
benchmarks/results/dse.json and benchmarks/results/dse.png (latency against weight error, front
and presets marked) and, with ``--readme``, rewrites the README's dse block and the plot from
the JSON. ``--board`` reruns the boards it names and keeps the others' points from the JSON
(when written at the same ``--fill``), so a changed preset costs one board's sweep.
``--resnet18`` also counts ResNet-18 (224x224) on each board's front and presets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from e2e import NETWORKS, graph_for, presets
from first_layer import predicted
from presets import FILL, config, usage
from readme import replace_block
from weight_error import inner_rows, mix_error

from rmsmp.arch import PRESETS, AccelConfig, RowGroup
from rmsmp.boards import resources
from rmsmp.boards.devices import board as board_of
from rmsmp.compiler.ir import IntGraph, IntLayer
from rmsmp.compiler.lower import lower
from rmsmp.quant.assign import assign_costed, relative_costs, row_counts
from rmsmp.quant.quantize import resolve_ratio

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "dse.json"
PLOT = RESULTS / "dse.png"
SIZES = {"pynq-z1": range(8, 41, 4), "zc706": range(16, 97, 8)}
"""Array sizes R (R x R) swept per board."""
SHIFTS = ("pot4", "sp2-4")
"""The shift-only formats a mix may use beside Fixed-4."""
SHARES = (0.2, 0.4, 0.6, 0.8, 1.0)
"""Shares of the rows in the shift format (the rest Fixed-4, less the Fixed-8 rows)."""
LUT_SHARES = (0.25, 0.5, 0.75)
"""Shares of a Fixed-4-only array's rows multiplied in LUTs (``RowGroup.lut_rows``)."""
WIDE_SHARE = 0.05
"""Fixed-8 rows of a mix that has them, as the paper's ratios: 5% of the rows, at least one."""
PRIMARY = "resnet20"
"""The network every point is counted on (and the front taken on)."""


def mixes(rows: int) -> Iterator[tuple[RowGroup, ...]]:
    """The row groups swept for an R-row array: Fixed-4 only (packed, or partly in LUTs),
    Fixed-4 + Fixed-8, and each shift format at each share, with and without Fixed-8 rows."""
    yield (RowGroup("fixed4", rows),)
    for share in LUT_SHARES:
        yield (RowGroup("fixed4", rows, lut_rows=round(share * rows)),)
    wide_rows = max(1, round(WIDE_SHARE * rows))
    for wide in (0, wide_rows):
        tail = (RowGroup("fixed8", wide),) if wide else ()
        if wide:
            yield (RowGroup("fixed4", rows - wide), *tail)
        for shift in SHIFTS:
            for share in SHARES:
                n = min(round(share * rows), rows - wide)
                rest = rows - wide - n
                head = (RowGroup(shift, n),) + ((RowGroup("fixed4", rest),) if rest else ())
                yield (*head, *tail)


def family(cfg: AccelConfig) -> str:
    """Which kind of mix a config is: 'pot4' or 'sp2-4' (its shift format), or 'fixed4' (no
    shift rows: Fixed-4, with or without Fixed-8 rows)."""
    shift = [g.fmt for g in cfg.groups if g.fmt in SHIFTS]
    return shift[0] if shift else "fixed4"


def label(cfg: AccelConfig) -> str:
    """Short name of a mix, e.g. ``24x24 pot4:fixed4:fixed8 16:7:1`` (LUT rows as ``/14L``)."""
    fmts = ":".join(g.fmt for g in cfg.groups)
    counts = ":".join(f"{g.rows}" + (f"/{g.lut_rows}L" if g.lut_rows else "") for g in cfg.groups)
    return f"{cfg.rows}x{cfg.cols} {fmts} {counts}"


def budget(name: str, fill: float) -> dict[str, int]:
    """The board's LUT and DSP48E1 at ``fill``, its FF and BRAM36 in full."""
    b = board_of(name)
    return {"lut": int(fill * b.luts), "ff": b.ffs, "dsp": int(fill * b.dsps), "bram36": b.bram36}


def usage_pct(cfg: AccelConfig, name: str) -> dict[str, float]:
    """Estimated percent of the whole part's LUT, FF, DSP48E1 and BRAM36 (``presets.usage``)."""
    return {r: round(100 * v, 1) for r, v in usage(cfg, name).items()}


def candidates(name: str, sizes: range | list[int]) -> Iterator[AccelConfig]:
    """Every swept config of board ``name``, distinct by config hash."""
    seen = set()
    for rows in sizes:
        for groups in mixes(rows):
            cfg = config(PRESETS[name], "", groups)
            cfg = dataclasses.replace(cfg, name=label(cfg))
            if cfg.hash not in seen:
                seen.add(cfg.hash)
                yield cfg


class Evaluator:
    """Cycles of a network and weight error of a mix, memoised on what they depend on: the
    formats' row counts per layer (``row_counts``, which ``assign_rows`` meets exactly)."""

    def __init__(self, graphs: dict[str, IntGraph], error_rows: list[np.ndarray]) -> None:
        self.graphs, self.error_rows = graphs, error_rows
        self._graphs: dict[tuple, IntGraph] = {}
        self._errors: dict[tuple, float] = {}
        self._cycles: dict[tuple, int] = {}
        self._costs: dict[tuple, np.ndarray] = {}
        self.configs: dict[str, AccelConfig] = {}
        """The configs counted, by hash."""

    @staticmethod
    def _key(sizes: list[int], ratio: dict[str, float]) -> tuple:
        return tuple(tuple(sorted(row_counts(n, ratio).items())) for n in sizes)

    def error(self, ratio: dict[str, float]) -> float:
        """Total relative weight MSE of ``ratio`` (``weight_error.mix_error``)."""
        key = self._key([len(w) for w in self.error_rows], ratio)
        if key not in self._errors:
            self._errors[key] = mix_error(self.error_rows, ratio)
        return self._errors[key]

    def graph(self, net: str, ratio: dict[str, float]) -> IntGraph:
        """``net``'s graph with every layer's rows reassigned at ``ratio`` (weights zeroed:
        zero is a level of every format, and the cycles do not depend on the values)."""
        layers = [n for n in self.graphs[net].layers if isinstance(n, IntLayer)]
        key = (net, self._key([n.out_channels for n in layers], ratio))
        if key not in self._graphs:
            new, fmts = [], list(ratio)
            for i, node in enumerate(self.graphs[net].layers):
                if isinstance(node, IntLayer):
                    cost = np.stack([self._cost(net, i, f) for f in fmts], axis=1)
                    node = dataclasses.replace(
                        node,
                        formats=assign_costed(cost, fmts, ratio),
                        weight=np.zeros_like(node.weight),
                    )
                new.append(node)
            self._graphs[key] = dataclasses.replace(self.graphs[net], layers=new)
        return self._graphs[key]

    def _cost(self, net: str, i: int, fmt: str) -> np.ndarray:
        """``relative_costs`` of node ``i``'s rows under ``fmt``, scored once per sweep."""
        if (net, i, fmt) not in self._costs:
            w = self.graphs[net].layers[i].weight
            rows = w.reshape(len(w), -1).astype(np.float64)
            self._costs[net, i, fmt] = relative_costs(rows, [fmt])[:, 0]
        return self._costs[net, i, fmt]

    def cycles(self, net: str, cfg: AccelConfig) -> int:
        """Cycles of one image of ``net`` on ``cfg``, from the cycle model."""
        key = (net, cfg.hash)
        self.configs[cfg.hash] = cfg
        if key not in self._cycles:
            self._cycles[key] = predicted(lower(self.graph(net, resolve_ratio(cfg)), cfg, batch=1))
        return self._cycles[key]


def point(
    cfg: AccelConfig, name: str, fill: float, ev: Evaluator, preset: str | None, net: str
) -> dict:
    """One point: shape, mix, resources; if it fits, ``net``'s cycles and latency and the mix's
    weight error."""
    row = {
        "board": name,
        "preset": preset,
        "label": label(cfg),
        "config_hash": cfg.hash,
        "rows": cfg.rows,
        "cols": cfg.cols,
        "family": family(cfg),
        "groups": [g.to_dict() for g in cfg.groups],
        "ratio_pct": {g.fmt: round(100 * g.rows / cfg.rows, 1) for g in cfg.groups},
        "requant_lanes": cfg.requant_lanes,
        "clock_mhz": cfg.clock_mhz,
        "use_pct": usage_pct(cfg, name),
    }
    why = resources.overshoot(cfg, board_of(name).part, budget(name, fill))
    row["feasible"] = why is None
    row["rejected"] = why and f"{why} (budget: {fill:.0%} of the LUTs and DSP48E1s)"
    if why is None:
        row["weight_error"] = ev.error(resolve_ratio(cfg))
        row["cycles"] = {net: ev.cycles(net, cfg)}
        row["latency_ms"] = {net: row["cycles"][net] / cfg.clock_mhz / 1e3}
    return row


def pareto(points: list[dict], net: str = PRIMARY) -> list[dict]:
    """The feasible points no other feasible point beats on both latency and weight error
    (at least as good on both, better on one), by latency."""
    pts = [p for p in points if p["feasible"] and net in p["latency_ms"]]

    def beats(a: dict, b: dict) -> bool:
        la, lb = a["latency_ms"][net], b["latency_ms"][net]
        ea, eb = a["weight_error"], b["weight_error"]
        return la <= lb and ea <= eb and (la < lb or ea < eb)

    front = [p for p in pts if not any(beats(q, p) for q in pts)]
    return sorted(front, key=lambda p: (p["latency_ms"][net], p["weight_error"]))


def sweep(
    name: str,
    sizes: range | list[int],
    ev: Evaluator,
    fill: float = FILL,
    extra: list[AccelConfig] = (),
    log: Callable[[str], None] = lambda s: None,
    net: str = PRIMARY,
) -> list[dict]:
    """Every point of board ``name`` (swept configs, then ``extra`` as presets), counted on
    ``net``, with the Pareto front marked (``front``)."""
    points = []
    for cfg in candidates(name, sizes):
        points.append(point(cfg, name, fill, ev, None, net))
        log(_line(points[-1]))
    by_hash = {p["config_hash"]: p for p in points}
    for cfg in extra:
        if cfg.hash in by_hash:  # a preset the sweep has: name it there
            by_hash[cfg.hash]["preset"] = cfg.name
            continue
        points.append(point(cfg, name, fill, ev, cfg.name, net))
        log(_line(points[-1]))
    front = {id(p) for p in pareto(points, net)}
    for p in points:
        p["front"] = id(p) in front
    return points


def _line(p: dict) -> str:
    """One progress line."""
    head = f"{p['board']:>8} {p['preset'] or p['label']:<40}"
    if not p["feasible"]:
        return f"{head} rejected: {p['rejected']}"
    u, net = p["use_pct"], next(iter(p["cycles"]))
    return (
        f"{head} LUT {u['lut']:5.1f}% DSP {u['dsp']:5.1f}% BRAM {u['bram36']:5.1f}%  "
        f"{net}: {p['cycles'][net]:>9,} cycles {p['latency_ms'][net]:6.3f} ms  "
        f"error {p['weight_error']:6.2f}"
    )


def add_network(points: list[dict], net: str, ev: Evaluator, log: Callable[[str], None]) -> None:
    """Count ``net`` on the front and the presets of ``points`` (in place)."""
    for p in points:
        if p["feasible"] and (p["front"] or p["preset"]):
            cfg = ev.configs[p["config_hash"]]
            p["cycles"][net] = ev.cycles(net, cfg)
            p["latency_ms"][net] = p["cycles"][net] / cfg.clock_mhz / 1e3
            log(f"{p['board']:>8} {p['preset'] or p['label']:<40} {net}: {p['cycles'][net]:,}")


def plot(data: dict) -> Path:
    """Latency against weight error per board: every feasible point by family, the Pareto front
    as a line, the committed presets starred and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boards = list(data["boards"])
    fig, axes = plt.subplots(1, len(boards), figsize=(6.5 * len(boards), 4.8), squeeze=False)
    for ax, name in zip(axes[0], boards, strict=True):
        pts = [p for p in data["points"] if p["board"] == name and p["feasible"]]
        for fam, color in zip((*SHIFTS, "fixed4"), ("C0", "C2", "C3"), strict=True):
            mine = [p for p in pts if p["family"] == fam and not p["preset"]]
            ax.scatter(
                [p["weight_error_vs_fixed4"] for p in mine],
                [p["latency_ms"][PRIMARY] for p in mine],
                s=12,
                color=color,
                alpha=0.5,
                label=f"{fam} mixes" if fam != "fixed4" else "no shift rows (Fixed-4, Fixed-8)",
            )
        front = sorted((p for p in pts if p["front"]), key=lambda p: p["weight_error_vs_fixed4"])
        ax.step(
            [p["weight_error_vs_fixed4"] for p in front],
            [p["latency_ms"][PRIMARY] for p in front],
            where="post",
            color="k",
            lw=1,
            label="Pareto front",
        )
        for p in (p for p in pts if p["preset"]):
            xy = (p["weight_error_vs_fixed4"], p["latency_ms"][PRIMARY])
            ax.scatter(*xy, marker="*", s=120, color="gold", edgecolor="k", zorder=3)
            ax.annotate(p["preset"], xy, fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set(
            title=f"{name} ({board_of(name).part}), LUT/DSP <= {data['fill']:.0%}",
            xlabel="weight quantisation error (relative MSE, Fixed-4 = 1)",
            ylabel="ResNet-20 latency (ms, cycle model)",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    return PLOT


def markdown(data: dict) -> str:
    """The README's dse block: per board the Pareto front and the presets, from dse.json."""
    lines = [
        f"From `{data['command']}` (resource model, LUT and DSP48E1 within {data['fill']:.0%} "
        "of the part; cycle model; weight error relative to Fixed-4's; "
        f"{data['swept']} configs swept, {data['feasible']} within budget, "
        f"{data['seconds']:.0f} s):",
        "",
        "![DSE](benchmarks/results/dse.png)",
    ]
    nets = [n for n in NETWORKS if any(n in p.get("cycles", {}) for p in data["points"])]
    for name in data["boards"]:
        pts = [p for p in data["points"] if p["board"] == name and p["feasible"]]
        shown = sorted(
            (p for p in pts if p["front"] or p["preset"]),
            key=lambda p: (p["latency_ms"][PRIMARY], p["weight_error"]),
        )
        lines += [
            "",
            f"**{name}** ({board_of(name).part}): the Pareto front and the committed presets",
            "",
            "| array and rows | preset | front | ratio % | LUT | DSP | BRAM | clock | "
            + " | ".join(f"{n} cycles | {n} ms" for n in nets)
            + " | weight error |",
            "|---|---|---|---|---|---|---|---|" + "---|---|" * len(nets) + "---|",
        ]
        for p in shown:
            ratio = ":".join(f"{v:.0f}" for v in p["ratio_pct"].values())
            u = p["use_pct"]
            cells = " | ".join(
                f"{p['cycles'][n]:,} | {p['latency_ms'][n]:.3f}" if n in p["cycles"] else "- | -"
                for n in nets
            )
            lines.append(
                f"| {p['label']} | {p['preset'] or ''} | {'yes' if p['front'] else ''} | "
                f"{ratio} | {u['lut']:.0f}% | {u['dsp']:.0f}% | "
                f"{u['bram36']:.0f}% | {p['clock_mhz']:g} MHz | {cells} | "
                f"{p['weight_error_vs_fixed4']:.2f} |"
            )
        lines.append("")
        for p in (p for p in shown if p["preset"]):
            best = fastest_within(pts, p["weight_error"])
            lines.append(
                f"- {p['preset']}: {p['latency_ms'][PRIMARY]:.3f} ms at weight error "
                f"{p['weight_error_vs_fixed4']:.2f}; the fastest point with no more error: "
                f"{best['label']}, {best['latency_ms'][PRIMARY]:.3f} ms "
                f"({p['latency_ms'][PRIMARY] / best['latency_ms'][PRIMARY]:.2f}x faster)"
            )
    return "\n".join(lines) + "\n"


def fastest_within(points: list[dict], error: float) -> dict:
    """The feasible point of least latency whose weight error is at most ``error``."""
    ok = [p for p in points if p["feasible"] and p["weight_error"] <= error]
    return min(ok, key=lambda p: (p["latency_ms"][PRIMARY], p["weight_error"]))


COLUMNS = ("array and rows", "preset", "front", "LUT", "DSP", "BRAM", "cycles", "ms", "error")
"""The printed table's columns."""


def table(data: dict) -> None:
    """Print each board's front and presets (rich)."""
    from rich.console import Console
    from rich.table import Table

    for name in data["boards"]:
        t = Table(title=f"{name}: the Pareto front and the presets, ResNet-20")
        for col in (
            "array and rows",
            "preset",
            "front",
            "LUT",
            "DSP",
            "BRAM",
            "cycles",
            "ms",
            "error",
        ):
            t.add_column(col, justify="left" if col in ("array and rows", "preset") else "right")
        pts = [p for p in data["points"] if p["board"] == name and (p["front"] or p["preset"])]
        for p in sorted(pts, key=lambda p: p.get("latency_ms", {}).get(PRIMARY, 1e9)):
            u = p["use_pct"]
            done = p["feasible"]
            t.add_row(
                p["label"],
                p["preset"] or "",
                "yes" if p["front"] else "",
                f"{u['lut']:.0f}%",
                f"{u['dsp']:.0f}%",
                f"{u['bram36']:.0f}%",
                f"{p['cycles'][PRIMARY]:,}" if done else "-",
                f"{p['latency_ms'][PRIMARY]:.3f}" if done else "-",
                f"{p['weight_error_vs_fixed4']:.2f}" if done else p["rejected"],
            )
        Console(width=150).print(t)


def merged(runs: dict[str, dict], points: list[dict], fill: float, base: float) -> dict:
    """dse.json's data: the ``points`` of the boards in ``runs`` (board: its command and
    seconds), and those of the other boards from the JSON already written at the same
    ``fill``, so ``--board`` reruns one board and keeps the rest."""
    old = json.loads(JSON.read_text()) if JSON.is_file() else {"points": []}
    if old["points"] and old["fill"] == fill and old["fixed4_weight_error"] == base:
        kept = [b for b in old.get("runs", {}) if b not in runs]
        runs = {b: old["runs"][b] for b in kept} | runs
        points = [p for p in old["points"] if p["board"] in kept] + points
    boards = [b for b in SIZES if b in runs]
    commands = list(dict.fromkeys(runs[b]["command"] for b in boards))
    return {
        "command": "; ".join(commands),
        "runs": {b: runs[b] for b in boards},
        "fill": fill,
        "boards": boards,
        "fixed4_weight_error": base,
        "swept": len(points),
        "feasible": sum(p["feasible"] for p in points),
        "seconds": sum(runs[b]["seconds"] for b in boards),
        "points": sorted(points, key=lambda p: boards.index(p["board"])),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--board", action="append", choices=list(SIZES), help="default: every board")
    p.add_argument("--fill", type=float, default=FILL, help="LUT and DSP budget (fraction)")
    p.add_argument("--resnet18", action="store_true", help="also ResNet-18 on fronts, presets")
    p.add_argument(
        "--readme", action="store_true", help="only redo the README block, plot from the JSON"
    )
    p.add_argument("--sizes", help="array sizes R to sweep, comma separated (default: per board)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every point")
    args = p.parse_args(argv)
    if args.readme:
        data = json.loads(JSON.read_text())
        replace_block("dse", markdown(data))
        print(f"README dse block and {plot(data)} redrawn from {JSON}")
        return 0
    if not 0 < args.fill <= 1:
        raise SystemExit(f"--fill must be a fraction in (0, 1], got {args.fill}")
    t0 = time.perf_counter()
    boards = args.board or list(SIZES)
    nets = [PRIMARY] + (["resnet18"] if args.resnet18 else [])
    graphs = {n: graph_for(n, PRESETS[boards[0]]) for n in nets}
    ev = Evaluator(graphs, inner_rows())
    log = print if args.verbose else lambda s: None
    points = []
    for name in boards:
        sizes = [int(r) for r in args.sizes.split(",")] if args.sizes else SIZES[name]
        pts = sweep(name, sizes, ev, args.fill, presets(name), log)
        if args.resnet18:
            add_network(pts, "resnet18", ev, print)
        points += pts
    base = ev.error({"fixed4": 1.0})
    for pt in points:
        if pt["feasible"]:
            pt["weight_error_vs_fixed4"] = pt["weight_error"] / base
    command = "python benchmarks/dse.py" + (" --resnet18" if args.resnet18 else "")
    if args.sizes:
        command += f" --sizes {args.sizes}"
    run = {"command": command, "seconds": time.perf_counter() - t0}
    data = merged(
        {b: run | {"command": command + (f" --board {b}" if args.board else "")} for b in boards},
        points,
        args.fill,
        base,
    )
    RESULTS.mkdir(exist_ok=True)
    JSON.write_text(json.dumps(data, indent=1) + "\n")
    table(data)
    print(f"wrote {JSON} and {plot(data)} ({data['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
