"""MiniLM (W4A8) with its 36 encoder Linears on chip: SST-2 dev through golden and the exact model.

For a MiniLM checkpoint (``--checkpoint``: a distilled one from ``benchmarks/accuracy.py
--model minilm --epochs 2``, or a post-training one) this captures the encoder at ``--tokens``
tokens into a hybrid graph (the Linears on the accelerator, the rest on the host), lowers it
for ``--board`` at batch 1, and scores SST-2 dev (all 872 sentences) with the fp32-trained
probe (``quant.probe``: mean-pooled, L2-normalised last hidden state) three ways:

- the exact fake-quant model (``quant.exact_tokens.ExactTokenModel``: the Linears in int64
  torch ops, the host ops through the host's numpy functions), on every sentence;
- the golden backend (``host.hybrid.run_hybrid``), on the first ``--golden`` sentences (all
  872 with ``--golden -1``: hours at 72 tokens on this shared machine, the end Linears being
  Fixed-8 on one PE row); every logit is compared with the exact model's, bit for bit;
- the float fake-quant QAT model (what ``accuracy.json`` reports), for reference.

``--rtl N`` runs the first N sentences on the Verilated RTL of ``--rtl-board`` (a Program
lowered for it) and compares them with golden bit for bit. ``--numerics integer`` runs softmax,
LayerNorm and GELU as I-BERT's integer approximations (``host.intops``) in both paths.

SST-2 dev's longest sentence is 66 tokens, so the default ``--tokens 72`` truncates nothing
(the sentence encoder pads to its batch's longest sentence, up to 128): padding changes no
real token's value, but the calibrated 8-bit grids see the padded positions, so the graph at
72 tokens is not bit-identical to the one at 128. Device cycles at 128 tokens come from the
cycle model on the 128-token graph (``--cycles-tokens``; they do not depend on the data), per
device op with its MAC, load and store cycles. ``--cycles-only`` recounts just those (on
``--board`` and ``--other-boards``) for a row already recorded with the same weights, method,
numerics and ``--tokens``, and keeps its accuracies: minutes instead of the hours of the golden
run, for when a preset changes. Writes benchmarks/results/minilm_sst2.json; ``--readme``
rewrites the README block from it. Run with OPENBLAS_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from readme import replace_block

from rmsmp.arch import AccelConfig, isa
from rmsmp.compiler.hybrid import HybridGraph, lower_hybrid
from rmsmp.host.hybrid import DeviceOp, HostOp, HybridProgram, run_hybrid
from rmsmp.host.program import Program
from rmsmp.host.runtime import open_device
from rmsmp.quant.data import sst2
from rmsmp.quant.exact_tokens import ExactTokenModel
from rmsmp.quant.models.minilm import embed, load_minilm
from rmsmp.quant.nlp import quantize_minilm
from rmsmp.quant.probe import DEFAULT_N_TRAIN, Probe, sst2_embeddings, train_probe
from rmsmp.quant.tokenfront import CALIB_SENTENCES, encode, token_model
from rmsmp.quant.train import read_checkpoint
from rmsmp.quant.transformer import capture_tokens
from rmsmp.sim.cycles import predict

RESULTS = Path(__file__).resolve().parent / "results"
JSON = RESULTS / "minilm_sst2.json"


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The sentence embedding of ``quant.models.minilm.sentence_embedding``, in float64 numpy:
    mean over real tokens, L2-normalised."""
    m = mask[..., None].astype(np.float64)
    mean = (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def fit_probe() -> tuple[Probe, float]:
    """The fp32-trained probe of ``quant.probe.sst2_eval`` and the fp32 encoder's dev accuracy."""
    fp32, tok = load_minilm()
    emb, y = sst2_embeddings(fp32, tok, "train", DEFAULT_N_TRAIN)
    probe = train_probe(emb, y)
    emb_dev, y_dev = sst2_embeddings(fp32, tok, "dev")
    return probe, float((probe.predict(emb_dev) == y_dev).mean())


def program_counts(prog: Program) -> dict[str, int]:
    """What the cycle model predicts for one run of ``prog``: cycles, MAC, load, store."""
    cfg = prog.config
    words = isa.from_bytes(cfg, prog.segments["insn"].data)
    c = predict(cfg, [isa.decode(cfg, w) for w in words])
    return {
        "cycles": c.cycles,
        "mac_cycles": c.mac_cycles,
        "load_cycles": c.load_cycles,
        "store_cycles": c.store_cycles,
        "dma_beats": c.dma_beats,
    }


def device_profile(graph: HybridGraph, prog: HybridProgram) -> list[dict]:
    """Per device op: its formats, MACs per sentence, the cycle model's counts, the peak bound."""
    cfg = AccelConfig.preset(prog.meta["config"])
    rows = []
    for g, op in zip(graph.graphs, prog.programs, strict=True):
        name = next(o.name for o in graph.ops if isinstance(o, DeviceOp) and o.program is g)
        layer = g.layers[0]
        n, k = layer.weight.shape[:2]
        tokens = g.input_shape[2]
        formats = {f: layer.formats.count(f) for f in sorted(set(layer.formats))}
        rows.append(
            {"op": name, "k": k, "n": n, "formats": formats, "macs": tokens * k * n}
            | program_counts(op)
            | {"peak_bound_cycles": tokens * k * n / (cfg.rows * cfg.cols)}
        )
    return rows


def host_op_counts(graph: HybridGraph) -> dict[str, int]:
    """Host ops per sentence, by kind."""
    out: dict[str, int] = {}
    for op in graph.ops:
        if isinstance(op, HostOp):
            out[op.kind] = out.get(op.kind, 0) + 1
    return dict(sorted(out.items()))


def capture(model: torch.nn.Module, tokens: int) -> HybridGraph:
    """``quant.tokenfront.hybrid_from_checkpoint`` of an already built QAT model: its hybrid
    graph at ``tokens``, the 8-bit grids calibrated on the same SST-2 train sentences."""
    calib = encode(sst2("train", CALIB_SENTENCES, 1)[0], tokens)
    return capture_tokens(model, tuple(torch.from_numpy(a) for a in calib))


def score(
    args: argparse.Namespace, model: torch.nn.Module, graph: HybridGraph, probe: Probe
) -> dict:
    """Accuracy through the exact model (all of dev) and golden (the first ``--golden``), the
    logits compared bit for bit, and RTL sentences against golden."""
    sentences, labels = sst2("dev")
    sentences, labels = sentences[: args.sentences], labels[: args.sentences]
    ids, mask, types = encode(sentences, args.tokens)
    lengths = np.array([len(e) for e in encode_lengths(sentences)])
    exact = ExactTokenModel(graph, args.numerics)
    cfg = AccelConfig.preset(args.board)
    prog = lower_hybrid(graph, cfg, 1)
    n_golden = len(sentences) if args.golden < 0 else min(args.golden, len(sentences))
    logits_exact, logits_golden = [], []
    hidden_differ = logit_differ = 0
    t0 = time.perf_counter()
    dev = open_device(max(prog.programs, key=lambda p: p.window_size), "golden")
    golden_cycles = []
    golden_s = exact_s = 0.0
    try:
        for i in range(0, len(sentences), args.batch):
            xs = [a[i : i + args.batch] for a in (ids, mask, types)]
            t = time.perf_counter()
            h = exact.outputs(xs)[0]
            exact_s += time.perf_counter() - t
            logits_exact.append(probe.logits(pooled(h, xs[1])))
            g = min(n_golden - i, len(xs[0]))
            if g > 0:
                t = time.perf_counter()
                res = run_hybrid(prog, [x[:g] for x in xs], device=dev, numerics=args.numerics)
                golden_s += time.perf_counter() - t
                golden_cycles.append(res.device_cycles / g)
                hg = res.outputs[0]
                lg = probe.logits(pooled(hg, xs[1][:g]))
                logits_golden.append(lg)
                hidden_differ += int((hg != h[:g]).reshape(g, -1).any(1).sum())
                logit_differ += int((lg != logits_exact[-1][:g]).any(1).sum())
            print(
                f"  {i + len(xs[0])}/{len(sentences)} sentences, {time.perf_counter() - t0:.0f} s"
            )
    finally:
        dev.close()
    le = np.concatenate(logits_exact)
    lg = np.concatenate(logits_golden) if logits_golden else np.zeros((0, 2))
    rtl_equal, rtl_cycles = rtl_check(args, graph, ids, mask, types)
    t = time.perf_counter()
    fq = embed(model, encode_tokenizer(), sentences)
    fq_s = time.perf_counter() - t
    row = {
        "tokens": args.tokens,
        "truncated_sentences": int((lengths > args.tokens).sum()),
        "longest_sentence_tokens": int(lengths.max()),
        "numerics": args.numerics,
        "sentences": len(sentences),
        "exact_acc": float((le.argmax(1) == labels).mean()),
        "golden_sentences": n_golden,
        "golden_acc": float((lg.argmax(1) == labels[:n_golden]).mean()) if n_golden else None,
        "exact_acc_on_golden_sentences": float(
            (le[:n_golden].argmax(1) == labels[:n_golden]).mean()
        )
        if n_golden
        else None,
        "golden_logits_differ": logit_differ,
        "golden_hidden_states_differ": hidden_differ,
        "float_fake_quant_acc": float((probe.predict(fq) == labels).mean()),
        "exact_vs_float_fake_quant_predictions_differ": int(
            (le.argmax(1) != probe.predict(fq)).sum()
        ),
        "golden_device_cycles_per_sentence": float(np.mean(golden_cycles))
        if golden_cycles
        else None,
        "golden_config_hash": AccelConfig.preset(args.board).hash,
        "rtl_board": args.rtl_board,
        "rtl_config_hash": AccelConfig.preset(args.rtl_board).hash,
        "rtl_sentences_equal_golden": f"{sum(rtl_equal)}/{len(rtl_equal)}",
        "rtl_cycles_per_sentence": float(np.mean([c[0] for c in rtl_cycles]))
        if rtl_cycles
        else None,
        "rtl_cycle_model_cycles_per_sentence": float(np.mean([c[1] for c in rtl_cycles]))
        if rtl_cycles
        else None,
        "seconds": {
            "exact": exact_s,
            "golden": golden_s,
            "float_fake_quant": fq_s,
        },
    }
    return row


def encode_tokenizer():  # noqa: ANN201
    """The sentence encoder's tokenizer (truncating at 128, as ``embed`` is scored)."""
    from rmsmp.quant.models.minilm import load_tokenizer

    return load_tokenizer()


def encode_lengths(sentences: list[str]) -> list[list[int]]:
    """Every sentence's token ids, untruncated ([CLS] and [SEP] included)."""
    tok = encode_tokenizer()
    tok.no_truncation()
    return [e.ids for e in tok.encode_batch(sentences)]


def rtl_check(
    args: argparse.Namespace,
    graph: HybridGraph,
    ids: np.ndarray,
    mask: np.ndarray,
    types: np.ndarray,
) -> tuple[list[bool], list[tuple[int, int]]]:
    """The first ``--rtl`` sentences on the Verilated RTL of ``--rtl-board`` against golden."""
    if not args.rtl:
        return [], []
    prog = lower_hybrid(graph, AccelConfig.preset(args.rtl_board), 1)
    big = max(prog.programs, key=lambda p: p.window_size)
    equal, cycles = [], []
    rtl, gold = open_device(big, "rtl"), open_device(big, "golden")
    try:
        for i in range(args.rtl):
            xs = [ids[i : i + 1], mask[i : i + 1], types[i : i + 1]]
            hw = run_hybrid(prog, xs, device=rtl, numerics=args.numerics)
            ref = run_hybrid(prog, xs, device=gold, numerics=args.numerics)
            same = zip(hw.outputs, ref.outputs, strict=True)
            equal.append(all(np.array_equal(a, b) for a, b in same))
            cycles.append((hw.device_cycles, ref.device_cycles))
            print(
                f"  RTL sentence {i}: equal {equal[-1]}, RTL {hw.device_cycles:,} cycles, "
                f"cycle model {ref.device_cycles:,}"
            )
    finally:
        rtl.close()
        gold.close()
    return equal, cycles


def readme_table(rows: list[dict]) -> str:
    """The README's MiniLM SST-2 table from minilm_sst2.json's rows."""
    out = [
        "| weights | method | host numerics | tokens | exact fake-quant acc (872) | golden acc "
        "(sentences) | logits differ | float fake-quant acc | RTL == golden | device cycles "
        "at 128 tokens (pynq-z1) | device ms | compile s (128 tokens) | host ops |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        golden = (
            f"{100 * r['golden_acc']:.2f} ({r['golden_sentences']}; exact on them "
            f"{100 * r['exact_acc_on_golden_sentences']:.2f})"
            if r["golden_sentences"]
            else "not run"
        )
        rtl = (
            f"{r['rtl_sentences_equal_golden']} ({r['rtl_board']}, {r['tokens']} tokens)"
            if r["rtl_sentences_equal_golden"] != "0/0"
            else "not run"
        )
        key = (r["method"], r["weights_kind"])
        same = [o for o in rows if "device" in o and (o["method"], o["weights_kind"]) == key]
        dev = r.get("device") or (same[0]["device"] if same else {"cycles": 0, "ms": 0.0})
        compile_s = f"{dev['lower_seconds']:.1f}" if "lower_seconds" in dev else "-"
        out.append(
            f"| {r['weights_kind']} | {r['method']} | {r['numerics']} | {r['tokens']} "
            f"| {100 * r['exact_acc']:.2f} | {golden} | {r['golden_logits_differ']} "
            f"| {100 * r['float_fake_quant_acc']:.2f} | {rtl} "
            f"| {dev['cycles']:,} | {dev['ms']:.1f} | {compile_s} "
            f"| {sum(r['host_ops_per_sentence'].values())} |"
        )
    return "\n".join(out) + "\n"


def cycles_at(graph: HybridGraph, board: str) -> tuple[dict, list[dict]]:
    """Device cycles per sentence of ``graph`` on ``board`` (cycle model) and per device op."""
    tokens = graph.graphs[0].input_shape[2]
    cfg = AccelConfig.preset(board)
    prog = lower_hybrid(graph, cfg, 1)
    ops = device_profile(graph, prog)
    total = sum(o["cycles"] for o in ops)
    summary = {
        "board": board,
        "config_hash": cfg.hash,
        "tokens": tokens,
        "clock_mhz": cfg.clock_mhz,
        "cycles": total,
        "ms": total / cfg.clock_mhz / 1e3,
        "mac_cycles": sum(o["mac_cycles"] for o in ops),
        "peak_bound_cycles": sum(o["peak_bound_cycles"] for o in ops),
        "lower_seconds": prog.meta["lower_seconds"],
    }
    return summary, ops


ROW_KEY = ("method", "weights_kind", "numerics", "tokens")
"""What tells the JSON's rows apart: a new run replaces the row with the same values."""


def row_key(row: dict) -> tuple:
    """A row's ``ROW_KEY`` values."""
    return tuple(row[k] for k in ROW_KEY)


def recount(args: argparse.Namespace, model: torch.nn.Module, key: tuple) -> None:
    """``--cycles-only``: the device cycles at ``--cycles-tokens`` on ``--board`` and
    ``--other-boards`` of the recorded row ``key``, written into it (its accuracies, golden
    and RTL checks kept, with the command that made them)."""
    rows = json.loads(JSON.read_text()) if JSON.exists() else []
    row = next((r for r in rows if row_key(r) == key), None)
    if row is None:
        raise SystemExit(
            f"--cycles-only: no row {dict(zip(ROW_KEY, key, strict=True))} in {JSON}; "
            "run without --cycles-only first"
        )
    if not args.cycles_tokens:
        raise SystemExit("--cycles-only needs --cycles-tokens > 0")
    big = capture(model, args.cycles_tokens)
    row["device"], row["device_ops"] = cycles_at(big, args.board)
    row["device_other_boards"] = {b: cycles_at(big, b)[0] for b in args.other_boards}
    weights = f"--checkpoint {args.checkpoint}" if args.checkpoint else f"--ptq {args.ptq}"
    row["device_command"] = (
        f"python benchmarks/minilm_sst2.py {weights}"
        + (" --mixed-ends" if args.mixed_ends else "")
        + f" --tokens {args.tokens} --numerics {args.numerics} --board {args.board} "
        f"--cycles-tokens {args.cycles_tokens} --other-boards {' '.join(args.other_boards)} "
        "--cycles-only"
    )
    JSON.write_text(json.dumps(rows, indent=1) + "\n")
    print(readme_table([row]))
    print(f"-> {JSON} (device cycles only; accuracies from: {row['command']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="a MiniLM checkpoint (model_name minilm)")
    ap.add_argument("--ptq", help="instead: MiniLM quantized post-training by this method")
    ap.add_argument(
        "--mixed-ends", action="store_true", help="--ptq: the end Linears get the method's rows"
    )
    ap.add_argument("--tokens", type=int, default=72)
    ap.add_argument("--board", default="pynq-z1")
    ap.add_argument("--golden", type=int, default=32, help="sentences through golden (-1: all)")
    ap.add_argument("--rtl", type=int, default=0, help="sentences on the Verilated RTL")
    ap.add_argument("--rtl-board", default="pynq-z1")
    ap.add_argument("--numerics", choices=("float", "integer"), default="float")
    ap.add_argument("--sentences", type=int, default=872, help="SST-2 dev sentences (smoke runs)")
    ap.add_argument("--batch", type=int, default=8, help="sentences per host batch")
    ap.add_argument(
        "--cycles-tokens", type=int, default=128, help="0: skip (host numerics change no cycle)"
    )
    ap.add_argument("--other-boards", nargs="*", default=["zc706"], help="cycles only")
    ap.add_argument(
        "--cycles-only",
        action="store_true",
        help="recount the device cycles of a recorded row, keep its accuracies",
    )
    ap.add_argument("--readme", action="store_true", help="only rewrite the README block")
    args = ap.parse_args()
    rows = json.loads(JSON.read_text()) if JSON.exists() else []
    if args.readme:
        replace_block("minilm-sst2", readme_table(rows))
        return
    if bool(args.checkpoint) == bool(args.ptq):
        ap.error("give --checkpoint or --ptq METHOD (or --readme)")
    t0 = time.perf_counter()
    if args.ptq:
        model, _ = quantize_minilm(args.ptq, keep_ends=not args.mixed_ends)
        ck = {"method": args.ptq, "epochs": 0}
        kind = "post-training, end Linears " + ("mixed rows" if args.mixed_ends else "Fixed-8")
    else:
        ck = read_checkpoint(Path(args.checkpoint))
        if ck.get("model_name") != "minilm":
            ap.error(f"{args.checkpoint} holds {ck.get('model_name')!r}; give a minilm checkpoint")
        kind = f"distilled {ck['epochs']} epochs" if ck["epochs"] else "post-training"
        if ck["epochs"] and ck["epoch"] != ck["epochs"]:
            kind = f"distilled {ck['epoch']} of {ck['epochs']} epochs"
        model = token_model(ck)
    if args.cycles_only:
        recount(args, model, (ck["method"], kind, args.numerics, args.tokens))
        return
    probe, fp32_acc = fit_probe()
    graph = capture(model, args.tokens)
    print(graph.summary())
    row = {
        "model": "MiniLM-L6-H384",
        "method": ck["method"],
        "weights_kind": kind,
        "checkpoint": args.checkpoint,
        "board": args.board,
        "fp32_acc": fp32_acc,
        "host_ops_per_sentence": host_op_counts(graph),
    }
    row |= score(args, model, graph, probe)
    if args.cycles_tokens:
        big = capture(model, args.cycles_tokens)
        row["device"], row["device_ops"] = cycles_at(big, args.board)
        row["device_other_boards"] = {b: cycles_at(big, b)[0] for b in args.other_boards}
    row["wall_seconds"] = time.perf_counter() - t0
    row["command"] = "python benchmarks/minilm_sst2.py " + " ".join(
        f"--{k.replace('_', '-')}"
        + ("" if v is True else f" {' '.join(map(str, v)) if isinstance(v, list) else v}")
        for k, v in vars(args).items()
        if v not in (None, False)
    )
    rows = json.loads(JSON.read_text()) if JSON.exists() else []  # another run may have added
    rows = [r for r in rows if row_key(r) != row_key(row)] + [row]
    RESULTS.mkdir(parents=True, exist_ok=True)
    JSON.write_text(json.dumps(rows, indent=1) + "\n")
    print(readme_table([row]))
    print(f"-> {JSON}")


if __name__ == "__main__":
    main()
