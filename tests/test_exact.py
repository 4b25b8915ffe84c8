"""Exact fake-quant: in eval mode the torch models equal their integer graphs bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bnstats import randomize_bn
from cnngen import Net
from torch import nn

from rmsmp.arch import numerics
from rmsmp.quant import exact
from rmsmp.quant.exact_qat import exact_eval
from rmsmp.quant.export import export, export_qat
from rmsmp.quant.methods import method, prepare
from rmsmp.quant.models.resnet_cifar import ResNetCifar
from rmsmp.quant.qat import init_act_steps
from rmsmp.quant.quantize import quantize

QAT_METHODS = ("rmsmp", "rmsmp-sp2", "fixed4", "msq", "ilmpq", "pot4")


def _qat_resnet(seed: int, hw: int) -> tuple[nn.Module, str]:
    """A small random QAT ResNet (option-A shortcuts, pooling, Linear head), steps initialised."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = ResNetCifar(tuple(int(b) for b in rng.integers(1, 3, size=3)), 10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            randomize_bn(m, rng)
    name = QAT_METHODS[seed % len(QAT_METHODS)]
    x = torch.randn(16, 3, hw, hw) * 1.5
    prepare(model.eval(), method(name), x)
    init_act_steps(model, x)
    return exact_eval(model), name


@pytest.mark.parametrize("seed", range(4))
def test_exact_qat_model_equals_its_integer_graph(seed: int) -> None:
    model, name = _qat_resnet(seed, 12)
    model.eval()
    graph = export_qat(model, (3, 12, 12))
    x = torch.randn(24, 3, 12, 12) * 2
    with torch.no_grad():
        y = model(x)
    ints = graph.evaluate(graph.quantize_input(x.numpy()))
    assert y.dtype == torch.float64, name
    assert np.array_equal(y.numpy(), ints * graph.output_scale), name
    assert np.array_equal(np.rint(y.numpy() / graph.output_scale).astype(np.int64), ints)


def test_exact_qat_follows_parameter_changes_and_trains_in_float() -> None:
    model, _ = _qat_resnet(7, 8)
    model.eval()
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
        model.linear.weight.mul_(-1)
        after = model(x)
    graph = export_qat(model, (3, 8, 8))
    ints = graph.evaluate(graph.quantize_input(x.numpy()))
    assert np.array_equal(after.numpy(), ints * graph.output_scale)
    assert not torch.equal(before, after)
    model.train()
    out = model(x)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert model.linear.weight.grad is not None and bool((model.linear.weight.grad != 0).any())


@pytest.mark.parametrize("seed", range(4))
def test_exact_ptq_model_equals_its_integer_graph(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    torch.manual_seed(seed)
    model = Net(rng, 3)
    x = torch.from_numpy(rng.normal(0, 1.5, size=(8, 3, 10, 10))).float()
    qmodel = quantize(model, x, ratio={"pot4": 0.5, "sp2-4": 0.25, "fixed8": 0.25}, act_bits=4)
    graph = export(qmodel)
    x2 = torch.from_numpy(rng.normal(0, 2.0, size=(16, 3, 10, 10))).float()
    with torch.no_grad():
        y = qmodel(x2)
    ints = graph.evaluate(graph.quantize_input(x2.numpy()))
    assert np.array_equal(y.numpy(), ints * graph.output_scale)
    qmodel.train()
    with torch.no_grad():
        y_float = qmodel(x2)
    assert y_float.shape == y.shape


def test_exact_torch_graph_matches_numpy_node_by_node() -> None:
    model, _ = _qat_resnet(11, 8)
    graph = export_qat(model.eval(), (3, 8, 8))
    x_int = graph.quantize_input(np.random.default_rng(0).normal(0, 2, (6, 3, 8, 8)))
    got = exact.outputs(graph, torch.from_numpy(x_int))
    ref = [x_int]
    for i, node in enumerate(graph.layers):
        res = getattr(node, "res_from", None)
        ref.append(node.evaluate(ref[graph.source(i) + 1], None if res is None else ref[res + 1]))
        assert np.array_equal(got[i + 1].numpy(), ref[-1]), node.name


@pytest.mark.parametrize("seed", range(6))
def test_round_sum_int64_takes_numpy_and_torch_alike(seed: int) -> None:
    """Both int64 paths (direct and 16-bit split) give numpy's and torch's operands one answer,
    equal to the Python-integer definition."""
    rng = np.random.default_rng(seed)
    wide = seed % 2 == 1
    acc = rng.integers(-(1 << 20), 1 << 20, size=200)
    bias = rng.integers(-(1 << 40), 1 << 40, size=200) if wide else rng.integers(-99, 99, 200)
    mult = rng.integers(1 << 30, 1 << 31, size=200)
    shift = rng.integers(16, 62, size=200)
    v = (acc << 16) + bias
    want = [
        (int(a) * int(m) + (1 << (int(s) - 1))) >> int(s)
        for a, m, s in zip(v, mult, shift, strict=True)
    ]
    got_np = numerics.round_sum_int64([(v, mult)], shift)
    got_t = numerics.round_sum_int64(
        [(torch.from_numpy(v), torch.from_numpy(mult))], torch.from_numpy(shift)
    )
    assert got_np is not None and got_t is not None
    assert got_np.tolist() == want
    assert got_t.tolist() == want
    lo, hi = -128, 127
    req = exact.requant(
        "l",
        torch.from_numpy(acc),
        torch.from_numpy(bias),
        torch.from_numpy(mult),
        torch.from_numpy(shift),
        lo,
        hi,
    )
    assert req[0].tolist() == numerics.requant(acc, bias, mult, shift, lo, hi).tolist()
