"""Integer export of a QAT ResNet-20: BN folded, residuals and pooling integer, == fake-quant."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rmsmp.compiler.ir import IntPool
from rmsmp.compiler.lower import lower
from rmsmp.quant.export import export_qat
from rmsmp.quant.methods import METHODS, method, prepare
from rmsmp.quant.models.resnet_cifar import ResNetCifar
from rmsmp.quant.quantize import UnsupportedLayerError
from rmsmp.quant.train import batches, build

QUANT_METHODS = [name for name, m in METHODS.items() if m.ratio is not None]


@pytest.fixture(scope="module")
def qat_model():
    torch.manual_seed(0)
    model, assignment = build("resnet20", "rmsmp")
    model.train()
    x, _ = next(batches("train", 128, True, np.random.default_rng(0)))
    with torch.no_grad():
        model(x)
    return model.eval(), assignment


def _check_every_activation(model: torch.nn.Module, x: torch.Tensor):
    """Export ``model``; assert that every integer layer, fed the float64 fake-quant model's own
    quantized input, gives that model's next quantized activation. Returns the graph, its
    chained integer logits and the fake-quant logits.

    The weights are first set to their quantized values, so a weight within float32 rounding of
    a level midpoint cannot round one way in the exported (float32) model and the other in the
    float64 reference. The integer requant carries the scale ratio in a 32-bit multiplier and the
    bias with 16
    fractional bits, so a value within about 1e-8 LSB of a rounding boundary may round the other
    way: such elements (and only those) may differ by one. Feeding each layer the reference input
    keeps one such tie from spreading into the next layers' comparisons.
    """
    model = copy.deepcopy(model)
    with torch.no_grad():  # weights onto their levels: float32 and float64 then agree on them
        for m in model.modules():
            if hasattr(m, "wq"):
                m.weight.copy_(m.wq(m.weight))
    graph = export_qat(model)
    model = copy.deepcopy(model).double()
    blocks = [b for st in (model.layer1, model.layer2, model.layer3) for b in st]
    pre: dict[str, torch.Tensor] = {}
    post: dict[str, torch.Tensor] = {}
    points = {f"in{i}": b.quant_in for i, b in enumerate(blocks)}
    points |= {f"mid{i}": b.conv2.aq for i, b in enumerate(blocks)}
    points |= {"out": model.quant_out, "lin": model.linear.aq}
    hooks = [
        q.register_forward_pre_hook(lambda m, i, k=k: pre.__setitem__(k, i[0]))
        for k, q in points.items()
    ]
    hooks += [
        q.register_forward_hook(lambda m, i, o, k=k: post.__setitem__(k, o))
        for k, q in points.items()
    ]
    with torch.no_grad():
        logits = getattr(model, "float_forward", model)(x.double()).numpy()  # the float path
    for h in hooks:
        h.remove()
    n = len(blocks)
    order = ["in0"] + [
        k for i in range(n) for k in (f"mid{i}", f"in{i + 1}" if i < n - 1 else "out")
    ]
    order.append("lin")
    steps = {k: float(points[k].step.detach().abs()) for k in order}
    refs = [graph.quantize_input(x.numpy())]
    refs += [torch.round(post[k] / steps[k]).long().numpy() for k in order]
    for j, (k, node) in enumerate(zip(order, graph.layers[:-1], strict=True)):
        res = refs[node.res_from + 1] if getattr(node, "res_from", None) is not None else None
        got = node.evaluate(refs[j], res)
        want = refs[j + 1]
        v = (pre[k] / steps[k]).clamp(points[k].lo, points[k].hi).numpy()
        off = got != want
        assert np.all(np.abs(got - want)[off] == 1), k
        assert np.all(np.abs(v[off] - np.floor(v[off]) - 0.5) < 1e-6), k
    np.testing.assert_allclose(
        graph.layers[-1].evaluate(refs[-1], None) * graph.output_scale, logits, atol=1e-3, rtol=1e-4
    )
    outs = [refs[0]]
    for node in graph.layers:
        res = outs[node.res_from + 1] if getattr(node, "res_from", None) is not None else None
        outs.append(node.evaluate(outs[-1], res))
    assert isinstance(graph.layers[-2], IntPool)
    return graph, outs[-1], logits


def test_every_quantized_activation_matches_the_fake_quant_model(qat_model) -> None:
    model, assignment = qat_model
    x, _ = next(batches("test", 24, False, np.random.default_rng(3), n=24))
    graph, out, logits = _check_every_activation(model, x)
    assert np.array_equal(out.argmax(1), logits.argmax(1))
    np.testing.assert_allclose(out * graph.output_scale, logits, atol=1e-3, rtol=1e-4)
    assert graph.layers[3].formats == assignment["layer1.1.conv1"]


@pytest.mark.parametrize("seed", range(len(QUANT_METHODS)))
def test_random_resnets_export_exactly_under_every_method(seed: int) -> None:
    """Random depths, weights, BN statistics and steps, each quantized method in turn."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ResNetCifar(tuple(int(b) for b in rng.integers(1, 3, size=3)))
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.1)
    x = torch.randn(8, 3, 32, 32, generator=g)
    model.eval()
    prepare(model, method(QUANT_METHODS[seed]), x)
    model.train()
    with torch.no_grad():
        model(x)  # initialises the activation steps
        for mod in model.modules():
            if hasattr(mod, "alpha"):
                mod.alpha.mul_(torch.rand(mod.alpha.shape, generator=g) * 0.5 + 0.75)
    _check_every_activation(model.eval(), x)


def test_qat_resnet20_runs_whole_on_the_accelerator_model(qat_model) -> None:
    """The exported QAT ResNet-20 (8-bit logits) is one Program; golden == IntGraph.evaluate."""
    from rmsmp.arch import AccelConfig
    from rmsmp.host.runtime import run_with_stats

    x, _ = next(batches("test", 3, False, np.random.default_rng(1)))
    graph = export_qat(qat_model[0], logits_from=x)
    assert not graph.is_chain and (graph.layers[-1].lo, graph.layers[-1].hi) == (-128, 127)
    prog = lower(graph, AccelConfig.for_board("pynq-z1"), 2)
    res = run_with_stats(prog, x.numpy())
    assert np.array_equal(res.output, graph.evaluate(graph.quantize_input(x.numpy())))
    on_host = [step for step, where in res.placement if where == "host"]
    assert on_host == ["quantize input", "input map layout", "gather output channels"]
    kinds = [r.kind for r in prog.layers]
    assert kinds.count("conv+res") == 9 and kinds.count("copy") == 9 and "pool" in kinds


def test_export_qat_rejects_other_models() -> None:
    with pytest.raises(UnsupportedLayerError, match="QAT-prepared CIFAR ResNet"):
        export_qat(torch.nn.Sequential(torch.nn.Linear(2, 2)))
