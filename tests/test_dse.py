"""benchmarks/dse.py on a tiny space: a small CNN on pynq-z1 at two array sizes, one that fits
and one that does not."""

from __future__ import annotations

import benchpath  # noqa: F401  (benchmarks/ on sys.path)
import dse
import numpy as np
import pytest
import torch
from torch import nn

import rmsmp
from rmsmp.arch import PRESETS, RowGroup
from rmsmp.boards import resources
from rmsmp.boards.devices import board
from rmsmp.compiler.ir import IntGraph
from rmsmp.compiler.lower import lower
from rmsmp.quant.export import export

BOARD = "pynq-z1"
SIZES = (8, 48)
"""8x8 fits the XC7Z020 in every mix; no 48x48 mix does (LUT or DSP48E1)."""
SHAPE = (3, 8, 8)


def _graph(ratio) -> IntGraph:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(24),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 10),
    ).eval()
    x = torch.randn(4, *SHAPE)
    return export(rmsmp.quantize(model, x, ratio=ratio, act_bits=4))


@pytest.fixture(scope="module")
def swept() -> tuple[list[dict], dse.Evaluator]:
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=(16, 27)), rng.laplace(size=(24, 144))]
    ev = dse.Evaluator({"tiny": _graph({"fixed4": 1.0})}, rows)
    return dse.sweep(BOARD, SIZES, ev, net="tiny"), ev


def test_every_feasible_point_is_within_budget(swept) -> None:
    points, ev = swept
    b = board(BOARD)
    feasible = [p for p in points if p["feasible"]]
    assert feasible and {p["rows"] for p in feasible} == {SIZES[0]}
    for p in feasible:
        est = resources.estimate(ev.configs[p["config_hash"]])
        assert est.lut <= dse.FILL * b.luts and est.dsp <= dse.FILL * b.dsps
        assert est.ff <= b.ffs and est.bram36 <= b.bram36
        assert p["cycles"]["tiny"] > 0 and p["weight_error"] > 0


def test_infeasible_points_name_the_resource_over_budget(swept) -> None:
    points, _ = swept
    rejected = [p for p in points if not p["feasible"]]
    assert rejected and {p["rows"] for p in rejected} == {SIZES[1]}
    budget = dse.budget(BOARD, dse.FILL)
    for p in rejected:
        groups = tuple(RowGroup(**g) for g in p["groups"])
        est = resources.estimate(dse.config(PRESETS[BOARD], p["label"], groups))
        over = [r for r in resources.RESOURCES if getattr(est, r) > budget[r]]
        assert over and f" {resources.NAMES[over[0]]}, " in p["rejected"]
        assert "cycles" not in p


def test_swept_arrays_are_square_and_cover_fixed4_only(swept) -> None:
    points, _ = swept
    assert all(p["rows"] == p["cols"] == sum(g["rows"] for g in p["groups"]) for p in points)
    fams = {p["family"] for p in points if p["feasible"]}
    assert fams == {"fixed4", *dse.SHIFTS}
    assert any(p["groups"] == [{"fmt": "fixed4", "rows": SIZES[0]}] for p in points)


def test_pareto_front_is_nonempty_and_nondominated(swept) -> None:
    points, _ = swept
    feasible = [p for p in points if p["feasible"]]
    front = [p for p in feasible if p["front"]]
    assert front

    def key(p: dict) -> tuple[float, float]:
        return p["latency_ms"]["tiny"], p["weight_error"]

    def beats(a: dict, b: dict) -> bool:
        return all(x <= y for x, y in zip(key(a), key(b), strict=True)) and key(a) != key(b)

    for p in front:
        assert not any(beats(q, p) for q in feasible)
    for p in feasible:
        if not p["front"]:
            assert any(beats(q, p) for q in front)


def test_reassigned_rows_give_the_quantizer_cycles(swept) -> None:
    """The evaluator's cycles (rows reassigned on one quantized graph) equal those of the graph
    quantized at the point's own ratio."""
    points, ev = swept
    mixed = next(p for p in points if p["feasible"] and len(p["groups"]) == 3)
    cfg = ev.configs[mixed["config_hash"]]
    assert dse.predicted(lower(_graph(cfg), cfg, batch=1)) == mixed["cycles"]["tiny"]
