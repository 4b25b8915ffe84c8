"""Row sensitivity on the pretrained ResNet-20: Hutchinson traces vs power-iteration eigenvalues.

On a few batches of real CIFAR-10 training images (cross-entropy, model in eval mode):

(a) per layer, the Spearman rank correlation between the per-row Hutchinson traces Tr(H_rr) and
    the per-row power-iteration eigenvalues lambda_max(H_rr), and the overlap of the rows each
    would make 8-bit (the fixed8 count of the paper's ratio); the wall time of each method; and,
    for a few rows, the exact lambda_max(H_rr) (power iteration on that row alone) as ground truth;
(b) ``compare_split_rules`` at the paper's ratio: total relative weight-quantisation MSE of the
    "variance" and "error" 4-bit split rules, with the fixed8 rows chosen by each sensitivity.

Prints tables and writes benchmarks/results/sensitivity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from scipy.stats import spearmanr
from torch import nn

from rmsmp.quant.assign import compare_split_rules, row_counts
from rmsmp.quant.data import cifar10
from rmsmp.quant.models.resnet_cifar import load_resnet20
from rmsmp.quant.quantize import PAPER_RATIO
from rmsmp.quant.sensitivity import (
    hutchinson_row_traces,
    power_iteration_row_eigs,
    weight_layers,
)

RESULTS = Path(__file__).resolve().parent / "results"
CHECK_ROWS = (("conv1", 3), ("layer2.1.conv1", 20), ("layer3.2.conv2", 40), ("linear", 2))
"""(layer, row) pairs whose exact block eigenvalue is computed as ground truth."""


def ce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def exact_row_eig(
    model: nn.Module, batches: list, layer: str, row: int, iters: int
) -> tuple[float, float]:
    """lambda_max(H_rr) of one row by power iteration with v supported on that row only (no
    coupling at all), and the relative change of its last step."""
    w = dict(weight_layers(model))[layer].weight
    grads = [torch.autograd.grad(ce_loss(model, b), w, create_graph=True)[0][row] for b in batches]
    v = torch.randn(w.shape[1:], generator=torch.Generator().manual_seed(0))
    v /= v.norm()
    lam = prev = 0.0
    for _ in range(iters):
        u = sum(torch.autograd.grad((g * v).sum(), w, retain_graph=True)[0][row] for g in grads)
        u = u / len(batches)
        prev, lam = lam, float((u * v).sum())
        v = u / u.norm()
    return lam, abs(lam - prev) / abs(lam)


def full_hvp_seconds(model: nn.Module, batch: tuple, repeats: int = 3) -> float:
    """Median wall time of one Hessian-vector product over all weights (the unit of cost)."""
    weights = [m.weight for _, m in weight_layers(model)]
    grads = torch.autograd.grad(ce_loss(model, batch), weights, create_graph=True)
    times = []
    for _ in range(repeats + 1):  # the first one warms up
        t0 = time.perf_counter()
        dot = sum((g * torch.randn_like(g)).sum() for g in grads)
        torch.autograd.grad(dot, weights, retain_graph=True)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def top_rows(x: torch.Tensor, k: int) -> set[int]:
    return set(torch.argsort(x, descending=True, stable=True)[:k].tolist())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--samples", type=int, default=16, help="Hutchinson vectors per batch")
    p.add_argument("--iters", type=int, default=8, help="power-iteration steps per layer")
    p.add_argument("--check-iters", type=int, default=12, help="steps of the exact row checks")
    p.add_argument(
        "--threads", type=int, help="torch threads (1 is faster when other jobs load the cores)"
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_resnet20()
    x, y = cifar10("train", args.batches * args.batch_size, seed=0)
    xs, ys = torch.from_numpy(x).split(args.batch_size), torch.from_numpy(y).split(args.batch_size)
    batches = list(zip(xs, ys, strict=True))

    t_hvp = full_hvp_seconds(model, batches[0])
    t0 = time.perf_counter()
    hut = hutchinson_row_traces(model, ce_loss, batches, n_samples=args.samples)
    t_hut = time.perf_counter() - t0
    t0 = time.perf_counter()
    pi = power_iteration_row_eigs(model, ce_loss, batches, iters=args.iters)
    t_pi = time.perf_counter() - t0

    layers, hit, chosen = [], 0, 0
    print(
        f"{'layer':<16}{'rows':>5}{'spearman':>10}{'top k':>7}{'overlap':>9}"
        f"{'trace se/|tr|':>15}{'eig se/|eig|':>14}"
    )
    for name, tr in hut.trace.items():
        eig = pi.eig[name]
        k = row_counts(len(tr), PAPER_RATIO)["fixed8"]
        both = len(top_rows(tr, k) & top_rows(eig, k))
        hit, chosen = hit + both, chosen + k
        rho = float(spearmanr(tr.numpy(), eig.numpy()).statistic)
        rel_tr = float((hut.stderr[name] / tr.abs().clamp_min(1e-12)).median())
        rel_eig = float((pi.stderr[name] / eig.abs().clamp_min(1e-12)).median())
        layers.append(
            {
                "layer": name,
                "rows": len(tr),
                "spearman": rho,
                "top_k": k,
                "top_k_overlap": both,
                "median_rel_stderr_trace": rel_tr,
                "median_rel_stderr_eig": rel_eig,
                "negative_traces": int((tr < 0).sum()),
            }
        )
        print(f"{name:<16}{len(tr):>5}{rho:>10.3f}{k:>7}{both:>9}{rel_tr:>15.2f}{rel_eig:>14.2f}")
    rhos = [e["spearman"] for e in layers]
    print(
        f"median Spearman {np.median(rhos):.3f}; top-k overlap {hit}/{chosen} rows "
        f"(chance ~{sum(e['top_k'] ** 2 / e['rows'] for e in layers):.1f})"
    )
    print(
        f"wall: Hutchinson {t_hut:.1f} s ({args.samples} vectors x {len(batches)} batches), "
        f"power iteration {t_pi:.1f} s ({args.iters} steps x {len(batches)} batches per layer); "
        f"one full Hessian-vector product {t_hvp:.2f} s, so {t_hut / t_hvp:.0f} and "
        f"{t_pi / t_hvp:.0f} of them"
    )

    checks = []
    t0 = time.perf_counter()
    print(f"\n{'exact check':<22}{'exact eig':>10}{'PI eig':>10}{'PI se':>8}{'trace':>9}{'se':>8}")
    for layer, row in CHECK_ROWS:
        lam, change = exact_row_eig(model, batches, layer, row, args.check_iters)
        e, se = float(pi.eig[layer][row]), float(pi.stderr[layer][row])
        t, tse = float(hut.trace[layer][row]), float(hut.stderr[layer][row])
        checks.append(
            {
                "layer": layer,
                "row": row,
                "exact_eig": lam,
                "exact_last_rel_change": change,
                "pi_eig": e,
                "pi_stderr": se,
                "trace": t,
                "trace_stderr": tse,
            }
        )
        print(f"{layer + f'[{row}]':<22}{lam:>10.4g}{e:>10.4g}{se:>8.2g}{t:>9.4g}{tse:>8.2g}")
    t_check = time.perf_counter() - t0

    split = {}
    sens_sources = {"error fallback": None, "hutchinson": hut.trace, "power iteration": pi.eig}
    print(f"\n{'fixed8 rows by':<18}{'variance':>12}{'error':>12}  (total relative MSE, conv only)")
    for label, sens in sens_sources.items():
        res = compare_split_rules(model, PAPER_RATIO, sensitivity=sens)
        conv = {k: v for k, v in res["layers"].items() if k != "linear"}
        totals = {r: sum(e[r] for e in conv.values()) for r in ("variance", "error")}
        split[label] = {
            "conv_total": totals,
            "conv_rows": sum(e["n_rows"] for e in conv.values()),
            "all_total": {r: res[r] for r in ("variance", "error")},
            "layers": res["layers"],
        }
        print(f"{label:<18}{totals['variance']:>12.4f}{totals['error']:>12.4f}")

    out = {
        "model": "resnet20 (pretrained, eval)",
        "data": f"CIFAR-10 train, {len(batches)} x {args.batch_size} images (seed 0)",
        "hutchinson_samples": args.samples,
        "power_iters": args.iters,
        "wall_s": {
            "full_hvp": t_hvp,
            "hutchinson": t_hut,
            "power_iteration": t_pi,
            "exact_checks": t_check,
        },
        "layers": layers,
        "median_spearman": float(np.median(rhos)),
        "top_k_overlap": {"rows": hit, "of": chosen},
        "exact_checks": checks,
        "split_rules": split,
        "ratio": PAPER_RATIO,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "command": "python benchmarks/sensitivity.py "
        f"--batches {args.batches} --batch-size {args.batch_size} --samples {args.samples} "
        f"--iters {args.iters} --check-iters {args.check_iters}"
        + (f" --threads {args.threads}" if args.threads else ""),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sensitivity.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
