"""MiniLM-L6 (W4A8) with its 36 encoder Linears on the accelerator: cycles, host ops, agreement.

Quantizes MiniLM with a method (post-training, or a checkpoint's state with ``--checkpoint``),
captures the whole encoder (embeddings to last hidden state) at ``--tokens`` tokens into a
hybrid graph (``quant.transformer``), lowers every device op for ``--board`` at batch 1 and
runs SST-2 dev sentences on the golden backend (the cycle model predicts the device cycles).
Reports per sentence: device cycles and ms, every host op's count and seconds, the attention
matmuls' host time against what the cycle model predicts for them on chip (per head, Q.K^T and
A.V as 1x1 convolutions with 8-bit weights: a lower bound, since a Program's weights are fixed
and these would have to be written per sentence), and how far the integer path is from the
fake-quant model (golden == HybridGraph.evaluate is checked on every sentence). With
``--rtl N`` the first N sentences also run on the Verilated RTL and must equal golden.
Writes benchmarks/results/transformer.json. Run it with OPENBLAS_NUM_THREADS=1 on a shared
machine: a threaded BLAS under load took 1.5-2 s for one layer's attention matmuls that take
43-120 ms on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from readme import replace_block

from rmsmp.arch import AccelConfig, numerics
from rmsmp.compiler.hybrid import lower_hybrid
from rmsmp.compiler.ir import IntGraph, IntLayer
from rmsmp.compiler.lower import lower
from rmsmp.host.hybrid import run_hybrid
from rmsmp.host.runtime import open_device, run_with_stats
from rmsmp.quant.data import sst2
from rmsmp.quant.nlp import quantize_minilm
from rmsmp.quant.tokenfront import encode, token_model
from rmsmp.quant.transformer import capture_tokens

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "transformer.json"


def token_linear_cycles(
    cfg: AccelConfig, tokens: int, k: int, fmts: list[str], rng: np.random.Generator
) -> tuple[int, int]:
    """(cycles, MAC cycles) the cycle model predicts for a Linear K -> len(fmts) over
    ``tokens`` tokens alone on ``cfg`` (batch 1), with random levels of each row's format."""
    n = len(fmts)
    w = np.stack([rng.choice(numerics.weight_format(f).levels(), size=(k, 1, 1)) for f in fmts])
    ones = np.ones(n, np.int64)
    mult, shift = numerics.requant_multiplier(1.0 / (k * 64))
    layer = IntLayer("l", "conv", w, fmts, 0 * ones, mult * ones, shift * ones, -128, 127, 1, 1)
    prog = lower(IntGraph([layer], (k, 1, tokens), 1.0), cfg, 1)
    res = run_with_stats(prog, rng.integers(-128, 128, size=(1, k, 1, tokens)))
    return res.total_cycles, res.mac_cycles


def attention_on_chip(cfg: AccelConfig, tokens: int, dh: int) -> dict[str, int]:
    """Cycles the cycle model predicts for one head's Q.K^T and A.V run as 1x1 convolutions
    over the tokens with 8-bit (Fixed-8) weights, batch 1."""
    rng = np.random.default_rng(0)
    return {
        name: token_linear_cycles(cfg, tokens, k, ["fixed8"] * n, rng)[0]
        for name, k, n in (("qk", dh, tokens), ("av", tokens, dh))
    }


LINEARS_JSON = RESULTS / "transformer_linears.json"


def linear_costs(cfg: AccelConfig, tokens: int) -> list[dict]:
    """Cycles of MiniLM's Linear shapes over ``tokens`` tokens, alone on ``cfg`` (batch 1,
    random levels): rmsmp's 60:35:5 rows, and all rows Fixed-8 as the method keeps the first
    and last Linear (``Method.keep_ends``)."""
    rng = np.random.default_rng(0)
    rmsmp = {"pot4": 0.60, "fixed4": 0.35, "fixed8": 0.05}
    out = []
    for name, k, n, ratio in (
        ("query/key/value/output 384->384", 384, 384, rmsmp),
        ("intermediate 384->1536", 384, 1536, rmsmp),
        ("output 1536->384", 1536, 384, rmsmp),
        ("first Linear 384->384, Fixed-8 end", 384, 384, {"fixed8": 1.0}),
        ("last Linear 1536->384, Fixed-8 end", 1536, 384, {"fixed8": 1.0}),
    ):
        counts = {f: round(r * n) for f, r in ratio.items()}
        counts["pot4" if "pot4" in counts else "fixed8"] += n - sum(counts.values())
        fmts = [f for f, c in counts.items() for _ in range(c)]
        cycles, mac_cycles = token_linear_cycles(cfg, tokens, k, fmts, rng)
        peak = cfg.rows * cfg.cols
        out.append(
            {
                "board": cfg.name,
                "tokens": tokens,
                "linear": name,
                "formats": counts,
                "cycles": cycles,
                "peak_bound_cycles": tokens * k * n / peak,
                "mac_cycles": mac_cycles,
            }
        )
        print(f"{name}: {cycles:,} cycles (peak bound {tokens * k * n / peak:,.0f})")
    return out


