"""Host numerics of token models: softmax, LayerNorm and GELU in float32 (default) or as I-BERT
integers, chosen at compile or run time (API and CLI); every path equals the reference and the
exact fake-quant model (``quant.exact_tokens``) bit for bit."""

from __future__ import annotations

import numpy as np
import torch
from test_transformer import _encoder_case

from rmsmp.arch import AccelConfig
from rmsmp.compiler.hybrid import lower_hybrid
from rmsmp.host.hybrid import HybridProgram, run_hybrid
from rmsmp.quant.exact_tokens import ExactTokenModel


def _case(seed: int):
    _, graph, inputs, _ = _encoder_case(seed)
    return graph, inputs


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_integer_host_numerics_golden_equals_reference_and_exact_model(tmp_path) -> None:
    graph, xs = _case(0)
    ref_float, ref_int = graph.evaluate(xs), graph.evaluate(xs, "integer")
    assert not _same(ref_float, ref_int)
    # I-BERT's approximations move the layer's LayerNorm output by a few 8-bit steps at most
    assert np.abs(ref_float[0] - ref_int[0]).mean() < 0.1
    prog = lower_hybrid(graph, AccelConfig.for_board("tiny"), 2, "integer")
    assert prog.meta["host_numerics"] == "integer"
    prog.save(tmp_path / "enc.rmsmp")
    back = HybridProgram.load(tmp_path / "enc.rmsmp")
    assert _same(run_hybrid(back, xs).outputs, ref_int)
    assert _same(run_hybrid(back, xs, numerics="float").outputs, ref_float)
    for numerics, ref in (("float", ref_float), ("integer", ref_int)):
        exact = ExactTokenModel(graph, numerics)
        assert _same(exact.outputs(xs), ref)
        assert torch.equal(exact(*(torch.from_numpy(x) for x in xs)), torch.from_numpy(ref[0]))


def test_rmsmp_run_host_numerics_flag(tmp_path, capsys) -> None:
    from rmsmp.cli import main

    graph, xs = _case(1)
    lower_hybrid(graph, AccelConfig.for_board("tiny"), 2).save(tmp_path / "enc.rmsmp")
    np.savez(tmp_path / "x.npz", *xs)
    argv = ["run", str(tmp_path / "enc.rmsmp"), "--input", str(tmp_path / "x.npz")]
    assert main([*argv, "--host-numerics", "integer", "-o", str(tmp_path / "y")]) == 0
    assert np.array_equal(np.load(tmp_path / "y.npy"), graph.evaluate(xs, "integer")[0])
    capsys.readouterr()
    plain = tmp_path / "plain.rmsmp"
    lower_hybrid(graph, AccelConfig.for_board("tiny"), 2).programs[0].save(plain)
    np.save(tmp_path / "x.npy", np.zeros((1, *graph.graphs[0].input_shape), np.int64))
    argv = ["run", str(plain), "--input", str(tmp_path / "x.npy"), "--host-numerics", "integer"]
    assert main([*argv, "-o", str(tmp_path / "z")]) == 2
    assert "--host-numerics is for hybrid (token model) files" in capsys.readouterr().err
