"""QONNX in and out: qonnx's own execution equals our integer graph and the golden backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bnstats import randomize_bn
from cnngen import Net
from torch import nn

import rmsmp
from rmsmp.quant.export import export, export_qat
from rmsmp.quant.methods import method, prepare
from rmsmp.quant.models.resnet_cifar import ResNetCifar
from rmsmp.quant.qat import init_act_steps
from rmsmp.quant.qonnx_io import QonnxError, execute, qonnx_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("qonnx")
qnn = pytest.importorskip("brevitas.nn")


# ---- out: our models executed by qonnx ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(2))
def test_ptq_model_to_qonnx_executes_as_the_integer_graph(seed: int, tmp_path: Path) -> None:
    """Residual blocks, max/average pools, PoT and SP2 rows: qonnx == IntGraph.evaluate."""
    rng = np.random.default_rng(300 + seed)
    torch.manual_seed(seed)
    x = torch.from_numpy(rng.normal(0, 1.5, size=(4, 3, 10, 10))).float()
    ratio = {"pot4": 0.5, "sp2-4": 0.25, "fixed8": 0.25}
    qmodel = rmsmp.quantize(Net(rng, 3), x, ratio=ratio, act_bits=4)
    path = rmsmp.to_qonnx(qmodel, x, tmp_path / "m.onnx")
    graph = export(qmodel)
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(path))
    assert json.loads(model.get_metadata_prop("rmsmp.formats")) == {
        n.name: n.formats for n in graph.layers if hasattr(n, "formats")
    }
    x2 = torch.from_numpy(rng.normal(0, 2.5, size=(4, 3, 10, 10))).float().numpy()
    want = graph.evaluate(graph.quantize_input(x2))
    assert np.array_equal(execute(model, x2), want)
    from qonnx.core.onnx_exec import execute_onnx

    y = execute_onnx(model, {"x": x2})["y"]
    assert np.array_equal(y, (want * np.float32(graph.output_scale)).astype(np.float32))


def test_qat_resnet_to_qonnx_executes_as_the_integer_graph(tmp_path: Path) -> None:
    """Residual requant on another grid, the QAT global pool, 8-bit logits."""
    rng = np.random.default_rng(5)
    torch.manual_seed(5)
    model = ResNetCifar((1, 1, 1), 10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            randomize_bn(m, rng)
    x = torch.randn(4, 3, 8, 8)
    prepare(model.eval(), method("rmsmp"), x)
    init_act_steps(model, x)
    model.eval()
    rmsmp.to_qonnx(model, x, tmp_path / "r.onnx")  # checks qonnx == the graph on x
    graph = export_qat(model, (3, 8, 8), logits_from=x)
    x2 = torch.randn(4, 3, 8, 8).numpy() * 2
    assert np.array_equal(
        execute(qonnx_model(graph, 4), x2), graph.evaluate(graph.quantize_input(x2))
    )


def test_to_qonnx_refuses_int32_logits() -> None:
    torch.manual_seed(1)
    model = ResNetCifar((1, 1, 1), 10)
    x = torch.randn(2, 3, 8, 8)
    prepare(model.eval(), method("fixed4"), x)
    init_act_steps(model, x)
    graph = export_qat(model.eval(), (3, 8, 8))
    with pytest.raises(QonnxError, match="linear.*thresholds; export 8-bit outputs"):
        qonnx_model(graph)


# ---- in: a Brevitas network ------------------------------------------------------------------


def _brevitas_net() -> nn.Module:
    """QuantIdentity 8-bit in, QuantConv2d Int4 per-channel, QuantReLU 8-bit, MaxPool,
    QuantLinear Int4 per-channel with an Int32 bias and an 8-bit output; power-of-two
    (fixed-point) scales, the activations after the input rounded FLOOR (what the requant
    expresses exactly)."""
    from brevitas.inject.enum import FloatToIntImplType
    from brevitas.quant.fixed_point import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerChannelFixedPoint,
    )
    from brevitas.quant.scaled_int import Int32Bias

    class FloorAct(Int8ActPerTensorFixedPoint):
        float_to_int_impl_type = FloatToIntImplType.FLOOR

    w4 = {"weight_quant": Int8WeightPerChannelFixedPoint, "weight_bit_width": 4}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint)
            self.conv = qnn.QuantConv2d(3, 8, 3, padding=1, bias=False, **w4)
            self.relu = qnn.QuantReLU(act_quant=FloorAct, return_quant_tensor=True)
            self.pool = nn.MaxPool2d(2)
            self.fc = qnn.QuantLinear(
                8 * 4 * 4, 10, bias=True, bias_quant=Int32Bias, output_quant=FloorAct, **w4
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(self.relu(self.conv(self.inp(x)))).flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.fc.bias.normal_(0, 0.5)
    return net


@pytest.fixture(scope="module")
def brevitas_qonnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from brevitas.export import export_qonnx

    path = tmp_path_factory.mktemp("brevitas") / "net.onnx"
    export_qonnx(_brevitas_net(), torch.randn(1, 3, 8, 8), export_path=str(path))
    return path


def _qonnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """qonnx's execution of a batch-1 model, one sample at a time."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(path))
    name = model.graph.input[0].name
    return np.concatenate([next(iter(execute_onnx(model, {name: s[None]}).values())) for s in x])


