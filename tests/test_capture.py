"""torch.fx capture: residual CNNs quantize, export to a DAG IntGraph, and match it exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from bnstats import randomize_bn
from cnngen import Basic, Net
from torch import nn

import rmsmp
from rmsmp.arch import numerics
from rmsmp.compiler.ir import IntAvgPool, IntGraph, IntLayer, IntMaxPool
from rmsmp.quant.export import export, export_qat
from rmsmp.quant.methods import method, prepare
from rmsmp.quant.models.resnet_cifar import ResNetCifar
from rmsmp.quant.quantize import UnsupportedLayerError


def _check(model: nn.Module, x: torch.Tensor, **kw) -> tuple[IntGraph, np.ndarray, np.ndarray]:
    """Quantize, export, and compare the integer graph with the fake-quant model: returns the
    graph, its integer output and the fake-quant output divided by the output scale."""
    qmodel = rmsmp.quantize(model, x, **kw)
    graph = export(qmodel)
    with torch.no_grad():
        fq = qmodel(x).numpy() / graph.output_scale
    out = graph.evaluate(graph.quantize_input(x.numpy()))
    return graph, out, fq


@pytest.mark.parametrize("seed", range(30))
def test_random_residual_cnns_match_their_integer_graph(seed: int) -> None:
    """Fake-quant forward == IntGraph.evaluate, element for element (0 LSB)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    cin, side = int(rng.integers(1, 4)), int(rng.integers(8, 13))
    model = Net(rng, cin).eval()
    x = torch.from_numpy(rng.normal(0, 1.5, size=(int(rng.integers(2, 6)), cin, side, side)))
    graph, out, fq = _check(model.float(), x.float(), act_bits=int(rng.integers(2, 8)))
    assert np.array_equal(out, np.rint(fq).astype(np.int64)), np.abs(out - fq).max()
    assert np.abs(out - fq).max() < 1e-6
    assert not graph.is_chain
    assert any(isinstance(n, IntLayer) and n.res_from is not None for n in graph.layers)
    assert any(isinstance(n, IntAvgPool) for n in graph.layers)
    assert graph.shapes()[-1] == (model.fc.out_features,)


def test_capture_keeps_the_float_model_at_8_bits() -> None:
    """At Fixed-8 / A8 the fake-quant model tracks the float model: the DAG is the model's."""
    for seed in range(2):
        rng = np.random.default_rng(100 + seed)
        model = Net(rng, 3).eval()
        x = torch.from_numpy(rng.normal(0, 1, size=(8, 3, 12, 12))).float()
        _, out, fq = _check(model, x, ratio={"fixed8": 1.0}, act_bits=7)
        with torch.no_grad():
            ref = model(x).double().numpy()
        assert np.corrcoef(ref.ravel(), fq.ravel())[0, 1] > 0.95, seed


def test_residual_straight_from_the_input() -> None:
    model = Basic(3, 3, 1, "identity", "iadd").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            randomize_bn(m, np.random.default_rng(1))
    graph, out, fq = _check(model, torch.randn(4, 3, 6, 6))
    assert graph.layers[-1].res_from == -1 and np.array_equal(out, np.rint(fq))


def test_chain_stays_a_chain_and_pools_are_integer() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    )
    graph, out, fq = _check(model, torch.randn(3, 2, 6, 6))
    assert graph.is_chain and np.array_equal(out, np.rint(fq))
    pool = IntAvgPool("p", (2, 2), (2, 2), 1.0)
    x = np.array([[[[1, 2], [0, 0]], [[-1, -2], [0, 0]], [[1, 1], [1, 0]]]])
    assert pool.evaluate(x).ravel().tolist() == [1, -1, 1]  # 3/4, -3/4 and 3/4 round half up
    assert numerics.average_round(np.array([2, -2, 6]), 4).tolist() == [1, 0, 2]
    assert numerics.average_round(torch.tensor([2, -2, 6]), 4).tolist() == [1, 0, 2]
    mp = IntMaxPool("m", (3, 3), (2, 2), (1, 1), 1.0)
    x = -np.arange(16).reshape(1, 1, 4, 4)
    assert mp.evaluate(x).ravel().tolist() == [0, -1, -4, -5]


def test_resnet18_captures_and_exports() -> None:
    from rmsmp.quant.models.resnet_imagenet import resnet18

    torch.manual_seed(0)
    model = resnet18()
    x = torch.randn(1, 3, 224, 224)
    graph, out, fq = _check(model, x, ratio={"fixed4": 1.0})  # one format: quick to assign
    assert np.array_equal(out, np.rint(fq).astype(np.int64))
    kinds = [type(n).__name__ for n in graph.layers]
    assert kinds.count("IntLayer") == 21 and kinds.count("IntMaxPool") == 1
    assert sum(isinstance(n, IntLayer) and n.res_from is not None for n in graph.layers) == 8
    assert graph.shapes()[-1] == (1000,)


