"""A few-channel first convolution folded into the array's lanes (``compiler.lower.input_fold``,
``host.tensors.InputFold``): the folded layer over the folded input is the integer graph's layer
to the bit, on golden and RTL, and ResNet-18's conv1 on pynq-z1 needs far fewer predicted
cycles folded."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from graphgen import random_graph

from rmsmp.arch import AccelConfig
from rmsmp.compiler.ir import IntGraph
from rmsmp.compiler.lower import pipeline
from rmsmp.compiler.lower.input_fold import (
    axis_folds,
    choose_fold,
    fold_candidates,
    folded_graph,
    make_fold,
)
from rmsmp.host.program import Program
from rmsmp.host.runtime import run_with_stats
from rmsmp.host.tensors import InputFold

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import first_layer  # noqa: E402


def _first_layer(seed: int, cfg: AccelConfig) -> tuple[IntGraph, np.ndarray]:
    """A random 1-4 channel first conv (odd kernel, stride 1 or 2, padding up to k // 2)
    followed by a 3x3 conv, and an input batch."""
    rng = np.random.default_rng(seed)
    c, k, s = int(rng.integers(1, 5)), int(rng.choice([1, 3, 5, 7])), 1 + seed % 2
    pad = int(rng.integers(0, k // 2 + 1))
    shape = (c, int(rng.integers(k + 2, 16)), int(rng.integers(k + 2, 16)))
    specs = [
        dict(kind="conv", n=int(rng.integers(2, 24)), kernel=k, stride=s, padding=pad),
        dict(kind="conv", n=int(rng.integers(2, 12)), kernel=3, padding=1),
    ]
    graph = random_graph(rng, cfg, shape, specs)
    return graph, rng.integers(-128, 128, size=(int(rng.integers(1, 3)), *shape))


def _lower(graph: IntGraph, cfg: AccelConfig, batch: int, fold: InputFold | None) -> Program:
    """The pipeline with ``fold`` in place of the cost model's choice."""
    s = pipeline.Lowering(graph, cfg, batch)
    for stage in pipeline.STAGES:
        if stage is pipeline.fold_first_layer:
            s.fold = fold
            s.graph = graph if fold is None else folded_graph(graph, fold)
        else:
            stage(s)
    return s.program


@pytest.mark.parametrize("seed", range(8))
def test_every_fold_of_a_first_layer_is_exact(seed: int) -> None:
    """Every way to fold both axes gives, over the host's folded input, the layer's integers."""
    graph, x = _first_layer(seed, AccelConfig.for_board("pynq-z1"))
    layer = graph.layers[0]
    k, s = layer.weight.shape[2], layer.stride[0]
    want = graph.evaluate(x)
    for h in axis_folds(k, s):
        for w in axis_folds(k, s):
            fold = make_fold(layer, graph.input_shape, h, w)
            folded = folded_graph(graph, fold)
            assert folded.layers[0].weight.shape[1] == layer.weight.shape[1] * h[1] * w[1]
            assert np.array_equal(folded.evaluate(fold.apply(x)), want)


@pytest.mark.parametrize("seed", range(8))
def test_folded_first_layers_run_exact_on_golden(seed: int, tmp_path) -> None:
    """Each fold on the cost front, and the lowering's own choice, compiled and run: golden ==
    IntGraph.evaluate; the fold survives a save and load of the Program."""
    cfg = AccelConfig.for_board("pynq-z1" if seed % 4 < 2 else "tiny")
    graph, x = _first_layer(seed, cfg)
    want = graph.evaluate(x)
    folds = fold_candidates(graph, cfg)
    chosen = choose_fold(graph, cfg, len(x))
    for fold in [*folds, chosen]:
        prog = _lower(graph, cfg, len(x), fold)
        assert prog.input_fold == fold and prog.input_shape == graph.input_shape
        if fold is not None:
            kernel = folded_graph(graph, fold).layers[0].weight.shape[2:]
            assert (prog.layers[0].kernel, prog.layers[0].padding) == (kernel, (0, 0))
        assert np.array_equal(run_with_stats(prog, x).output, want)
    prog.save(tmp_path / "p.rmsmp")
    assert Program.load(tmp_path / "p.rmsmp").input_fold == chosen


def test_a_folded_first_layer_on_rtl_equals_golden(rtl) -> None:
    """tiny preset (8 lanes): a 2-channel 5x5 stride-2 first layer folds, RTL == golden ==
    IntGraph.evaluate."""
    rng = np.random.default_rng(7)
    cfg = rtl.config
    specs = [
        dict(kind="conv", n=6, kernel=5, stride=2, padding=2),
        dict(kind="conv", n=5, kernel=3, padding=1),
    ]
    graph = random_graph(rng, cfg, (2, 11, 10), specs)
    x = rng.integers(-128, 128, size=(2, 2, 11, 10))
    prog = pipeline.lower(graph, cfg, 2)
    assert prog.input_fold is not None
    hw = run_with_stats(prog, x, device=rtl)
    assert np.array_equal(hw.output, graph.evaluate(x))
    assert np.array_equal(hw.output, run_with_stats(prog, x).output)


@pytest.fixture(scope="module")
def rtl():
    from rmsmp.sim.verilator import RtlDevice

    dev = RtlDevice(AccelConfig.for_board("tiny"), 1 << 22)
    yield dev
    dev.close()


def test_resnet18_conv1_folds_for_fewer_predicted_cycles() -> None:
    """ResNet-18's conv1 (3 channels, 7x7 stride 2, padding 3, 64 rows in the preset's format
    ratio) on pynq-z1: the cost model folds it, and the cycle model predicts at least 3x fewer
    cycles than unfolded (benchmarks/first_layer.py measures the factor on every preset)."""
    cfg = AccelConfig.for_board("pynq-z1")
    graph = first_layer.conv1_graph(cfg)
    folded = pipeline.lower(graph, cfg, 1)
    assert folded.input_fold is not None
    plain = first_layer.lower_unfolded(graph, cfg, 1)
    assert plain.input_fold is None
    assert 3 * first_layer.predicted(folded) < first_layer.predicted(plain)
