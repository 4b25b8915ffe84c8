"""LUT, FF, DSP48E1 and BRAM36 of every board preset from Yosys, against its part's capacity.

A whole-design ``synth_xilinx`` of pynq-z1 takes about 10 minutes with Debian's Yosys 0.23 on an
idle machine and a zc706-size design much longer, so each preset is counted module by module
(``timing.synthesize_modules``, whose cache the clock estimates share): every distinct module
of its generated Verilog is synthesized once with the modules it instantiates as port-only
blackboxes, and the mapped modules are put together and flattened, so each module's cells count
once per instance. The memories' all-zero ``initial`` blocks are left out of each module
(``timing.drop_zero_init``: 3 MB of the zc706 top, hours of Yosys; the same cells).
``--crosscheck PRESET`` also synthesizes that preset whole and records the composition's error.
LUT counts LUT sites, LUTRAM included (``resources.utilisation``); the resource model's
estimate (``rmsmp.boards.resources``) stands beside each count, and each row records its buffers'
(bits, depth), on which tests/test_board_resources.py checks the model's block RAM mapping.

Writes benchmarks/results/resources_presets.json after every preset (syntheses are cached, so an
interrupted run resumes) and, with ``--readme``, the README's table from it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from e2e import BOARDS, board_of
from pe_resources import KEYS, counts
from readme import replace_block
from resources import parse_stat, utilisation
from timing import CACHE, SYNTH, command_line, source_label, synthesize_modules, yosys_version

from rmsmp.arch import PRESETS, AccelConfig
from rmsmp.arch.isa import buffer_shapes
from rmsmp.boards import resources as model
from rmsmp.boards.devices import board
from rmsmp.hw.generate import TOP_NAME, verilog_text

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "resources_presets.json"
SUFFIXES = ("", "-fixed4-dsp", "-fixed4-fill")
"""Each board's presets: the mixed array (device-filling) and the Fixed-4 baselines."""
NAMES = [b + s for b in BOARDS for s in SUFFIXES]
FILLING = [b + s for b in BOARDS for s in ("", "-fixed4-fill")]
"""The device-filling presets."""
FILL_RANGE = (0.70, 0.85)
"""The share of LUT and DSP48E1 the device-filling presets are sized to."""


def compose(cfg: AccelConfig, cache: Path) -> tuple[dict[str, float], float]:
    """``cfg``'s resources from ``timing.synthesize_modules``: each distinct module mapped once
    with its children as blackboxes, the mapped modules put together and flattened (so each
    counts once per instance); and the Yosys seconds it took (0 when all cached)."""
    synth = synthesize_modules(verilog_text(cfg), TOP_NAME, cache)
    use = utilisation(parse_stat(synth.stat.read_text()))
    extra = ("carry4", "lut_as_memory")
    return {**{k: use[v] for k, v in KEYS.items()}, **{k: use[k] for k in extra}}, synth.seconds


def row(cfg: AccelConfig, total: dict[str, float]) -> dict:
    """One table row: the count, the part's capacity, the shares and the model's estimate."""
    b = board(board_of(cfg))
    cap = {"lut": b.luts, "ff": b.ffs, "dsp": b.dsps, "bram36": b.bram36}
    est = model.estimate(cfg)
    return {
        "preset": cfg.name,
        "config_hash": cfg.hash,
        "part": b.part,
        "array": f"{cfg.rows}x{cfg.cols}",
        "buffers": buffer_shapes(cfg),
        "yosys": total,
        "capacity": cap,
        "use_pct": {k: round(100 * total[k] / cap[k], 1) for k in KEYS},
        "model": {k: round(getattr(est, k), 1) for k in KEYS},
        "model_error_pct": {
            k: round(100 * (getattr(est, k) / total[k] - 1), 1) if total[k] else None for k in KEYS
        },
    }


