"""Token models (MLPs over (B, T, D), BERT-style encoder layers) captured into hybrid graphs:
Linears on the accelerator, the rest on the host; golden and RTL equal the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokengen import encoder_layer, quantize, token_mlp

from rmsmp.arch import AccelConfig
from rmsmp.compiler.hybrid import lower_hybrid
from rmsmp.host.hybrid import DeviceOp, HostOp, HybridError, run_hybrid
from rmsmp.quant.capture import UnsupportedLayerError, capture
from rmsmp.quant.transformer import capture_tokens

METHODS = ("rmsmp", "fixed4", "msq")


def _mlp_case(seed: int, batch: int = 2):
    rng = np.random.default_rng(seed)
    model, shape = token_mlp(rng)
    calib = torch.randn(16, *shape, generator=torch.Generator().manual_seed(seed))
    quantize(model, (calib,), METHODS[seed % len(METHODS)])
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed + 1))
    return model, capture_tokens(model, calib), [x.numpy()], model(x).detach().numpy()


def _encoder_case(seed: int, batch: int = 2):
    rng = np.random.default_rng(seed)
    model, d, t = encoder_layer(rng)
    g = torch.Generator().manual_seed(seed)

    def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        keep = torch.ones(n, t, dtype=torch.bool)
        keep[0, t // 2 :] = False  # a padded sentence
        return torch.randn(n, t, d, generator=g), keep

    calib = inputs(8)
    quantize(model, calib, METHODS[seed % len(METHODS)])
    graph = capture_tokens(model, calib)
    x = inputs(batch)
    return model, graph, [v.numpy() for v in x], model(*x).detach().numpy()


def _check(graph, prog, inputs, res) -> None:
    ref = graph.evaluate(inputs)
    assert len(res.outputs) == len(ref)
    for a, b in zip(res.outputs, ref, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    kinds = {type(op): 0 for op in prog.ops}
    assert len(res.ops) == len(prog.ops) == len(res.placement)
    for op, run in zip(prog.ops, res.ops, strict=True):
        kinds[type(op)] += 1
        if isinstance(op, DeviceOp):
            assert run.where != "host" and run.cycles > 0
        else:
            assert run.where == "host" and run.cycles == 0
    assert res.device_cycles == sum(r.cycles for r in res.ops) > 0


@pytest.mark.parametrize("seed", range(6))
def test_random_token_mlps_are_one_device_op_and_golden_equals_reference(seed: int) -> None:
    model, graph, inputs, fq = _mlp_case(seed)
    dev = [op for op in graph.ops if isinstance(op, DeviceOp)]
    assert len(dev) == 1 and dev[0].layers == len(model.layers)
    # the host only quantizes the input and dequantizes the output
    assert [op.kind for op in graph.ops if isinstance(op, HostOp)] == ["quantize", "dequantize"]
    prog = lower_hybrid(graph, AccelConfig.for_board("tiny"), 2)
    res = run_hybrid(prog, inputs, "golden")
    _check(graph, prog, inputs, res)
    # the integer path is the fake-quant model up to the 8-bit output grid
    out = res.outputs[0]
    assert out.shape == fq.shape
    assert np.abs(out - fq).max() <= 2 * graph.graphs[0].layers[-1].out_scale


@pytest.mark.parametrize("seed", range(3))
def test_random_encoder_layers_golden_equals_reference(seed: int) -> None:
    model, graph, inputs, fq = _encoder_case(seed)
    kinds = graph.meta["host_ops"]
    assert kinds["matmul"] == 2 and kinds["softmax"] == 1 and kinds["layernorm"] == 2
    assert kinds["gelu"] == 1 and kinds["permute"] >= 4
    assert len(graph.graphs) == 6  # q, k, v, o, up, down
    prog = lower_hybrid(graph, AccelConfig.for_board("tiny"), 2)
    res = run_hybrid(prog, inputs, "golden")
    _check(graph, prog, inputs, res)
    out = res.outputs[0]
    assert out.shape == fq.shape and np.isfinite(out).all()
    # LayerNorm output: within a few 8-bit steps of the fake-quant model
    assert np.abs(out - fq).mean() < 0.1


def test_token_models_rtl_equals_golden() -> None:
    """One MLP over (B, T1, T2, D) and one encoder layer on the Verilated tiny preset."""
    from rmsmp.sim.verilator import RtlDevice

    mlp = _mlp_case(5)
    assert mlp[2][0].ndim == 4  # seed 5 draws a (T1, T2, D) input
    cfg = AccelConfig.for_board("tiny")
    dev = RtlDevice(cfg, 1 << 22)
    try:
        for _, graph, inputs, _ in (mlp, _encoder_case(1)):
            prog = lower_hybrid(graph, cfg, 2)
            gold = run_hybrid(prog, inputs, "golden")
            hw = run_hybrid(prog, inputs, device=dev)
            _check(graph, prog, inputs, hw)
            assert all(np.array_equal(a, b) for a, b in zip(hw.outputs, gold.outputs, strict=True))
            assert [r.cycles for r in hw.ops] != [0] * len(hw.ops)
    finally:
        dev.close()


def test_head_split_and_shape_queries_are_layout_ops() -> None:
    _, graph, _, _ = _encoder_case(0)
    names = [op.kind for op in graph.ops if isinstance(op, HostOp)]
    assert "reshape" in names and "permute" in names and "index" in names


def test_batch_moving_ops_are_refused_with_their_place() -> None:
    class Bad(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x).transpose(0, 1).cumsum(1)

    model = Bad()
    x = torch.randn(3, 5, 4)
    quantize(model, (x,), "fixed4")
    with pytest.raises(UnsupportedLayerError) as e:
        capture_tokens(model, x)
    msg = str(e.value)
    assert "2 unsupported op(s)" in msg and "transpose" in msg and "batch" in msg
    assert "cumsum" in msg


def test_cnn_capture_points_token_linears_to_capture_tokens() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    with pytest.raises(ValueError, match="capture_tokens"):
        capture(model, torch.randn(2, 5, 8))


def test_hybrid_inputs_are_checked() -> None:
    _, graph, inputs, _ = _encoder_case(0)
    prog = lower_hybrid(graph, AccelConfig.for_board("tiny"), 2)
    with pytest.raises(HybridError, match="takes 2 input"):
        run_hybrid(prog, inputs[:1])
    with pytest.raises(HybridError, match="input 0 has shape"):
        run_hybrid(prog, [inputs[0][:, :-1], inputs[1]])


def test_hybrid_file_round_trips(tmp_path) -> None:
    from rmsmp.host.hybrid import HybridProgram, is_hybrid_file

    _, graph, inputs, _ = _encoder_case(2)
    prog = lower_hybrid(graph, AccelConfig.for_board("tiny"), 2)
    path = tmp_path / "enc.rmsmp"
    prog.save(path)
    assert is_hybrid_file(path) and not is_hybrid_file(tmp_path)
    back = HybridProgram.load(path)
    assert [op.name for op in back.ops] == [op.name for op in prog.ops]
    a, b = run_hybrid(back, inputs), run_hybrid(prog, inputs)
    assert all(np.array_equal(x, y) for x, y in zip(a.outputs, b.outputs, strict=True))
    assert a.device_cycles == b.device_cycles


def test_rmsmp_run_takes_a_hybrid_file(tmp_path, capsys) -> None:
    from rmsmp.cli import main

    _, graph, inputs, _ = _encoder_case(0)
    prog = lower_hybrid(graph, AccelConfig.for_board("tiny"), 2)
    prog.save(tmp_path / "enc.rmsmp")
    np.savez(tmp_path / "x.npz", *inputs)
    argv = ["run", str(tmp_path / "enc.rmsmp"), "--input", str(tmp_path / "x.npz")]
    assert main([*argv, "-o", str(tmp_path / "y")]) == 0
    text = capsys.readouterr().out
    assert np.array_equal(np.load(tmp_path / "y.npy"), graph.evaluate(inputs)[0])
    assert "device cycles (predicted by the cycle model) for 2 sample(s)" in text
    assert "softmax" in text
    np.savez(tmp_path / "bad.npz", inputs[0])
    argv[-1] = str(tmp_path / "bad.npz")
    assert main([*argv, "-o", str(tmp_path / "z")]) == 2
    assert "takes 2 input(s)" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_checkpoint_compiles_and_runs_through_the_cli(tmp_path, capsys) -> None:
    """MiniLM (post-training rmsmp, W4A8) at 8 tokens on tiny: 36 Linears on chip, the output
    within a few 8-bit steps of the fake-quant encoder's hidden state."""
    from rmsmp.cli import main
    from rmsmp.quant.nlp import save_minilm
    from rmsmp.quant.tokenfront import encode, token_model

    ck = save_minilm("rmsmp", tmp_path / "minilm.pt")
    argv = ["compile", str(tmp_path / "minilm.pt"), "--board", "tiny", "--tokens", "8"]
    assert main([*argv, "-o", str(tmp_path / "m.rmsmp")]) == 0
    assert "36 device op(s) (36 Linear layers" in capsys.readouterr().out
    xs = encode(["a gripping, funny film", "dull"], 8)
    np.savez(tmp_path / "x.npz", *xs)
    argv = ["run", str(tmp_path / "m.rmsmp"), "--input", str(tmp_path / "x.npz")]
    assert main([*argv, "-o", str(tmp_path / "y")]) == 0
    y = np.load(tmp_path / "y.npy")
    with torch.no_grad():
        fq = token_model(ck)(*(torch.from_numpy(a) for a in xs)).numpy()
    keep = xs[1].astype(bool)
    assert y.shape == fq.shape == (2, 8, 384)
    assert np.abs(y - fq)[keep].mean() < 0.2


def test_matmul_of_a_model_input_quantizes_it_on_a_calibrated_grid() -> None:
    class SelfAttend(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x @ x.transpose(-1, -2), dim=-1) @ self.fc(x)

    model = SelfAttend()
    x = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(3))
    quantize(model, (x,), "rmsmp")
    graph = capture_tokens(model, x)
    quant = [op for op in graph.ops if isinstance(op, HostOp) and op.kind == "quantize"]
    # x and x^T for x @ x^T (signed, one grid), fc's input, then the softmax output (unsigned)
    assert [q.params["lo"] for q in quant] == [-128, -128, -128, 0]
    assert quant[0].params["scale"] == quant[1].params["scale"]
    assert quant[0].params["scale"] == pytest.approx(float(x.abs().max()) / 127)
    prog = lower_hybrid(graph, AccelConfig.for_board("tiny"), 4)
    res = run_hybrid(prog, [x.numpy()])
    _check(graph, prog, [x.numpy()], res)
