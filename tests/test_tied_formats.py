"""Row formats tied across identity shortcuts (``quantize(..., tie_shortcuts=True)``): one
assignment for a shortcut's producer and every conv that adds it, optimal for their summed
error, so the lowering reads each such shortcut where it lies instead of copying it."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from bnstats import randomize_bn
from cnngen import Basic
from torch import nn

import rmsmp
from rmsmp.arch import AccelConfig
from rmsmp.compiler.ir import IntLayer
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.quant.assign import assign_tied, relative_costs
from rmsmp.quant.export import export


def test_tied_assignment_minimises_the_summed_error() -> None:
    """Against every split of 6 rows into 3 PoT-4 and 3 Fixed-4 rows, over three layers."""
    rng = np.random.default_rng(0)
    layers = [rng.standard_t(2 + i, size=(6, 18)) for i in range(3)]
    names = ["pot4", "fixed4"]
    cost = sum(relative_costs(w, names) for w in layers)
    got = assign_tied(layers, {"pot4": 0.5, "fixed4": 0.5})
    assert got.count("pot4") == 3
    best = min(
        sum(cost[r, 0 if r in pot else 1] for r in range(6))
        for pot in itertools.combinations(range(6), 3)
    )
    assert sum(cost[r, names.index(f)] for r, f in enumerate(got)) == best


class _Net(nn.Module):
    """A stem conv, two identity blocks, a 1x1-conv shortcut block, a global pool and a head."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, 1, 1), nn.BatchNorm2d(12), nn.ReLU())
        self.blocks = nn.Sequential(
            Basic(12, 12, 1, "identity", "plus"),
            Basic(12, 12, 1, "identity", "plus"),
            Basic(12, 24, 2, "conv", "plus"),
        )
        self.fc = nn.Linear(24, 5)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                randomize_bn(m, rng)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
        return self.fc(torch.flatten(x, 1))


def test_tied_shortcuts_share_formats_and_need_no_copy() -> None:
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    model = _Net(rng).eval()
    x = torch.from_numpy(rng.normal(0, 1, size=(2, 3, 8, 8))).float()
    cfg = AccelConfig.for_board("pynq-z1")
    graphs = {t: export(rmsmp.quantize(model, x, cfg, tie_shortcuts=t)) for t in (False, True)}
    tied = graphs[True]
    convs = {n.name: n for n in tied.layers if isinstance(n, IntLayer)}
    stem, c1, c2 = (convs[k] for k in ("stem.0", "blocks.0.conv2", "blocks.1.conv2"))
    assert stem.formats == c1.formats == c2.formats
    assert convs["blocks.2.conv2"].formats == convs["blocks.2.down.0"].formats
    alone = {n.name: n.formats for n in graphs[False].layers if isinstance(n, IntLayer)}
    assert alone["blocks.0.conv2"] != c1.formats  # the tie is not what the layer picks alone
    for t, graph in graphs.items():
        prog = lower(graph, cfg, 2)
        copies = {r.name for r in prog.layers if r.op == "copy"}
        assert ("blocks.1.conv2.shortcut" in copies) == (not t)
        xq = graph.quantize_input(x.numpy())
        assert np.array_equal(run_with_stats(prog, xq).output, graph.evaluate(xq))