def test_brevitas_qonnx_runs_bit_exact_on_golden(brevitas_qonnx: Path) -> None:
    graph = rmsmp.from_qonnx(brevitas_qonnx, "tiny")
    assert [type(n).__name__ for n in graph.layers] == ["IntLayer", "IntMaxPool", "IntLayer"]
    assert set(graph.layers[0].formats) == {"fixed4"} and graph.layers[0].lo == 0
    assert np.any(graph.layers[2].bias != graph.layers[2].bias[0])  # the Int32 bias came in
    x = np.random.default_rng(0).normal(0, 1.0, size=(6, 3, 8, 8)).astype(np.float32)
    ref = _qonnx_outputs(brevitas_qonnx, x)
    ints = graph.evaluate(graph.quantize_input(x))
    assert np.array_equal(ints * graph.output_scale, ref)
    program = rmsmp.compile(graph, torch.from_numpy(x), "tiny")
    assert np.array_equal(rmsmp.run(program, x), ints)


def _edited(src: Path, dst: Path, node_index: int, scale: float | None, mode: str | None) -> Path:
    """The Brevitas model with its ``node_index``-th Quant node's scale times ``scale`` and/or
    its rounding mode replaced."""
    model = onnx.load(str(src))
    q = [n for n in model.graph.node if n.op_type == "Quant"][node_index]
    if scale is not None:
        init = next(i for i in model.graph.initializer if i.name == q.input[1])
        arr = (onnx.numpy_helper.to_array(init) * np.float32(scale)).astype(np.float32)
        # a new initializer: Brevitas' export shares equal scales between Quant nodes
        name = f"{init.name}_edited"
        model.graph.initializer.append(onnx.numpy_helper.from_array(arr, name))
        q.input[1] = name
    if mode is not None:
        for a in q.attribute:
            if a.name == "rounding_mode":
                a.s = mode.encode()
    onnx.save(model, str(dst))
    return dst


def test_brevitas_qonnx_without_an_exact_requant_names_the_node(
    brevitas_qonnx: Path, tmp_path: Path
) -> None:
    # Quant nodes in order: input, conv weights, relu, fc weights, output
    ratio = _edited(brevitas_qonnx, tmp_path / "ratio.onnx", 2, 3.0, None)
    with pytest.raises(
        QonnxError, match=r"node 'Conv_0': row 0's scale ratio .* not a power of two"
    ):
        rmsmp.from_qonnx(ratio)
    ties = _edited(brevitas_qonnx, tmp_path / "ties.onnx", 2, None, "ROUND")
    with pytest.raises(QonnxError, match=r"node 'Quant_\d+': rounding ROUND .* ties"):
        rmsmp.from_qonnx(ties)
    inp = _edited(brevitas_qonnx, tmp_path / "inp.onnx", 0, 3.0, None)
    with pytest.raises(
        QonnxError, match=r"node 'Quant_\d+': the input quantizer needs a power-of-two"
    ):
        rmsmp.from_qonnx(inp)
