"""The public interface: rmsmp.quantize / compile / run / Program, and `rmsmp run`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rmsmp
from rmsmp.cli import main
from rmsmp.compiler.export import export


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
    assert "GEMM + requant" in text
    assert ("cycles:" in text) == (backend == "rtl")


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
    from rmsmp.sim.verilator import RtlDevice

    _, x, path = compiled
    program = rmsmp.Program.load(path)
    dev = RtlDevice(program.config, program.window_size)
    try:
        dev.set_stall(True)
        with pytest.raises(TimeoutError, match="did not finish within 3000 cycles"):
            rmsmp.run(program, x.numpy(), device=dev, timeout_cycles=3000)
    finally:
        dev.close()
