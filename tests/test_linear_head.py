"""Any Linear after Flatten compiles, whatever its map size: a map too large to be the GEMM's
kernel (15x15 at most) is read as channels (planning.map_as_channels), and where even one
output's inputs do not fit half of X, the input is cut into blocks of chunks whose partial sums
stay in ACC (tiling.chunk_tiling). Golden == IntGraph.evaluate, and RTL == golden on tiny."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphgen import head_specs, random_graph
from torch import nn

import rmsmp
from rmsmp.arch import AccelConfig, isa
from rmsmp.compiler.lower import lower
from rmsmp.compiler.lower.planning import plan_passes
from rmsmp.compiler.lower.tiling import tile
from rmsmp.host.runtime import run_with_stats
from rmsmp.quant.export import export

TINY = AccelConfig.preset("tiny")
PYNQ = AccelConfig.preset("pynq-z1")
KMAX = (1 << isa.KERNEL_BITS) - 1


def _case(seed: int, cfg: AccelConfig, max_ch: int):
    """A random chain with a Linear head over a map up to 32x32, its Program and an input."""
    rng = np.random.default_rng(seed)
    shape, specs = head_specs(rng, max_ch, 32)
    graph = random_graph(rng, cfg, shape, specs)
    prog = lower(graph, cfg, int(rng.integers(1, 3)))
    x = rng.integers(-128, 128, size=(int(rng.integers(1, 4)), *shape))
    return graph, prog, x


def _head(graph, cfg: AccelConfig):
    """The pass of the first Linear."""
    passes, _, _ = plan_passes(graph, cfg)
    return next(p for p in passes if p.kind == "linear")


@pytest.mark.parametrize(
    ("seed", "preset", "max_ch"),
    [(1, "tiny", 10), (3, "tiny", 10), (5, "tiny", 10), (9, "tiny", 10), (11, "tiny", 10)]
    + [(0, "pynq-z1", 40), (2, "pynq-z1", 40), (12, "pynq-z1", 40), (14, "pynq-z1", 40)],
)
def test_random_linear_heads_over_maps_up_to_32x32(seed: int, preset: str, max_ch: int) -> None:
    cfg = AccelConfig.preset(preset)
    graph, prog, x = _case(seed, cfg, max_ch)
    got = run_with_stats(prog, x, backend="golden").output
    assert np.array_equal(got, graph.evaluate(x))


def test_a_large_map_is_read_as_channels_and_a_small_one_stays_the_kernel() -> None:
    """18x18 is past the GEMM's kernel fields: the head runs as a 1x1 pass over chunks*18*18
    chunks; 6x6 runs as before, its map the kernel. On tiny, a 32x32 map's chunks do not fit
    half of X, so the input tiles are cut by chunks."""
    rng = np.random.default_rng(3)
    specs = [dict(kind="conv", n=4, kernel=3, padding=1), dict(kind="linear", n=5, flatten=True)]
    big = _head(random_graph(rng, PYNQ, (3, 18, 18), specs), PYNQ)
    slots = big.in_shape[0] // (18 * 18)
    assert 18 > KMAX and big.kernel == (1, 1) and big.in_shape == (slots * 18 * 18, 1, 1)
    assert not tile(big, PYNQ, 2).chunk_tiles
    small = _head(random_graph(rng, PYNQ, (3, 6, 6), specs), PYNQ)
    assert small.kernel == (6, 6) and small.in_shape[1:] == (6, 6)
    huge = _head(random_graph(rng, TINY, (3, 32, 32), specs), TINY)
    t = tile(huge, TINY, 2)
    assert t.chunk_tiles and max(x.cn for x in t.tiles) <= TINY.x_depth // 2
    chunks = huge.in_shape[0] // TINY.cols
    for b in (0, 1):  # each image's tiles cover its chunks once, in order
        spans = [(x.c0, x.cn) for x in t.tiles if x.b == b]
        ends = [c0 + cn for c0, cn in spans]
        assert [c0 for c0, _ in spans] == [0, *ends[:-1]] and ends[-1] == chunks


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 140))
def test_many_random_linear_heads(seed: int) -> None:
    """The sweep behind the cases above: 40 more chains, tiny and pynq-z1 in turn."""
    cfg = TINY if seed % 2 else PYNQ
    graph, prog, x = _case(seed, cfg, 10 if seed % 2 else 16)
    assert np.array_equal(run_with_stats(prog, x, backend="golden").output, graph.evaluate(x))


def test_a_cnn_head_on_an_18x18_map_compiles_from_torch() -> None:
    """The user's case: conv, flatten, Linear on an 18x18 map, quantized and compiled whole."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 18 * 18, 10)
    )
    x = torch.randn(8, 3, 18, 18)
    qmodel = rmsmp.quantize(model.eval(), x, ratio="tiny")
    prog = rmsmp.compile(qmodel, x[:2], "tiny")
    graph = export(qmodel)
    xq = graph.quantize_input(x[:2].numpy())
    assert np.array_equal(run_with_stats(prog, xq, backend="golden").output, graph.evaluate(xq))


@pytest.fixture(scope="module")
def rtl():
    from rmsmp.sim.verilator import RtlDevice

    dev = RtlDevice(TINY, 1 << 22)
    yield dev
    dev.close()


@pytest.mark.parametrize("seed", [1, 13])
def test_linear_heads_over_large_maps_rtl_equals_golden(rtl, seed: int) -> None:
    """Two heads over maps larger than 15x15 whose inputs are cut by chunks, on the RTL."""
    graph, prog, x = _case(seed, TINY, 10)
    head = next(i for i, n in enumerate(graph.layers) if n.kind == "linear")
    assert max(graph.shapes()[head][1:]) > KMAX
    assert tile(_head(graph, TINY), TINY, prog.batch).chunk_tiles
    gold = run_with_stats(prog, x, backend="golden")
    hw = run_with_stats(prog, x, device=rtl)
    assert np.array_equal(hw.output, gold.output)
    assert np.array_equal(gold.output, graph.evaluate(x))
