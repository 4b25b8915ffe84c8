"""Integer export vs fake-quant on the CIFAR-10 (JPEG copy) test set, per QAT checkpoint.

For each ResNet-20 checkpoint under benchmarks/results/ckpt (or those given), exports the integer
graph and counts the test images whose integer prediction equals the fake-quant model's (run in
float32, as trained, and in float64). Prints a table, writes benchmarks/results/export.json (one
row per checkpoint file; fp32 and Brevitas checkpoints, float or 8-bit ends, are skipped).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from readme import replace_block

from rmsmp.compiler.export import export_qat
from rmsmp.compiler.train import batches, load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


def check(path: Path, batch: int = 250) -> dict:
    """Agreement of integer and fake-quant predictions over the whole test split."""
    model, ck = load_checkpoint(path)
    model.eval()
    graph = export_qat(model)
    m64 = copy.deepcopy(model).double()
    t0 = time.perf_counter()
    agree32 = agree64 = correct_int = correct_fq = n = 0
    for x, y in batches("test", batch, False, np.random.default_rng(0)):
        with torch.no_grad():
            p32 = model(x).argmax(1).numpy()
            p64 = m64(x.double()).argmax(1).numpy()
        pint = graph.evaluate(graph.quantize_input(x.numpy())).argmax(1)
        agree32 += int((pint == p32).sum())
        agree64 += int((pint == p64).sum())
        correct_int += int((pint == y.numpy()).sum())
        correct_fq += int((p32 == y.numpy()).sum())
        n += len(y)
    return {
        "checkpoint": path.name,
        "method": ck["method"],
        "images": n,
        "agree_fp32_fakequant": agree32 / n,
        "agree_fp64_fakequant": agree64 / n,
        "top1_integer": 100 * correct_int / n,
        "top1_fakequant": 100 * correct_fq / n,
        "seconds": time.perf_counter() - t0,
    }


def markdown(rows: Iterable[dict]) -> str:
    """The README's table: one row per checked checkpoint."""
    lines = [
        "| checkpoint | images | agree (fp32) | agree (fp64) | integer top-1 | fake-quant top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["checkpoint"]):
        lines.append(
            f"| {r['checkpoint']} | {r['images']} | {100 * r['agree_fp32_fakequant']:.2f}% "
            f"| {100 * r['agree_fp64_fakequant']:.2f}% | {r['top1_integer']:.2f} "
            f"| {r['top1_fakequant']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoints", nargs="*", type=Path)
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
        row = check(path)
        # re-read just before writing: a check running beside this one may have added rows
        rows = recorded() | {path.name: row}
        out.write_text(json.dumps(sorted(rows.values(), key=lambda r: r["checkpoint"]), indent=1))
    rows = recorded()
    head = f"{'checkpoint':<30}{'agree f32':>10}{'agree f64':>10}{'int top-1':>10}{'fq top-1':>10}"
    print(head)
    for r in sorted(rows.values(), key=lambda r: r["checkpoint"]):
        print(
            f"{r['checkpoint']:<30}{r['agree_fp32_fakequant']:>10.4f}"
            f"{r['agree_fp64_fakequant']:>10.4f}{r['top1_integer']:>10.2f}{r['top1_fakequant']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
