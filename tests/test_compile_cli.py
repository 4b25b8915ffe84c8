"""`rmsmp compile`: a saved float module or our QAT checkpoint in, a whole-network Program out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cnngen import Net
from torch import nn

import rmsmp
from rmsmp.boards import TARGETS, BoardError, target_config
from rmsmp.cli import main
from rmsmp.demo import CHECKPOINT
from rmsmp.host.program import Program
from rmsmp.quant.frontend import graph_from_file


def test_compile_a_saved_residual_module_and_run_it(tmp_path, capsys) -> None:
    model = Net(np.random.default_rng(4), 3).eval()
    src, prog_path = tmp_path / "net.pt", tmp_path / "net.rmsmp"
    torch.save(model, src)
    argv = ["compile", str(src), "--input-shape", "3,10,10", "--board", "tiny", "--batch", "2"]
    assert main([*argv, "-o", str(prog_path), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "every one on the accelerator" in out and "conv+res" in out  # the pass table
    prog = Program.load(prog_path)
    assert prog.batch == 2 and prog.input_shape == (3, 10, 10) and prog.config.name == "tiny"
    x = np.random.default_rng(5).normal(size=(3, 3, 10, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert (
        main(["run", str(prog_path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y")])
        == 0
    )
    graph = graph_from_file(src, (3, 10, 10))  # the same calibration, so the same graph
    assert np.array_equal(np.load(tmp_path / "y.npy"), graph.evaluate(graph.quantize_input(x)))


def test_compile_our_qat_checkpoint_whole(tmp_path, capsys) -> None:
    out = tmp_path / "r20"
    assert main(["compile", str(CHECKPOINT), "--board", "pynq-z2", "-o", str(out)]) == 0
    prog = Program.load(tmp_path / "r20.rmsmp")
    assert prog.input_shape == (3, 32, 32) and prog.output_shape == (10,)
    kinds = [r.kind for r in prog.layers]
    assert kinds.count("conv+res") == 9 and kinds[-2:] == ["pool", "linear"]
    assert "r20.rmsmp" in capsys.readouterr().out


def test_compile_refuses_what_it_cannot_compile(tmp_path, capsys) -> None:
    module, weights = tmp_path / "m.pt", tmp_path / "w.pt"
    torch.save(torch.nn.Conv2d(3, 4, 3), module)
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), weights)
    cases = [
        ([str(module)], "--input-shape"),
        ([str(weights), "--input-shape", "3,8,8"], "not its state_dict"),
        ([str(module), "--input-shape", "3,x"], "positive ints"),
        ([str(tmp_path / "none.pt")], "does not exist"),
        ([str(CHECKPOINT), "--input-shape", "3,64,64"], "3x32x32"),
    ]
    for args, msg in cases:
        assert main(["compile", *args, "-o", str(tmp_path / "p")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_library_and_cli_take_the_same_board_names(tmp_path, capsys) -> None:
    """rmsmp.compile and `rmsmp compile --board` both read names with boards.target_config:
    a board without a preset of its own name (pynq-z2) works in both, and an unknown name gets
    the same one line from both, listing every known name."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))
    x = torch.randn(1, 3, 4, 4)
    qmodel = rmsmp.quantize(model.eval(), x, ratio="pynq-z2")
    src = tmp_path / "m.pt"
    torch.save(model, src)
    argv = ["compile", str(src), "--input-shape", "3,4,4", "--board"]
    for name in ("pynq-z2", "tiny"):
        assert rmsmp.compile(qmodel, x, name).config == target_config(name)
        assert main([*argv, name, "-o", str(tmp_path / name)]) == 0
        assert Program.load(tmp_path / f"{name}.rmsmp").config == target_config(name)
    assert target_config("pynq-z2").name == "pynq-z2"
    with pytest.raises(BoardError) as refused:
        rmsmp.compile(qmodel, x, "zedboard")
    message = str(refused.value)
    assert "'zedboard'" in message and all(n in message for n in TARGETS)
    capsys.readouterr()
    assert main([*argv, "zedboard", "-o", str(tmp_path / "z")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"rmsmp compile: error: {message}"]