def test_resnet20_pretrained_captures_and_exports() -> None:
    from rmsmp.quant import data
    from rmsmp.quant.models.resnet_cifar import default_checkpoint, load_resnet20

    if not default_checkpoint().is_file():
        pytest.skip(f"shared ResNet-20 checkpoint not at {default_checkpoint()}")
    model = load_resnet20()
    try:
        x = torch.from_numpy(data.cifar10_test(32, seed=1)[0])
    except FileNotFoundError:
        x = torch.randn(32, 3, 32, 32)
    graph, out, fq = _check(model, x, ratio={"fixed8": 1.0}, act_bits=7)
    assert np.array_equal(out, np.rint(fq).astype(np.int64))
    pads = [n.res_pad for n in graph.layers if isinstance(n, IntLayer) and n.res_from is not None]
    assert len(pads) == 9 and pads.count(8) == 1 and pads.count(16) == 1
    with torch.no_grad():
        agree = (model(x).argmax(1).numpy() == out.argmax(1)).mean()
    assert agree > 0.9


class _Wrap(nn.Module):
    def __init__(self, body: nn.Module, fn=None) -> None:
        super().__init__()
        self.layer3 = body
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(x)
        return self.fn(x) if self.fn is not None else x


def _conv() -> nn.Conv2d:
    return nn.Conv2d(4, 4, 3, padding=1)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_Wrap(nn.Sequential(_conv(), nn.GELU())), "GELU at 'layer3.1': not supported; use ReLU"),
        (
            _Wrap(nn.Sequential(_conv(), nn.Upsample(scale_factor=2))),
            "Upsample at 'layer3.1': not supported; use strided Conv2d",
        ),
        (
            _Wrap(_conv(), lambda x: torch.cat([x, x], 1)),
            "torch.cat at 'cat': not supported; use a",
        ),
        (
            _Wrap(nn.Sequential(nn.Conv2d(4, 4, 3, dilation=2))),
            "Conv2d at 'layer3.0': dilation=(2, 2) not supported; use dilation=1",
        ),
        (
            _Wrap(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))),
            "Conv2d at 'layer3.0': groups=2 not supported; use groups=1",
        ),
        (_Wrap(_conv(), torch.sigmoid), "sigmoid at 'sigmoid': not supported; use ReLU"),
        (_Wrap(_conv(), lambda x: x * 2), "mul at 'mul': not supported; use a residual add"),
        (_Wrap(_conv(), lambda x: x + x), "add at 'add': the shortcut must be another"),
    ],
)
def test_each_unsupported_op_is_named_with_an_alternative(model, message) -> None:
    with pytest.raises(UnsupportedLayerError) as e:
        rmsmp.quantize(model, torch.randn(2, 4, 8, 8))
    text = str(e.value)
    assert message in text and "\n" not in text


def test_every_unsupported_op_in_one_error() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3, groups=2), nn.Upsample(scale_factor=2)
    )
    with pytest.raises(UnsupportedLayerError) as e:
        rmsmp.quantize(model, torch.randn(2, 3, 9, 9))
    text = str(e.value)
    assert text.startswith("3 unsupported op(s): ")
    for part in ("GELU at '1'", "Conv2d at '2'", "Upsample at '3'"):
        assert part in text


class _PooledCifar(ResNetCifar):
    """ResNet-20's modules in another topology: a max pool after the stem, half the side."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        out = self.quant_out(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def test_export_qat_goes_through_capture_for_other_topologies() -> None:
    """A QAT model with a max pool that ResNet-20 lacks exports; its logits match."""
    torch.manual_seed(0)
    model = _PooledCifar((1, 1, 1))
    x = torch.randn(8, 3, 32, 32)
    prepare(model.eval(), method("rmsmp"), x)
    model.train()
    with torch.no_grad():
        model(x)  # initialises the activation steps
        for m in model.modules():  # weights onto their levels: float32 and float64 agree
            if hasattr(m, "wq"):
                m.weight.copy_(m.wq(m.weight))
    graph = export_qat(model.eval())
    assert [type(n).__name__ for n in graph.layers].count("IntMaxPool") == 1
    assert graph.shapes()[1] == (16, 32, 32) and graph.shapes()[2] == (16, 16, 16)
    with torch.no_grad():
        logits = model.double()(x.double()).numpy()
    out = graph.evaluate(graph.quantize_input(x.numpy())) * graph.output_scale
    np.testing.assert_allclose(out, logits, atol=1e-3, rtol=1e-4)


def test_export_qat_refuses_an_unquantized_shortcut() -> None:
    model = Basic(4, 4, 1, "identity", "plus")
    prepare(model, method("rmsmp"), torch.randn(2, 4, 8, 8))
    with pytest.raises(UnsupportedLayerError, match="not quantized where it is added"):
        export_qat(model, (4, 8, 8))
