"""Integer export vs fake-quant on the CIFAR-10 (JPEG copy) test set, per QAT checkpoint.

For each ResNet-20 checkpoint under benchmarks/results/ckpt (or those given), exports the integer
graph and counts the test images whose integer prediction equals the fake-quant model's: the
exact eval-mode model (``exact_qat``, int64 requant; its logits are also compared bit for bit,
and the first layer whose integers differ is named) and, with --float-path, the float32
fake-quant path as trained.
Prints a table, writes benchmarks/results/export.json (one row per checkpoint file; fp32 and
Brevitas checkpoints, float or 8-bit ends, are skipped).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from readme import replace_block

from rmsmp.compiler.ir import IntGraph
from rmsmp.quant import exact
from rmsmp.quant.export import export_qat
from rmsmp.quant.train import batches, load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


def first_divergence(graph: IntGraph, x_int: np.ndarray) -> str | None:
    """Name of the first node whose exact torch integers differ from ``IntGraph.evaluate``'s."""
    got = exact.outputs(graph, torch.from_numpy(x_int))
    ref = [x_int]
    for i, node in enumerate(graph.layers):
        res = getattr(node, "res_from", None)
        ref.append(node.evaluate(ref[graph.source(i) + 1], None if res is None else ref[res + 1]))
        if not np.array_equal(got[i + 1].numpy(), ref[-1]):
            return node.name
    return None


def check(path: Path, batch: int = 250, float_path: bool = False) -> dict:
    """Agreement of integer and fake-quant predictions over the whole test split."""
    model, ck = load_checkpoint(path)
    model.eval()
    graph = export_qat(model)
    t0 = time.perf_counter()
    agree_exact = agree32 = equal = correct_int = correct_fq = n = 0
    diverge = None
    for x, y in batches("test", batch, False, np.random.default_rng(0)):
        x_int = graph.quantize_input(x.numpy())
        logits = graph.evaluate(x_int)
        with torch.no_grad():
            fq = model(x).numpy()
            if float_path:
                p32 = model.float_forward(x).argmax(1).numpy()
                agree32 += int((logits.argmax(1) == p32).sum())
        same = (fq == logits * graph.output_scale).all(1)
        if diverge is None and not same.all():
            diverge = first_divergence(graph, x_int[~same])
        pint = logits.argmax(1)
        equal += int(same.sum())
        agree_exact += int((pint == fq.argmax(1)).sum())
        correct_int += int((pint == y.numpy()).sum())
        correct_fq += int((fq.argmax(1) == y.numpy()).sum())
        n += len(y)
    row = {
        "checkpoint": path.name,
        "method": ck["method"],
        "images": n,
        "agree_exact_fakequant": agree_exact / n,
        "logits_equal_exact": equal / n,
        "first_diverging_layer": diverge,
        "top1_integer": 100 * correct_int / n,
        "top1_fakequant": 100 * correct_fq / n,
        "seconds": time.perf_counter() - t0,
    }
    return row | ({"agree_fp32_fakequant": agree32 / n} if float_path else {})


def _pct(r: dict, key: str) -> str:
    return f"{100 * r[key]:.2f}%" if key in r else "-"


def markdown(rows: Iterable[dict]) -> str:
    """The README's table: one row per checked checkpoint (older rows lack the exact model)."""
    lines = [
        "| checkpoint | images | agree (exact) | logits equal (exact) | agree (fp32 float path) "
        "| integer top-1 | fake-quant top-1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["checkpoint"]):
        lines.append(
            f"| {r['checkpoint']} | {r['images']} | {_pct(r, 'agree_exact_fakequant')} "
            f"| {_pct(r, 'logits_equal_exact')} | {_pct(r, 'agree_fp32_fakequant')} "
            f"| {r['top1_integer']:.2f} | {r['top1_fakequant']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoints", nargs="*", type=Path)
    p.add_argument(
        "--float-path",
        action="store_true",
        help="also count agreement with the float32 fake-quant path as trained (slower)",
    )
    p.add_argument(
        "--readme", action="store_true", help="only rewrite the README's export table from the JSON"
    )
    args = p.parse_args()
    paths = args.checkpoints or sorted((RESULTS / "ckpt").glob("resnet20-*.pt"))
    out = RESULTS / "export.json"

    def recorded() -> dict[str, dict]:
        return {r["checkpoint"]: r for r in (json.loads(out.read_text()) if out.exists() else [])}

    if args.readme:
        replace_block("export-table", markdown(recorded().values()))
        return 0
    for path in paths:
        if path.name.startswith(("resnet20-fp32-", "resnet20-brevitas-")):
            print(f"{path.name}: not one of our integer-exportable methods, skipped")
            continue
        row = check(path, float_path=args.float_path)
        # re-read just before writing: a check running beside this one may have added rows
        old = recorded()  # a float-path count measured before on the same file stays
        rows = old | {path.name: old.get(path.name, {}) | row}
        out.write_text(json.dumps(sorted(rows.values(), key=lambda r: r["checkpoint"]), indent=1))
    rows = recorded()
    head = f"{'checkpoint':<32}{'exact':>8}{'logits':>8}{'float32':>9}{'int top-1':>10}"
    print(head + f"{'fq top-1':>10}  first diverging layer")
    for r in sorted(rows.values(), key=lambda r: r["checkpoint"]):
        print(
            f"{r['checkpoint']:<32}{_pct(r, 'agree_exact_fakequant'):>8}"
            f"{_pct(r, 'logits_equal_exact'):>8}{_pct(r, 'agree_fp32_fakequant'):>9}"
            f"{r['top1_integer']:>10.2f}{r['top1_fakequant']:>10.2f}  "
            f"{r.get('first_diverging_layer') or '-'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
