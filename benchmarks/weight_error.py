"""Weight quantisation error of every method's row mix on the pretrained ResNet-20.

For the inner conv layers (the ends stay Fixed-8 in every method), each method's rows are
assigned as ``methods.prepare`` does by default (``assign_rows``: optimal on relative error at
the method's ratio), each row at its MSE-optimal scale. The table gives the total relative MSE
(sum over rows of MSE / mean(w^2)) relative to fixed4's. It explains, before any training, why a
method starts behind: a mix whose weights are further from the float ones needs more QAT to
recover. Prints a table and writes benchmarks/results/weight_error.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rmsmp.quant.assign import assign_costed, relative_costs
from rmsmp.quant.methods import METHODS, quant_layers
from rmsmp.quant.models.resnet_cifar import load_resnet20

RESULTS = Path(__file__).resolve().parent / "results"


def inner_rows() -> list[np.ndarray]:
    """The weight rows ([out channels, fan-in], float64) of the pretrained ResNet-20's inner
    conv layers (the ends stay Fixed-8 in every method)."""
    layers = quant_layers(load_resnet20())[1:-1]
    return [
        layer.weight.detach().reshape(layer.weight.shape[0], -1).double().numpy()
        for _, layer in layers
    ]


def mix_error(rows: list[np.ndarray], ratio: dict[str, float]) -> float:
    """Total relative weight MSE of ``rows`` (one array per layer) with each layer's rows assigned
    at ``ratio`` (as ``assign_rows`` does), each row at its MSE-optimal scale."""
    fmts = list(ratio)
    total = 0.0
    for w in rows:
        cost = relative_costs(w, fmts)
        chosen = assign_costed(cost, fmts, ratio)
        total += float(cost[np.arange(len(w)), [fmts.index(f) for f in chosen]].sum())
    return total


def total_errors() -> dict[str, float]:
    """Total relative weight MSE over the inner conv rows, per quantized method."""
    rows = inner_rows()
    return {name: mix_error(rows, m.ratio) for name, m in METHODS.items() if m.ratio is not None}


def main() -> int:
    totals = total_errors()
    base = totals["fixed4"]
    print(f"{'method':<11}{'rel. MSE':>10}{'vs fixed4':>11}")
    for name, t in sorted(totals.items(), key=lambda kv: kv[1]):
        print(f"{name:<11}{t:>10.2f}{t / base:>11.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "weight_error.json"
    rows = [
        {"method": k, "total_relative_mse": v, "vs_fixed4": v / base} for k, v in totals.items()
    ]
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