def rtl_cell(r: dict) -> str:
    """'8/8 (RTL cycles N)' for a row with RTL sentences, else 'not run'."""
    if r["rtl_sentences_equal_golden"] == "0/0":
        return "not run"
    return f"{r['rtl_sentences_equal_golden']} (RTL {r['rtl_cycles_per_sentence']:,.0f} cycles)"


def readme_table(rows: list[dict]) -> str:
    """The README's MiniLM table from transformer.json's rows."""
    out = [
        "| method | board | tokens | Linears on chip | device cycles / sentence | device ms "
        "| host ops | host ms | attention matmuls: host ms / on-chip ms | RTL == golden |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ops = sum(r["host_ops_per_sentence"].values())
        out.append(
            f"| {r['method']} | {r['board']} | {r['tokens']} | {r['device_linears']} "
            f"| {r['device_cycles_per_sentence']:,.0f} | {r['device_ms_per_sentence']:.1f} "
            f"| {ops} | {r['host_ms_total_per_sentence']:.0f} "
            f"| {r['attention_matmuls_host_ms']:.0f} / {r['attention_matmuls_on_chip_ms']:.1f} "
            f"| {rtl_cell(r)} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="rmsmp")
    ap.add_argument("--checkpoint", help="a MiniLM checkpoint from rmsmp quantize --model minilm")
    ap.add_argument("--board", default="pynq-z1")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--sentences", type=int, default=4, help="SST-2 dev sentences to run")
    ap.add_argument("--calib", type=int, default=32, help="calibration sentences (SST-2 train)")
    ap.add_argument("--rtl", type=int, default=0, help="sentences to run on RTL too")
    ap.add_argument("--readme", action="store_true", help="only rewrite the README table")
    ap.add_argument("--linears", action="store_true", help="only MiniLM's Linear shapes alone")
    args = ap.parse_args()
    if args.linears:
        rows = linear_costs(AccelConfig.for_board(args.board), args.tokens)
        LINEARS_JSON.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"-> {LINEARS_JSON}")
        return
    if args.readme:
        replace_block("transformer", readme_table(json.loads(JSON.read_text())))
        return

    t0 = time.perf_counter()
    method = args.method
    if args.checkpoint:
        ck = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        method = ck["method"]
        model = token_model(ck)
        model = model.encoder if ck["model_name"] == "minilm-sst2" else model
    else:
        model, _ = quantize_minilm(method)
    quant_s = time.perf_counter() - t0
    calib = encode(sst2("train", args.calib, 1)[0], args.tokens)
    t0 = time.perf_counter()
    graph = capture_tokens(model, tuple(torch.from_numpy(a) for a in calib))
    capture_s = time.perf_counter() - t0
    cfg = AccelConfig.for_board(args.board)
    prog = lower_hybrid(graph, cfg, 1)
    print(graph.summary())
    print(f"capture {capture_s:.1f} s, lowering {prog.meta['lower_seconds']:.1f} s")

    sentences, _ = sst2("dev", args.sentences)
    ids, mask, types = encode(sentences, args.tokens)
    host = defaultdict(float)
    count = defaultdict(int)
    cycles, diffs, rtl_equal, rtl_cycles, rtl = [], [], [], [], None
    for i in range(len(sentences)):
        xs = [ids[i : i + 1], mask[i : i + 1], types[i : i + 1]]
        res = run_hybrid(prog, xs, "golden")
        ref = graph.evaluate(xs)
        assert all(np.array_equal(a, b) for a, b in zip(res.outputs, ref, strict=True))
        cycles.append(res.device_cycles)
        if i == 0:
            per_op = {o.name: o.cycles for o in res.ops if o.where != "host"}
        for o in res.ops:
            if o.where == "host":
                host[o.kind] += o.seconds
                count[o.kind] += 1
        with torch.no_grad():
            fq = model(*(torch.from_numpy(a) for a in xs)).numpy()
        keep = mask[i].astype(bool)
        diffs.append(float(np.abs(res.outputs[0] - fq)[0, keep].mean()))
        if i < args.rtl:
            if rtl is None:
                rtl = open_device(max(prog.programs, key=lambda p: p.window_size), "rtl")
            hw = run_hybrid(prog, xs, device=rtl)
            same = zip(hw.outputs, res.outputs, strict=True)
            rtl_equal.append(all(np.array_equal(a, b) for a, b in same))
            rtl_cycles.append(hw.device_cycles)
    if rtl is not None:
        rtl.close()
    n = len(sentences)
    layers = len(model.encoder.layer)
    heads = model.encoder.layer[0].attention.self.heads
    dh = model.config.hidden_size // heads
    chip = attention_on_chip(cfg, args.tokens, dh)
    chip_cycles = (chip["qk"] + chip["av"]) * heads * layers
    per_sentence = float(np.mean(cycles))
    row = {
        "model": "MiniLM-L6-H384",
        "method": method,
        "weights": args.checkpoint or "post-training (quantize_minilm)",
        "board": args.board,
        "clock_mhz": cfg.clock_mhz,
        "tokens": args.tokens,
        "device_ops": len(graph.graphs),
        "device_linears": sum(len(g.layers) for g in graph.graphs),
        "float_linears": graph.meta["float_linears"],
        "device_cycles_per_sentence": per_sentence,
        "device_ms_per_sentence": per_sentence / cfg.clock_mhz / 1e3,
        "host_ops_per_sentence": {k: v // n for k, v in count.items()},
        "host_ms_per_sentence": {k: 1e3 * v / n for k, v in host.items()},
        "host_ms_total_per_sentence": 1e3 * sum(host.values()) / n,
        "attention_matmuls_host_ms": 1e3 * host["matmul"] / n,
        "attention_matmuls_on_chip_cycles": chip_cycles,
        "attention_matmuls_on_chip_ms": chip_cycles / cfg.clock_mhz / 1e3,
        "attention_per_head_cycles": chip,
        "device_op_cycles_first_sentence": per_op,
        "golden_equals_reference": True,
        "rtl_sentences_equal_golden": f"{sum(rtl_equal)}/{len(rtl_equal)}",
        "rtl_cycles_per_sentence": float(np.mean(rtl_cycles)) if rtl_cycles else None,
        "mean_abs_diff_vs_fake_quant_hidden": float(np.mean(diffs)),
        "sentences": n,
        "quantize_seconds": quant_s,
        "capture_seconds": capture_s,
        "lower_seconds": prog.meta["lower_seconds"],
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "command": "python benchmarks/transformer.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False)
        ),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = json.loads(JSON.read_text()) if JSON.exists() else []
    rows = [
        r
        for r in rows
        if (r["method"], r["board"], r["tokens"]) != (row["method"], row["board"], row["tokens"])
    ]
    JSON.write_text(json.dumps([*rows, row], indent=1) + "\n")
    print(f"| {'what':<44} | {'value':>14} |")
    print(f"|{'-' * 46}|{'-' * 16}|")
    for k in (
        "device_linears",
        "device_cycles_per_sentence",
        "device_ms_per_sentence",
        "host_ms_total_per_sentence",
        "attention_matmuls_host_ms",
        "attention_matmuls_on_chip_ms",
        "mean_abs_diff_vs_fake_quant_hidden",
        "rtl_sentences_equal_golden",
        "lower_seconds",
    ):
        v = row[k]
        print(f"| {k:<44} | {v:>14,.3f} |" if isinstance(v, float) else f"| {k:<44} | {v!s:>14} |")
    print("host ops per sentence:", row["host_ops_per_sentence"])
    print(f"-> {JSON}")


if __name__ == "__main__":
    main()
