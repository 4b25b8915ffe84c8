"""The integer graph's file form (compiler/graphfile.py): what `rmsmp export` writes and
`rmsmp compile` reads without PyTorch, compiling to the same Program bytes as the model."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from cnngen import Net

import rmsmp
from rmsmp.cli import main
from rmsmp.compiler.graphfile import GraphFileError, is_graph_file, load_graph, save_graph
from rmsmp.compiler.ir import IntLayer
from rmsmp.compiler.lower import lower
from rmsmp.host.program import Program
from rmsmp.quant.export import export

PYNQ = rmsmp.AccelConfig.preset("pynq-z1")


def _graph(seed: int):
    """A random residual CNN's integer graph (pools, residuals, a Linear head)."""
    model = Net(np.random.default_rng(seed), 3).eval()
    x = torch.from_numpy(np.random.default_rng(seed + 100).normal(size=(8, 3, 10, 10)))
    return model, export(rmsmp.quantize(model, x.float()))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_saved_graph_loads_equal_and_lowers_to_the_same_program(tmp_path, seed) -> None:
    _, graph = _graph(seed)
    save_graph(graph, tmp_path / "g.npz")
    assert is_graph_file(tmp_path / "g.npz")
    back = load_graph(tmp_path / "g.npz")
    assert [type(n) for n in back.layers] == [type(n) for n in graph.layers]
    for a, b in zip(graph.layers, back.layers, strict=True):
        for k, v in vars(a).items():
            w = getattr(b, k)
            if isinstance(v, np.ndarray):
                assert w.dtype == v.dtype and np.array_equal(w, v), (a.name, k)
            else:
                assert type(w) is type(v) and w == v, (a.name, k)
    assert (back.input_shape, back.input_scale, back.meta) == (
        graph.input_shape,
        graph.input_scale,
        graph.meta,
    )
    x = graph.quantize_input(np.random.default_rng(seed).normal(size=(2, 3, 10, 10)))
    assert np.array_equal(back.evaluate(x), graph.evaluate(x))
    lower(graph, PYNQ, 2).save(tmp_path / "a.rmsmp")
    lower(back, PYNQ, 2).save(tmp_path / "b.rmsmp")
    assert (tmp_path / "a.rmsmp").read_bytes() == (tmp_path / "b.rmsmp").read_bytes()


NO_TORCH = "import sys; sys.modules['torch'] = None; from rmsmp.cli import main; "
"""A Python prologue after which ``import torch`` raises ImportError."""


def test_rmsmp_compile_of_an_exported_graph_needs_no_torch(tmp_path) -> None:
    """`rmsmp export` in this process, `rmsmp compile GRAPH` (and ``rmsmp.compile`` of the
    loaded graph) in one where torch cannot be imported: the Program is byte for byte the one
    compiled from the model file itself."""
    model, _ = _graph(5)
    torch.save(model, tmp_path / "net.pt")
    shape = ["--input-shape", "3,10,10"]
    assert main(["export", str(tmp_path / "net.pt"), *shape, "-o", str(tmp_path / "g")]) == 0
    assert main(["compile", str(tmp_path / "net.pt"), *shape, "--board", "pynq-z1", "-o",
                 str(tmp_path / "from_model")]) == 0  # fmt: skip
    argv = ["compile", str(tmp_path / "g.npz"), "--board", "pynq-z1", "-o", str(tmp_path / "p")]
    run = subprocess.run(
        [sys.executable, "-c", NO_TORCH + f"sys.exit(main({argv!r}))"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    api = (
        "import numpy as np, rmsmp; from rmsmp.compiler.graphfile import load_graph; "
        f"g = load_graph({str(tmp_path / 'g.npz')!r}); x = np.zeros((1, 3, 10, 10)); "
        f"rmsmp.compile(g, x, 'pynq-z1').save({str(tmp_path / 'api.rmsmp')!r})"
    )
    run = subprocess.run([sys.executable, "-c", NO_TORCH + api], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    blocked = subprocess.run(
        [sys.executable, "-c", NO_TORCH + "import torch"], capture_output=True, text=True
    )
    assert blocked.returncode == 1 and "import of torch halted" in blocked.stderr
    got, want = tmp_path / "p.rmsmp", tmp_path / "from_model.rmsmp"
    assert got.read_bytes() == want.read_bytes()
    assert (tmp_path / "api.rmsmp").read_bytes() == want.read_bytes()
    assert Program.load(got).input_shape == (3, 10, 10)


def test_bad_graph_files_get_one_line_naming_the_fix(tmp_path, capsys) -> None:
    _, graph = _graph(6)
    good = tmp_path / "g.npz"
    save_graph(graph, good)
    torch.save(torch.nn.Conv2d(3, 4, 3), tmp_path / "m.pt")
    assert not is_graph_file(tmp_path / "m.pt")  # a torch file is a zip too
    (tmp_path / "text").write_text("not a zip\n")
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(tmp_path / "noarr.npz", "w") as out:
        for name in z.namelist():
            if name != "0.weight.npy":
                out.writestr(name, z.read(name))
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(tmp_path / "v9.npz", "w") as out:
        for name in z.namelist():
            data = z.read(name)
            out.writestr(name, data.replace(b'"version": 1', b'"version": 9', 1))
    cases = [
        (tmp_path / "text", "not a readable graph file"),
        (tmp_path / "noarr.npz", "0.weight.npy is missing"),
        (tmp_path / "v9.npz", "version 9 is not supported"),
    ]
    for path, msg in cases:
        with pytest.raises(GraphFileError, match=msg):
            load_graph(path)
    assert main(["compile", str(good), "--input-shape", "3,8,8", "-o", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop --input-shape" in err[0], err
    layer = next(n for n in graph.layers if isinstance(n, IntLayer))
    layer.name = object()  # type: ignore[assignment]
    with pytest.raises(GraphFileError, match="has no file form"):
        save_graph(graph, tmp_path / "bad.npz")
