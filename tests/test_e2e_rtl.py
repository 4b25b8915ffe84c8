"""End to end on random models: torch -> quantize -> compile -> golden and RTL.

For 200 random Linear / Conv2d (+BN, +ReLU) layers and chains, with random shapes (many need
tiling on the small 'tiny' instance) and random scheme ratios, golden == RTL == integer-graph
reference exactly, and the dequantized result is within one output LSB of the fake-quant model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rmsmp.arch import AccelConfig
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats
from rmsmp.quant.export import export
from rmsmp.quant.quantize import quantize
from rmsmp.sim.verilator import RtlDevice

CFG = AccelConfig.for_board("tiny")
CASES = 200
WINDOW = 1 << 22


def _ratio(rng: np.random.Generator) -> dict[str, float]:
    fmts = [g.fmt for g in CFG.groups]
    keep = [f for f in fmts if rng.random() < 0.7] or [fmts[int(rng.integers(len(fmts)))]]
    w = rng.dirichlet(np.ones(len(keep)))
    w = np.round(w, 3)
    w[-1] = 1.0 - w[:-1].sum()
    return {f: float(v) for f, v in zip(keep, w, strict=False) if v > 0} or {keep[0]: 1.0}


def _out_shape(layers: list[nn.Module], in_shape: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(nn.Sequential(*layers).eval()(torch.zeros(1, *in_shape)).shape[1:])


def _model(rng: np.random.Generator) -> tuple[nn.Sequential, tuple[int, ...]]:
    layers: list[nn.Module] = []
    if rng.random() < 0.65:
        c, h = int(rng.integers(1, 20)), int(rng.integers(3, 10))
        shape: tuple[int, ...] = (c, h, h)
        for _ in range(int(rng.integers(1, 3))):
            pad = int(rng.integers(0, 2))
            k = int(rng.integers(1 + pad, min(3, shape[1] + 2 * pad) + 1))
            n = int(rng.integers(1, 24))
            layers.append(
                nn.Conv2d(
                    shape[0],
                    n,
                    k,
                    stride=int(rng.integers(1, 3)),
                    padding=pad,
                    bias=bool(rng.random() < 0.5),
                )
            )
            if rng.random() < 0.5:
                layers.append(nn.BatchNorm2d(n))
            if rng.random() < 0.8:
                layers.append(nn.ReLU())
            shape = _out_shape(layers, (c, h, h))
        # A Linear's kernel is its whole input map; up to 23 channel chunks of 3x3 fit tiny's X.
        if rng.random() < 0.4 and max(shape[1:]) <= 3:
            layers += [nn.Flatten(), nn.Linear(int(np.prod(shape)), int(rng.integers(1, 12)))]
        return _randomize_bn(nn.Sequential(*layers)), (c, h, h)
    k = int(rng.integers(1, 200))
    feats = k
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(1, 40))
        layers.append(nn.Linear(feats, n, bias=bool(rng.random() < 0.7)))
        if rng.random() < 0.7:
            layers.append(nn.ReLU())
        feats = n
    return nn.Sequential(*layers), (k,)


def _randomize_bn(model: nn.Sequential) -> nn.Sequential:
    gen = torch.Generator().manual_seed(0)
    for m in model:
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.3, 0.3, generator=gen)
    return model.eval()


@pytest.fixture(scope="module")
def rtl() -> RtlDevice:
    dev = RtlDevice(CFG, WINDOW)
    yield dev
    dev.close()


@pytest.mark.parametrize("chunk", range(10))
def test_random_models_golden_rtl_fakequant(rtl: RtlDevice, chunk: int) -> None:
    per = CASES // 10
    tiled = 0
    for case in range(chunk * per, (chunk + 1) * per):
        rng = np.random.default_rng(1000 + case)
        torch.manual_seed(case)
        model, in_shape = _model(rng)
        batch = int(rng.integers(1, 4))
        x = torch.randn(batch, *in_shape)
        qmodel = quantize(model, x, ratio=_ratio(rng))
        graph = export(qmodel)
        program = lower(graph, CFG, batch=batch)
        tiled += any(r.x_tiles > 1 or r.w_groups > 1 for r in program.layers)
        xn = x.numpy()
        gold = run_with_stats(program, xn, backend="golden")
        hw = run_with_stats(program, xn, device=rtl)
        ref = graph.evaluate(graph.quantize_input(xn))
        assert np.array_equal(gold.output, hw.output), f"case {case}: golden != RTL"
        assert np.array_equal(hw.output, ref), f"case {case}: RTL != integer reference"
        assert hw.total_cycles > 0
        fq = qmodel(x).detach().numpy()
        err = np.abs(program.dequantize(hw.output) - fq).max()
        assert err <= graph.output_scale * (1 + 1e-9), (
            f"case {case}: {err / graph.output_scale} LSB"
        )
    assert tiled > 0
