"""Integer export of a QAT ResNet-20: BN folded, residuals and pooling integer, == fake-quant."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rmsmp.compiler.export import export_qat
from rmsmp.compiler.ir import IntPool
from rmsmp.compiler.lower import CompileError, lower
from rmsmp.compiler.quant import UnsupportedLayerError
from rmsmp.compiler.train import batches, build


@pytest.fixture(scope="module")
def qat_model():
    torch.manual_seed(0)
    model, assignment = build("resnet20", "rmsmp")
    model.train()
    x, _ = next(batches("train", 128, True, np.random.default_rng(0)))
    with torch.no_grad():
        model(x)
    return model.eval(), assignment


def test_every_quantized_activation_matches_the_fake_quant_model(qat_model) -> None:
    """In float64 the fake-quant model has no near-tie rounding noise, so equality is exact."""
    model, assignment = qat_model
    graph = export_qat(model)
    model = copy.deepcopy(model).double()
    blocks = [b for st in (model.layer1, model.layer2, model.layer3) for b in st]
    seen: dict[str, torch.Tensor] = {}
    points = {f"in{i}": b.quant_in for i, b in enumerate(blocks)}
    points |= {f"mid{i}": b.conv2.aq for i, b in enumerate(blocks)}
    points |= {"out": model.quant_out, "lin": model.linear.aq}
    hooks = [
        q.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o.detach()))
        for k, q in points.items()
    ]
    x, _ = next(batches("test", 24, False, np.random.default_rng(3), n=24))
    with torch.no_grad():
        logits = model(x.double()).numpy()
    for h in hooks:
        h.remove()
    outs = [graph.quantize_input(x.numpy())]
    for node in graph.layers:
        res = outs[node.res_from + 1] if getattr(node, "res_from", None) is not None else None
        outs.append(node.evaluate(outs[-1], res))
    order = ["in0"] + [k for i in range(9) for k in (f"mid{i}", f"in{i + 1}" if i < 8 else "out")]
    order.append("lin")
    for k, got in zip(order, outs[1:-1], strict=True):
        step = float(points[k].step.detach().abs())
        want = torch.round(seen[k] / step).long().numpy()
        assert np.array_equal(got, want), k
    assert isinstance(graph.layers[-2], IntPool)
    assert np.array_equal(outs[-1].argmax(1), logits.argmax(1))
    np.testing.assert_allclose(outs[-1] * graph.output_scale, logits, atol=1e-3, rtol=1e-4)
    conv_rows = graph.layers[3].formats
    assert conv_rows == assignment["layer1.1.conv1"]


def test_residual_graph_is_not_lowered_to_the_accelerator(qat_model) -> None:
    from rmsmp.arch import AccelConfig

    graph = export_qat(qat_model[0])
    assert not graph.is_chain
    with pytest.raises(CompileError, match="residual adds or pooling"):
        lower(graph, AccelConfig.for_board("pynq-z1"), 1)


def test_export_qat_rejects_other_models() -> None:
    with pytest.raises(UnsupportedLayerError, match="QAT-prepared CIFAR ResNet"):
        export_qat(torch.nn.Sequential(torch.nn.Linear(2, 2)))
