"""The public interface: rmsmp.quantize / compile / run / Program, and `rmsmp run`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rmsmp
from rmsmp.cli import main
from rmsmp.quant.export import export


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(96, 5))
    x = torch.randn(2, 3, 4, 4)
    qmodel = rmsmp.quantize(model, x, ratio="tiny")
    cfg = rmsmp.AccelConfig.for_board("tiny")
    program = rmsmp.compile(qmodel, x, cfg)
    path = tmp_path_factory.mktemp("prog") / "model.rmsmp"
    program.save(path)
    return qmodel, x, path


@pytest.mark.parametrize("backend", ["golden", "rtl"])
def test_cli_run_matches_reference(compiled, tmp_path, backend: str, capsys) -> None:
    qmodel, x, path = compiled
    xin = tmp_path / "x.npy"
    np.save(xin, x.numpy())
    out = tmp_path / "y.npy"
    assert main(["run", str(path), "--backend", backend, "--input", str(xin), "-o", str(out)]) == 0
    graph = export(qmodel)
    ref = graph.evaluate(graph.quantize_input(x.numpy()))
    assert np.array_equal(np.load(out), ref)
    assert np.array_equal(rmsmp.run(rmsmp.Program.load(path), x.numpy(), backend=backend), ref)
    text = capsys.readouterr().out
    assert "window walk + requant" in text
    assert ("cycles:" in text) == (backend == "rtl")  # measured
    assert ("cycles (predicted by the cycle model):" in text) == (backend == "golden")


def test_cli_run_rejects_bad_input(compiled, tmp_path, capsys) -> None:
    _, _, path = compiled
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3, 5, 5), np.float32))
    rc = main(["run", str(path), "--input", str(bad), "-o", str(tmp_path / "y.npy")])
    assert rc == 2
    assert "expected (B, 3, 4, 4)" in capsys.readouterr().err


def test_cli_run_rejects_truncated_program(compiled, tmp_path, capsys) -> None:
    _, x, path = compiled
    cut = tmp_path / "cut.rmsmp"
    cut.write_bytes(path.read_bytes()[:100])
    xin = tmp_path / "x.npy"
    np.save(xin, x.numpy())
    assert main(["run", str(cut), "--input", str(xin), "-o", str(tmp_path / "y.npy")]) == 2
    assert "truncated" in capsys.readouterr().err


def test_rtl_run_that_never_finishes_times_out(compiled) -> None:
    """A memory port that stops answering: with a cycle budget below the watchdog the host gives
    up (TimeoutError); with a larger one the watchdog ends the run with AXI_TIMEOUT, reported
    at the first stalled transfer, the fetch of instruction 0."""
    from rmsmp.host.errors import AcceleratorError
    from rmsmp.sim.verilator import RtlDevice

    _, x, path = compiled
    program = rmsmp.Program.load(path)
    watchdog = program.config.watchdog_cycles
    for budget in (watchdog // 2, 4 * watchdog):
        dev = RtlDevice(program.config, program.window_size)
        try:
            dev.set_stall(True)
            if budget < watchdog:
                with pytest.raises(TimeoutError, match=f"did not finish within {budget} cycles"):
                    rmsmp.run(program, x.numpy(), device=dev, timeout_cycles=budget)
            else:
                with pytest.raises(AcceleratorError) as e:
                    rmsmp.run(program, x.numpy(), device=dev, timeout_cycles=budget)
                assert (e.value.code, e.value.pc) == ("AXI_TIMEOUT", 0)
                assert "fetch unit" in str(e.value) and "watchdog" in str(e.value)
        finally:
            dev.close()


def test_cli_quantize_resumes_and_evaluates(tmp_path, capsys) -> None:
    """`rmsmp quantize` trains ResNet-20 QAT on a subset at the pynq-z1 preset's row ratio (the
    step-gradient scale on by default), records the assignment, resumes as a no-op, refuses
    another method on the same file; `rmsmp evaluate` reads the checkpoint."""
    from rmsmp.quant.assign import row_counts
    from rmsmp.quant.methods import method

    ck_path = tmp_path / "r.pt"
    argv = ["quantize", "--method", "rmsmp", "--board", "pynq-z1", "--epochs", "1"]
    argv += ["--train-subset", "256"]
    assert main([*argv, "-o", str(ck_path)]) == 0
    first = capsys.readouterr().out
    assert "rmsmp@pynq-z1: top-1" in first and "after 1 epochs" in first
    ck = torch.load(ck_path, weights_only=False)
    assert ck["method"] == "rmsmp@pynq-z1" and ck["step_grad_scale"] is True and ck["seed"] == 0
    ratio = method("rmsmp@pynq-z1").ratio
    inner = list(ck["assignment"].values())[1:-1]  # the ends stay Fixed-8
    assert inner
    for rows in inner:
        assert set(rows) <= set(ratio)
        assert all(rows.count(f) == c for f, c in row_counts(len(rows), ratio).items())
    assert main([*argv, "-o", str(ck_path)]) == 0  # resumes: nothing left to train
    assert capsys.readouterr().out.splitlines()[-1] == first.splitlines()[-1]
    assert main(["quantize", "--method", "fixed4", "--epochs", "1", "-o", str(ck_path)]) == 2
    assert "another -o" in capsys.readouterr().err
    assert main(["evaluate", str(ck_path), "--n", "200"]) == 0
    assert "on the CIFAR-10 (JPEG copy) 200 random test images" in capsys.readouterr().out
    assert main(["quantize", "--act-bits", "8", "--epochs", "1", "-o", str(tmp_path / "x")]) == 2
    assert "--act-bits is for --model minilm" in capsys.readouterr().err
    assert main(["quantize", "--method", "fixed4", "--board", "pynq-z1", "-o", str(ck_path)]) == 2
    assert "only mixed methods take a preset's ratio" in capsys.readouterr().err