def markdown(d: dict) -> str:
    """The README table from resources_presets.json."""
    lines = [
        f"From `python benchmarks/resources_presets.py` ({d['tool']}, {d['source']}; each "
        "module synthesized once with its children as blackboxes, the mapped modules composed "
        "and flattened):",
        "",
        "| preset | array | LUT (LUTRAM incl.) | FF | DSP48E1 | BRAM36 | model LUT / DSP / BRAM |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["presets"]:
        y, c, u, m = r["yosys"], r["capacity"], r["use_pct"], r["model"]
        lines.append(
            f"| {r['preset']} | {r['array']} | {y['lut']:,.0f} / {c['lut']:,} ({u['lut']:.0f}%) | "
            f"{y['ff']:,.0f} / {c['ff']:,} ({u['ff']:.0f}%) | "
            f"{y['dsp']:,.0f} / {c['dsp']:,} ({u['dsp']:.0f}%) | "
            f"{y['bram36']:g} / {c['bram36']:,} ({u['bram36']:.0f}%) | "
            f"{m['lut']:,.0f} / {m['dsp']:,.0f} / {m['bram36']:g} |"
        )
    missing = [n for n in NAMES if n not in {r["preset"] for r in d["presets"]}]
    if missing:
        lines += ["", f"Not yet synthesized: {', '.join(f'`{n}`' for n in missing)}."]
    for c in d.get("crosscheck", []):
        err = ", ".join(f"{k} {v:+.1f}%" for k, v in c["error_pct"].items())
        lines += ["", f"Composition against a whole-design count of `{c['preset']}`: {err}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("presets", nargs="*", help=f"default (without --crosscheck): {' '.join(NAMES)}")
    p.add_argument("--crosscheck", nargs="*", default=[], help="also synthesize these whole")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--readme", action="store_true", help="only rewrite the README's table")
    args = p.parse_args(argv)
    if args.readme:
        replace_block("presets-resources-table", markdown(json.loads(JSON.read_text())))
        return 0
    if not args.presets and not args.crosscheck:
        args.presets = NAMES
    if unknown := sorted(set(args.presets + args.crosscheck) - set(PRESETS)):
        raise SystemExit(f"unknown preset(s) {unknown}; presets: {sorted(PRESETS)}")
    old = json.loads(JSON.read_text()) if JSON.is_file() else {}
    rows = {r["preset"]: r for r in old.get("presets", [])}
    checks = {c["preset"]: c for c in old.get("crosscheck", [])}
    out = {
        "tool": f"yosys {SYNTH.format(top='<module>')} ({yosys_version()})",
        "source": f"rmsmp {source_label()}",
        "command": command_line(),
    }

    def write() -> None:
        """Write every row so far, with the rows another run wrote meanwhile."""
        now = json.loads(JSON.read_text()) if JSON.is_file() else {}
        for r in now.get("presets", []):
            rows.setdefault(r["preset"], r)
        for c in now.get("crosscheck", []):
            checks.setdefault(c["preset"], c)
        order = [n for n in NAMES if n in rows] + sorted(set(rows) - set(NAMES))
        out["presets"] = [rows[n] for n in order]
        out["crosscheck"] = list(checks.values())
        RESULTS.mkdir(exist_ok=True)
        JSON.write_text(json.dumps(out, indent=1) + "\n")

    for name in args.presets:
        cfg = PRESETS[name]
        print(f"{name}:", flush=True)
        t0 = time.perf_counter()
        total, seconds = compose(cfg, args.cache)
        rows[name] = {**row(cfg, total), "yosys_s": round(seconds, 1)}
        rows[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        r = rows[name]
        print(
            f"{name}: "
            + ", ".join(
                f"{model.NAMES[k]} {r['yosys'][k]:,.0f} ({r['use_pct'][k]}%)" for k in KEYS
            ),
            flush=True,
        )
        write()
    for name in args.crosscheck:
        cfg = PRESETS[name]
        total, _ = compose(cfg, args.cache)
        whole = counts(verilog_text(cfg), TOP_NAME, args.cache)
        checks[name] = {
            "preset": name,
            "config_hash": cfg.hash,
            "composed": total,
            "whole": whole,
            "error_pct": {k: round(100 * (total[k] / whole[k] - 1), 1) for k in KEYS if whole[k]},
        }
        print(f"crosscheck {name}: {checks[name]['error_pct']}", flush=True)
        write()
    out_of_range = [
        r["preset"]
        for r in rows.values()
        if r["preset"] in FILLING
        and not all(
            FILL_RANGE[0] * 100 <= r["use_pct"][k] <= FILL_RANGE[1] * 100 for k in ("lut", "dsp")
        )
    ]
    if out_of_range:
        print(f"outside {FILL_RANGE[0]:.0%}-{FILL_RANGE[1]:.0%} of LUT or DSP: {out_of_range}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
